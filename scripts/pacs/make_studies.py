"""Write synthetic CT or MR studies as DICOM series (one study, one series each), for the PACS checks.

Each case is ``monai_ext.data.synthetic.synthetic_case`` (blobs = 1 and tubes = 2) scaled to CT numbers
(background -1000 HU, blobs about 60 HU) or to MR signal (100 to 1000) on an oblique-free 0.8 x 0.8 x 2.5 mm
grid, written with ``monai_ext.data.dicom.export.write_dicom_series``; its label map is written beside it as
NIfTI on the same grid (``<output>/<prefix><n>_label.nii.gz``) and, with ``--seg``, as a DICOM SEG of that
series (``<output>/<prefix><n>_seg.dcm``, ``monai_ext.data.dicom.seg.write_dicom_seg``). ``--tube-only N``: the
first N label maps keep only the tubes (label 2; the blobs become background), a map whose lower label is
absent. Run with the project's environment::

    .venv/bin/python scripts/pacs/make_studies.py OUTPUT [--cases 7] [--size 48 48 24] [--modality MR] [--seg]

Prints one JSON line per case: folder, StudyInstanceUID, SeriesInstanceUID, shape, label (NIfTI), seg.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from monai_ext.data.dicom.export import write_dicom_series
from monai_ext.data.dicom.seg import write_dicom_seg
from monai_ext.data.synthetic import synthetic_case
from monai_ext.data.volume_io import read_volume


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--cases", type=int, default=7)
    parser.add_argument("--size", type=int, nargs=3, default=[48, 48, 24], help="columns rows slices")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--modality", choices=("CT", "MR"), default="CT")
    parser.add_argument("--prefix", default="case", help="file and folder names: <prefix><n>")
    parser.add_argument("--seg", action="store_true", help="also write each label map as a DICOM SEG of its series")
    parser.add_argument("--tube-only", type=int, default=0, help="the first N label maps keep only label 2")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    for n in range(args.cases):
        image, label = synthetic_case(args.size, rng)
        if n < args.tube_only:
            label = np.where(label == 2, label, 0).astype(label.dtype)
        if args.modality == "CT":
            pixels = np.clip(np.rint(-1000 + 1060 * image), -1024, 3071).astype(np.int16)
        else:
            pixels = np.rint(100 + 900 * np.clip(image, 0, 1)).astype(np.int16)
        name = f"{args.prefix}{n}"
        folder = args.output / name
        paths = write_dicom_series(
            pixels,
            affine,
            folder,
            modality=args.modality,
            series_description=f"synthetic {args.modality} {n}",
            patient_id=f"SYN{args.modality}{n:03d}",
        )
        label_path = args.output / f"{name}_label.nii.gz"
        nib.save(nib.Nifti1Image(label, affine), str(label_path))
        seg = None
        if args.seg:
            seg = write_dicom_seg(label, read_volume(folder), {1: "blob", 2: "tube"}, args.output / f"{name}_seg.dcm")
        first = pydicom.dcmread(paths[0])
        print(
            json.dumps(
                {
                    "folder": str(folder),
                    "study": first.StudyInstanceUID,
                    "series": first.SeriesInstanceUID,
                    "shape": args.size,
                    "label": str(label_path),
                    "seg": str(seg) if seg else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
