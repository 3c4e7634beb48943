"""What every benchmark shares: the machine's name and the JSON report."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import List, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def write_report(report: dict, benchmark: str, device: torch.device, output: Optional[Path] = None) -> Path:
    """Write ``report`` (plus the benchmark's name, the device and the torch version) as JSON; returns the path."""
    report = {"benchmark": benchmark, "device": device_name(device), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), **report}
    output = output or RESULTS / f"{benchmark}_{device.type}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=4) + "\n")
    print(f"written {output}")
    return output


def row(measurement: str, ours: float, reference: str, reference_value: Optional[float], ratio: Optional[float], unit: str = "") -> dict:
    """One line of the benchmark report (``python -m benchmarks``): what was measured, our value, the
    reference it is compared with and its value, and the ratio (> 1: ours is better, as each benchmark
    states it)."""
    return {"measurement": measurement, "ours": ours, "reference": reference, "reference_value": reference_value, "ratio": ratio,
            "unit": unit}

