"""Run every benchmark and write one markdown report: ``python -m benchmarks`` (from the repository root).

Each benchmark runs in its own process at its defaults (hours on a CPU: pass ``--only`` to pick), writes its
JSON to ``--results``, and the report (``--output``, default ``benchmarks/REPORT.md``) gets one line per
measurement: our value, the reference it is compared with and its value, the ratio, and the machine it ran
on. ``--table-only`` rebuilds the report from the JSON already there; ``--smoke`` runs every benchmark at
toy sizes (to check the pipeline, not to measure).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
ACCURACY = ("train_synthetic", "learning_curves", "planned_training")  # benchmarks.accuracy: experiments, not timings

BENCHMARKS = [
    "bench_layers",
    "bench_sliding_window",
    "train_synthetic",
    "bench_madgnet",
    "bench_medsegdiff",
    "bench_higmisnet",
    "bench_dicom_read",
    "bench_cpu_inference",
    "bench_startup",
    "learning_curves",
    "planned_training",
]
logger = logging.getLogger("benchmarks")


def run(name: str, results: Path, extra: List[str]) -> Path:
    """Run one benchmark script in a fresh process; returns the JSON it wrote."""
    device = "cuda" if _cuda() else "cpu"
    output = results / f"{name}_{device}.json"
    command = [sys.executable, "-m", module_name(name), *extra, "--output", str(output)]
    logger.info("%s: %s", name, " ".join(command[1:]))
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=HERE.parent)
    logger.info("%s: done in %.0f s", name, time.perf_counter() - start)
    return output


def module_name(name: str) -> str:
    """The module of benchmark ``name``: ``benchmarks.<name>``, or ``benchmarks.accuracy.<name>`` for an experiment."""
    return f"benchmarks.accuracy.{name}" if name in ACCURACY else f"benchmarks.{name}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def table(results: Path) -> str:
    """The markdown report of every ``<benchmark>_<device>.json`` in ``results``."""
    lines = [
        "# Benchmark report",
        "",
        "Written by `python -m benchmarks` from the JSON in `benchmarks/results/`. Ratio > 1: ours is better (faster,",
        "higher Dice), except where the line says lower is better. Each reference is measured in the same run as ours.",
        "",
        "| benchmark | measurement | ours | reference | reference value | ratio | machine | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text())
        name = report.get("benchmark", path.stem)
        if name not in BENCHMARKS:
            continue
        module = importlib.import_module(module_name(name))
        torch_version = report.get("torch") or report.get("versions", {}).get("torch")
        machine = report.get("device", "?") + (f", torch {torch_version}" if torch_version else "")
        date = report.get("date", "-")
        for r in module.summarize(report):
            unit = f" {r['unit']}" if r["unit"] else ""
            ratio = f"x{r['ratio']:.3g}" if r["ratio"] is not None else "-"
            lines.append(
                f"| {name} | {r['measurement']} | {_fmt(r['ours'])}{unit} | {r['reference']} | "
                f"{_fmt(r['reference_value'])}{unit if r['reference_value'] is not None else ''} | {ratio} | {machine} | {date} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS, help="the benchmarks to run")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the report from the JSON in --results")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks that everything runs, measures nothing")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--output", type=Path, default=HERE / "REPORT.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    args.results.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for name in tqdm(args.only, desc="benchmarks"):
            run(name, args.results, importlib.import_module(module_name(name)).SMOKE if args.smoke else [])
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(table(args.results))
    tmp.replace(args.output)
    logger.info("report written to %s", args.output)
    return args.output


if __name__ == "__main__":
    main()
