"""Threads: a process uses the cores it may use, and data-loader workers one thread per library each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import BUNDLES_DIR
from monai.data import DataLoader, Dataset
from monai.transforms import RandomizableTransform
from threadpoolctl import threadpool_info

import monai_ext.threads as threads

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((BUNDLES_DIR).glob("*/configs/*.json"))


def test_available_threads_honours_omp_num_threads_affinity_and_the_cgroup_quota(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.available_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "Path", lambda path: Path("/nonexistent/cpu.max"))  # no cgroup limit
    assert threads.available_threads() == 4

    class Quota:  # /sys/fs/cgroup/cpu.max of a container limited to 1.5 CPUs
        def __init__(self, path):
            pass

        def read_text(self):
            return "150000 100000\n"

    monkeypatch.setattr(threads, "Path", Quota)
    assert threads.available_threads() == 1


def test_limit_threads_sets_torch_and_blas():
    before = torch.get_num_threads()
    try:
        assert threads.limit_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        threads.limit_threads(before)


class _Report(RandomizableTransform):
    def __call__(self, index):
        self.randomize(None)
        pools = {pool["num_threads"] for pool in threadpool_info()}
        return torch.tensor([torch.get_num_threads(), max(pools), self.R.randint(1 << 30)])


def test_data_loader_workers_run_one_thread_each_and_keep_monais_seeding():
    loader = DataLoader(
        Dataset(list(range(4)), transform=_Report()), batch_size=1, num_workers=2, worker_init_fn=threads.worker_init_fn
    )
    rows = torch.cat(list(loader))
    assert (rows[:, 0] == 1).all() and (rows[:, 1] == 1).all()
    assert len(set(rows[:, 2].tolist())) == 4  # MONAI's worker_init_fn still seeds each worker's transforms apart


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{c.parent.parent.name}/{c.name}" for c in CONFIGS])
def test_every_bundle_limits_its_threads_and_its_workers(config):
    data = json.loads(config.read_text())
    loaders = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("_target_") == "DataLoader":
                loaders.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    assert all(loader.get("worker_init_fn") == "$monai_ext.threads.worker_init_fn" for loader in loaders)
    if "initialize" in data:
        assert "$monai_ext.threads.limit_threads()" in data["initialize"]
