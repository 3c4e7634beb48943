"""Threads for the cores this process may use, so that processes sharing a machine do not oversubscribe it.

PyTorch starts one intra-op thread per physical core of the host, whatever a container's CPU quota says, and
a data-loader worker limits PyTorch to one thread but not NumPy's BLAS, OpenMP or ITK, which each start one
thread per core again. On 2 cores shared by several such processes, an epoch took 40 times as long as alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import torch

__all__ = ["available_threads", "limit_threads", "worker_init_fn"]


def available_threads() -> int:
    """The cores this process may use: ``OMP_NUM_THREADS`` if set, else the CPU affinity and the cgroup's
    CPU quota (a container limited to 2 CPUs on a 64-core host gets 2)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def limit_threads(num_threads: Optional[int] = None) -> int:
    """Give PyTorch, BLAS/OpenMP (through ``threadpoolctl``) and ITK (where loaded) ``num_threads`` threads
    each in this process (default :func:`available_threads`); returns the number. The bundles' configs call
    it in ``initialize``; ``python -m monai_ext segment`` at start."""
    from threadpoolctl import threadpool_limits

    count = num_threads or available_threads()
    torch.set_num_threads(count)
    threadpool_limits(count)
    if "itk" in sys.modules:  # importing ITK only to limit it would cost seconds
        sys.modules["itk"].MultiThreaderBase.SetGlobalDefaultNumberOfThreads(count)
    return count


def worker_init_fn(worker_id: int) -> None:
    """A data-loader worker's start: MONAI's (each worker's random transforms seeded apart), then one thread
    per library, as PyTorch already gives itself in a worker (the workers run side by side on the cores)."""
    from monai.data.utils import worker_init_fn as monai_worker_init

    monai_worker_init(worker_id)
    limit_threads(1)
