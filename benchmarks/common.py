"""What every benchmark shares: the machine's name, timing of a training or inference step, the JSON report."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import platform
import resource
import time
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def time_step(step: Callable[[], None], repeats: int, device: str) -> Tuple[float, float]:
    """Seconds per call of ``step`` (after one warm-up call) and peak memory in MiB: CUDA memory allocated
    since the warm-up, or on the CPU the process's peak resident memory (so run it in a fresh process)."""
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return seconds, round(peak, 1)


def in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` in a new (spawned) process, so that its CPU peak memory is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def write_report(report: dict, benchmark: str, device: torch.device, output: Optional[Path] = None) -> Path:
    """Write ``report`` (plus the benchmark's name, the device and the torch version) as JSON; returns the path."""
    report = {
        "benchmark": benchmark,
        "device": device_name(device),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        **report,
    }
    output = output or RESULTS / f"{benchmark}_{device.type}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=4) + "\n")
    print(f"written {output}")
    return output


def row(
    measurement: str,
    ours: float,
    reference: str,
    reference_value: Optional[float],
    ratio: Optional[float],
    unit: str = "",
) -> dict:
    """One line of the benchmark report (``python -m benchmarks``): what was measured, our value, the
    reference it is compared with and its value, and the ratio (> 1: ours is better, as each benchmark
    states it)."""
    return {
        "measurement": measurement,
        "ours": ours,
        "reference": reference,
        "reference_value": reference_value,
        "ratio": ratio,
        "unit": unit,
    }
