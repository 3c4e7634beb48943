import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    # two pytest workers share the cores: one thread each, here and in the processes the tests start
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # the slow tests first (in their order): the two workers start on them and end on quick ones, where a slow
    # test collected last (test_readme) kept one worker busy alone for minutes
    items.sort(key=lambda item: "slow" not in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _pristine_bundles() -> Path:
    """The bundles as git tracks them (with the checkout's edits), copied once per test process: a checkout in
    which a user trained a bundle (``models/``, ``eval/``, ``runs/``) passes, and no test reads a user's
    weights or writes beside them. Outside a git checkout: the folder without what runs write."""
    root = Path(__file__).resolve().parents[1]
    target = Path(tempfile.mkdtemp(prefix="pristine_bundles_"))
    atexit.register(shutil.rmtree, target, True)
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "bundles"], cwd=root, capture_output=True, check=True, timeout=60
        ).stdout
        files = [f for f in listed.decode().split("\0") if f and (root / f).is_file()]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:
        shutil.copytree(
            root / "bundles",
            target / "bundles",
            ignore=shutil.ignore_patterns("models", "eval", "runs", "logs", "*.pt"),
        )
    for f in files:
        (target / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target / f)
    return target / "bundles"


BUNDLES_DIR = _pristine_bundles()
# every bundle the source renders (bundle_source/<name>.json): a new architecture is tested by adding its delta
BUNDLES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "bundle_source").glob("*.json"))


def own_pipeline(name: str, *files: str) -> bool:
    """Whether bundle ``name``'s delta (``bundle_source/<name>.json``) changes more than the template's network and its
    patch multiple in any of ``files`` (``inference.json``, ``train.json``...): where it does not, the bundle runs the
    template's pipeline with another network, so that a test of that pipeline (not of the network) covers it with any
    other such bundle."""
    delta = json.loads((Path(__file__).resolve().parents[1] / "bundle_source" / f"{name}.json").read_text())
    keys = set()
    for file in ("configs", *files):
        for values in delta.get(file, {}).values():
            keys.update(values if isinstance(values, (dict, list)) else [values])
    return bool(keys - {"network_def", "patch_multiple"})


def pipelines(*files: str) -> list:
    """The bundles whose ``files`` are a pipeline of their own, with the U-Net standing for the template's."""
    return [n for n in BUNDLES if n == "unet" or own_pipeline(n, *files)]


# the same blocks, fewer or narrower, for tests of a pipeline rather than of an architecture (conversion, export,
# training and inference cover every operation at a fraction of the time, and a 3D MedSegDiff's checkpoint is 2 MB, not
# 150 MB); the U-Net runs as it is. The shipped sizes are built and run by test_bundles' network checks, and the
# paper sizes are checked in the networks' own tests.
LIGHT = {
    "madgnet": {"network_def#backbone_layers": [1, 1, 1, 1]},
    "higmisnet": {"network_def#filters": 8, "network_def#levels": 3},
    "resunet": {"network_def#channels": [8, 16, 32, 64]},
    "unetplusplus": {"network_def#features": [8, 16, 32, 64, 128]},
    "resunetplusplus": {"network_def#channels": [8, 16, 32, 64, 128]},
    "medsegdiff": {"network_def#channels": [8, 16, 32, 64]},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _default_sigchld():
    """PyTorch's DataLoader, used with workers in this process, leaves a Python SIGCHLD handler installed; then
    every child that exits (a subprocess a later test runs) is delivered on the main thread's alternate signal
    stack, which a library loaded by some earlier test leaves unusable: the worker died of SIGSEGV on the next
    SIGCHLD (strace: SIGCHLD, then SIGSEGV si_code=SI_KERNEL; pytest-xdist: "node down: Not properly
    terminated"). SIGCHLD goes back to its default, ignored without a handler, after each test."""
    yield
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


SMALL_3D = {"spatial_dims": 3, "patch_size": [16, 16, 16]}


@pytest.fixture(scope="session")
def random_unet_3d(tmp_path_factory):
    """A copy of the U-Net bundle with random 3D weights (``SMALL_3D`` settings): enough to test a pipeline's
    geometry and outputs, not its accuracy."""
    import shutil

    from monai.bundle import ConfigParser

    root = tmp_path_factory.mktemp("bundle") / "unet"
    shutil.copytree(BUNDLES_DIR / "unet", root)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update(SMALL_3D)
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="session")
def unet_3d_with_settings(tmp_path_factory):
    """The U-Net bundle's tracked configs and docs with random 3D weights (``SMALL_3D``) that carry their
    settings, as training writes them: ``segment`` needs no ``--set``."""
    from monai.bundle import ConfigParser

    from monai_ext.bundle import with_record

    root = tmp_path_factory.mktemp("bundle") / "unet"
    for part in ("configs", "docs"):
        shutil.copytree(BUNDLES_DIR / "unet" / part, root / part)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update(SMALL_3D)
    (root / "models").mkdir()
    torch.save(
        with_record(parser.get_parsed_content("network_def").state_dict(), SMALL_3D), root / "models" / "model.pt"
    )
    return root


@pytest.fixture(scope="session")
def dciodvfy():
    """``check(path)``: dicom3tools' ``dciodvfy`` on a DICOM file; fails the test on any error it reports
    (warnings are allowed), and returns its report."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian's dicom3tools; .ci/run installs it)")

    def check(path) -> str:
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        report = proc.stdout + proc.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"dciodvfy {path}: {len(errors)} error(s):\n" + "\n".join(errors[:20])
        return report

    return check


@pytest.fixture(scope="session")
def python_without_monai_ext(tmp_path_factory):
    """An interpreter with this environment's packages but not monai_ext: a virtual environment whose only
    link to ours is a .pth line naming our site-packages (the editable install's hook, itself a .pth file
    there, is not run from a folder a .pth file names)."""
    import site
    import subprocess
    import sys

    env = tmp_path_factory.mktemp("env_without_monai_ext")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (__import__("pathlib").Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    assert subprocess.run([str(python), "-c", "import monai_ext"], cwd=env, capture_output=True).returncode != 0
    return python


# ------------------------------------------------------------------------------ the checkout stays clean
# Tests write into temporary folders only. The controller process lists what git sees in the checkout
# (untracked and ignored files included) before and after the session; anything new fails the run.
_BENIGN = (".venv", "__pycache__", ".pytest_cache", ".egg-info", ".zoo_check", ".monailabel_check", ".venv-monailabel")


def _checkout_files(root):
    import subprocess

    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
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
