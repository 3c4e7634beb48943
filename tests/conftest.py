import os

import pytest
import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    # two pytest workers share the cores: one thread each, here and in the processes the tests start
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------ the checkout stays clean
# Tests write into temporary folders only. The controller process lists what git sees in the checkout
# (untracked and ignored files included) before and after the session; anything new fails the run.
_BENIGN = (".venv", "__pycache__", ".pytest_cache", ".egg-info", ".zoo_check", ".monailabel_check", ".venv-monailabel")


def _checkout_files(root):
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=root,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    paths = {line[3:] for line in out.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(part in p for part in _BENIGN)}


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        session.config._checkout_before = _checkout_files(session.config.rootpath)


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_checkout_before", None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    new = sorted((_checkout_files(session.config.rootpath) or set()) - before)
    if new:
        print(f"\nerror: tests wrote into the checkout: {', '.join(new[:10])}" + (" ..." if len(new) > 10 else ""))
        session.exitstatus = 1
