"""DWT + IDWT throughput against the other wavelet libraries, measured in the same run.

For Haar and db4, in 2D (B x C x 256 x 256) and 3D (B x C x 64 x 64 x 64), times one forward DWT, the inverse
and the backward pass through both (the cost a network layer pays) for:

- ``monai_ext``: :class:`monai_ext.networks.blocks.DWT` / :class:`IDWT`;
- ``pytorch_wavelets`` (``DWTForward`` / ``DWTInverse``; 2D only) and ``ptwt`` (``wavedec2/3``,
  ``waverec2/3``), when they are installed (``pip install -r benchmarks/requirements.txt``);
- ``pywt`` (PyWavelets, ``wavedecn``/``waverecn`` on the CPU), which has no backward pass: it is
  compared with our forward + inverse under ``torch.no_grad()``.

Modules are built outside the timed region; every figure is the median of ``--repeats`` runs after a
warm-up, the contenders run round-robin so that a change of machine load affects all of them alike. The
ratio printed is the reference's time divided by ours (above 1: we are faster). Results
go to a JSON file (``--output``, default ``benchmarks/results/bench_layers_<device>.json``).

Run: ``python -m benchmarks.bench_layers [--device cuda] [--batch 8 --channels 16] [--levels 1]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pywt
import torch
from tqdm import tqdm

from benchmarks.common import row, write_report
from monai_ext.networks.blocks import DWT, IDWT

logger = logging.getLogger("bench_layers")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_median_ms(fns: Dict[str, Callable[[], None]], device: torch.device, repeats: int) -> Dict[str, float]:
    """Median time of each function, run round-robin so that a change of machine load hits all alike."""
    for fn in fns.values():  # warm-up
        fn()
    _sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _ours(x: torch.Tensor, wavelet: str, levels: int, backward: bool) -> Callable[[], None]:
    nd = x.dim() - 2
    dwt = DWT(nd, wavelet, levels, mode="zero").to(x.device)
    idwt = IDWT(nd, wavelet, mode="zero").to(x.device)
    size = list(x.shape[2:])

    def run() -> None:
        approx, details = dwt(x)
        idwt(approx, details, size).sum().backward()

    def run_no_grad() -> None:
        with torch.no_grad():
            approx, details = dwt(x)
            idwt(approx, details, size)

    return run if backward else run_no_grad


def _pytorch_wavelets(x: torch.Tensor, wavelet: str, levels: int) -> Optional[Callable[[], None]]:
    if x.dim() != 4:
        return None  # pytorch_wavelets has no 3D DWT
    try:
        from pytorch_wavelets import DWTForward, DWTInverse
    except Exception:  # not installed, or broken beside this torch
        return None
    fwd = DWTForward(J=levels, wave=wavelet, mode="zero").to(x.device)
    inv = DWTInverse(wave=wavelet, mode="zero").to(x.device)

    def run() -> None:
        inv(fwd(x)).sum().backward()

    return run


def _ptwt(x: torch.Tensor, wavelet: str, levels: int) -> Optional[Callable[[], None]]:
    try:
        import ptwt
    except Exception:
        return None
    dec, rec = (ptwt.wavedec2, ptwt.waverec2) if x.dim() == 4 else (ptwt.wavedec3, ptwt.waverec3)

    def run() -> None:
        rec(dec(x, wavelet, mode="zero", level=levels), wavelet).sum().backward()

    return run


def _pywt(x: torch.Tensor, wavelet: str, levels: int) -> Optional[Callable[[], None]]:
    if x.device.type != "cpu":
        return None
    data = x.detach().numpy()
    axes = tuple(range(2, x.dim()))

    def run() -> None:
        pywt.waverecn(pywt.wavedecn(data, wavelet, mode="zero", level=levels, axes=axes), wavelet, axes=axes)

    return run


# name -> (builder, whether the reference runs the backward pass too)
REFERENCES = {"pytorch_wavelets": (_pytorch_wavelets, True), "ptwt": (_ptwt, True), "pywt": (_pywt, False)}


def run_benchmark(
    device: torch.device, batch: int, channels: int, levels: int, repeats: int, shapes: Dict[str, List[int]]
) -> List[dict]:
    results = []
    cases = [(w, name, size) for w in ("haar", "db4") for name, size in shapes.items()]
    for wavelet, name, size in tqdm(cases, desc="bench_layers"):
        torch.manual_seed(0)
        x = torch.randn([batch, channels] + size, device=device, requires_grad=True)
        logger.info("%s %s %s on %s", wavelet, name, list(x.shape), device)
        grad, no_grad = "forward+inverse+backward", "forward+inverse (no grad)"
        fns = {f"ours {grad}": _ours(x, wavelet, levels, True), f"ours {no_grad}": _ours(x, wavelet, levels, False)}
        measured = {}
        for ref_name, (make, backward) in REFERENCES.items():
            fn = make(x, wavelet, levels)
            if fn is not None:
                fns[ref_name] = fn
                measured[ref_name] = grad if backward else no_grad
        ms = interleaved_median_ms(fns, device, repeats)
        ours = {grad: ms[f"ours {grad}"], no_grad: ms[f"ours {no_grad}"]}
        row = {
            "wavelet": wavelet,
            "case": name,
            "shape": list(x.shape),
            "levels": levels,
            "monai_ext_ms": ours,
            "references": {},
        }
        for ref_name, what in measured.items():
            row["references"][ref_name] = {"measured": what, "ms": ms[ref_name], "ratio": ms[ref_name] / ours[what]}
        results.append(row)
    return results


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size-2d", type=int, default=256)
    parser.add_argument("--size-3d", type=int, default=64)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    device = torch.device(args.device)
    shapes = {"2d": [args.size_2d] * 2, "3d": [args.size_3d] * 3}
    results = run_benchmark(device, args.batch, args.channels, args.levels, args.repeats, shapes)

    print(f"\nDWT + IDWT on {device}, {args.levels} level(s), median of {args.repeats} (ratio = reference / ours)")
    for r in results:
        ours = r["monai_ext_ms"]
        print(
            f"{r['wavelet']:5s} {r['case']} {r['shape']}: monai_ext {ours['forward+inverse+backward']:.1f} ms "
            f"with backward, {ours['forward+inverse (no grad)']:.1f} ms without"
        )
        for k, v in r["references"].items():
            print(f"      {k:17s} {v['ms']:9.1f} ms ({v['measured']}): ratio x{v['ratio']:.2f}")

    report = {
        "versions": {name: _version(name) for name in ("torch", "numpy", "PyWavelets", "ptwt", "pytorch-wavelets")},
        "results": results,
    }
    write_report(report, "bench_layers", device, args.output)
    return report


# the arguments `python -m benchmarks --smoke` (and the tests) run this benchmark with
SMOKE = ["--device", "cpu", "--batch", "1", "--channels", "2", "--size-2d", "16", "--size-3d", "8", "--repeats", "1"]


def summarize(report: dict) -> List[dict]:
    rows = []
    for r in report["results"]:
        for name, ref in r["references"].items():
            ours = r["monai_ext_ms"][ref["measured"]]
            rows.append(
                row(
                    f"DWT+IDWT {r['wavelet']} {r['case']} {'x'.join(map(str, r['shape']))}, {ref['measured']}: speed-up",
                    ours,
                    name,
                    ref["ms"],
                    ref["ratio"],
                    "ms",
                )
            )
    return rows


if __name__ == "__main__":
    main()
