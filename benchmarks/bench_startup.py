"""What a user waits for before and at the first volume: start-up and the first call of each backend.

Each command runs in a fresh process, as a user's would, timed from the outside (wall clock):

- **start-up**: ``python -m monai_ext --help`` against ``python -c "import monai"`` (what the command line
  paid before it parsed its arguments, 10-14 s in issue 30), and the fixed cost of ``segment``: a call on a
  16^3 volume, whose work is negligible, against ``import monai`` alone;
- **first call**: ``segment`` of one ``--size`` volume (default 192x192x96, issue 30's case) with the U-Net
  bundle (3D, 96^3 windows) exported by ``python -m monai_ext export --local-only``, which ships the network
  compiled for OpenVINO and ONNX Runtime: ``--backend openvino`` and ``onnxruntime`` with the shipped models
  and with them removed (converted on the call), against ``--backend torch`` on the same export.

Random weights (the timing does not depend on them). Writes ``benchmarks/results/bench_startup_cpu.json``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import row, write_report

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--size", "24", "24", "16", "--patch", "16", "--repeats", "1"]
logger = logging.getLogger("benchmarks.bench_startup")


def _timed(command: List[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds


def _best(command: List[str], cwd: Path, repeats: int) -> float:
    return min(_timed(command, cwd) for _ in range(repeats))


def _export(work: Path, patch: int) -> Path:
    """The U-Net bundle with random weights recorded as trained for 3D windows of ``patch``^3, exported locally."""
    from monai.bundle import ConfigParser

    from monai_ext.bundle import with_record
    from monai_ext.bundle.export import export_bundle

    bundle = ROOT / "bundles" / "unet"
    settings = {"spatial_dims": 3, "patch_size": [patch] * 3, "in_channels": 1, "out_channels": 3}
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update(settings)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (work / "run" / "models").mkdir(parents=True)
    torch.save(with_record(net.state_dict(), settings), work / "run" / "models" / "model.pt")
    return export_bundle(bundle, work / "unet_export", checkpoint=work / "run" / "models" / "model.pt", local_only=True)


def _volume(path: Path, size: List[int]) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=size).astype(np.float32), np.diag([1.0, 1.0, 1.5, 1.0])), str(path))
    return path


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=3, default=[192, 192, 96], help="the first-call volume")
    parser.add_argument("--patch", type=int, default=96, help="the U-Net's window (per axis)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each start-up command")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        logger.info("start-up: --help, import monai, a segment call on a 16^3 volume")
        startup = {
            "help": _best([python, "-m", "monai_ext", "--help"], work, args.repeats),
            "import_monai": _best([python, "-c", "import monai"], work, args.repeats),
        }
        exported = _export(work, args.patch)
        tiny, volume = _volume(work / "tiny.nii.gz", [16, 16, 16]), _volume(work / "volume.nii.gz", args.size)
        segment = [python, "-m", "monai_ext", "segment", "--bundle", str(exported), "--device", "cpu", "--overwrite"]
        startup["segment_tiny"] = _best(
            segment + ["--input", str(tiny), "--output", str(work / "tiny")], work, args.repeats
        )
        first = {}
        compiled = exported / "models" / "compiled"
        kept = work / "compiled_shipped"
        shutil.copytree(compiled, kept)
        cases = [
            ("torch", True),
            ("openvino", True),
            ("onnxruntime", True),
            ("openvino", False),
            ("onnxruntime", False),
        ]
        for backend, shipped in tqdm(cases, desc="first calls"):
            shutil.rmtree(compiled, ignore_errors=True)
            if shipped:
                shutil.copytree(kept, compiled)
            name = f"{backend}{'' if shipped or backend == 'torch' else ' (converted on the call)'}"
            out = work / "out" / backend
            first[name] = _timed(segment + ["--backend", backend, "--input", str(volume), "--output", str(out)], work)
            logger.info("first call, %s: %.1f s", name, first[name])
        report = {
            "size": args.size,
            "patch": args.patch,
            "startup_seconds": startup,
            "first_call_seconds": first,
            "segment_fixed_cost_over_import_monai": startup["segment_tiny"] - startup["import_monai"],
        }
        logger.info("start-up: %s", ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(report, "bench_startup", torch.device("cpu"), args.output)
    return report


def summarize(report: dict) -> List[dict]:
    s, f = report["startup_seconds"], report["first_call_seconds"]
    size = "x".join(map(str, report["size"]))
    rows = [
        row("python -m monai_ext --help: seconds", s["help"], "python -c 'import monai'", s["import_monai"],
            s["import_monai"] / s["help"], "s"),
        row("segment on a 16^3 volume (its fixed cost): seconds", s["segment_tiny"], "python -c 'import monai'",
            s["import_monai"], s["import_monai"] / s["segment_tiny"], "s"),
    ]  # fmt: skip
    for name, seconds in f.items():
        if name != "torch":
            rows.append(
                row(f"segment {size}, first call, --backend {name} on an export: seconds", seconds,
                    "--backend torch on the same export", f["torch"], f["torch"] / seconds, "s")
            )  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
