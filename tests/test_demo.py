"""The demo is one fixed run: the same seed gives the same numbers on a busy machine as on an idle one, with any
number of cores, because its length is set in epochs and its stop by the validation target, never by the clock."""

import json
import os
import subprocess
import sys

import pytest


def _demo(output, threads, busy=False):
    # a core taken by something else (its standard streams closed: a pytest-xdist worker talks to its parent over its own)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) if busy else None
    try:
        proc = subprocess.run([sys.executable, "-m", "monai_ext", "demo", "--output", str(output), "--epochs", "4", "--cases", "10"],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    finally:
        if hog:
            hog.kill()
            hog.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((output / "metrics.json").read_text())
    return proc.stdout, report


@pytest.mark.slow
def test_two_demo_runs_with_the_same_seed_print_the_same_numbers_whatever_the_machine_is_doing(tmp_path):
    idle_out, idle = _demo(tmp_path / "idle", threads=1)
    busy_out, busy = _demo(tmp_path / "busy", threads=3, busy=True)
    assert idle["trained_epochs"] == busy["trained_epochs"]
    assert idle["validation_dice"] == busy["validation_dice"]
    assert idle["heldout"]["per_case"] == busy["heldout"]["per_case"]
    first = [line for line in idle_out.splitlines() if line.startswith("demo done")][0]
    assert first.split(":", 1)[1] == [line for line in busy_out.splitlines() if line.startswith("demo done")][0].split(":", 1)[1]
