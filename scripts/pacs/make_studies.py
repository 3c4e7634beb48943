"""Write synthetic CT studies as DICOM series (one study, one series each), for the PACS checks.

Each case is ``monai_ext.data.synthetic.synthetic_case`` (blobs and tubes) scaled to CT numbers (background
-1000 HU, blobs about 60 HU) on an oblique-free 0.8 x 0.8 x 2.5 mm grid, written with
``monai_ext.data.dicom.export.write_dicom_series``; its label map is written beside it as NIfTI on the same
grid (``<folder>/<n>_label.nii.gz``). Run with the project's environment::

    .venv/bin/python scripts/pacs/make_studies.py OUTPUT [--cases 7] [--size 48 48 24]

Prints one JSON line per case: folder, StudyInstanceUID, SeriesInstanceUID, shape.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from monai_ext.data.dicom.export import write_dicom_series
from monai_ext.data.synthetic import synthetic_case


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--cases", type=int, default=7)
    parser.add_argument("--size", type=int, nargs=3, default=[48, 48, 24], help="columns rows slices")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    for n in range(args.cases):
        image, label = synthetic_case(args.size, rng)
        hu = np.clip(np.rint(-1000 + 1060 * image), -1024, 3071).astype(np.int16)
        folder = args.output / f"case{n}"
        paths = write_dicom_series(
            hu, affine, folder, modality="CT", series_description=f"synthetic CT {n}", patient_id=f"SYN{n:03d}"
        )
        nib.save(nib.Nifti1Image(label, affine), str(args.output / f"case{n}_label.nii.gz"))
        first = pydicom.dcmread(paths[0])
        print(
            json.dumps(
                {
                    "folder": str(folder),
                    "study": first.StudyInstanceUID,
                    "series": first.SeriesInstanceUID,
                    "shape": args.size,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
