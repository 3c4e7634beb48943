"""Run the MONAI model zoo's own ``ci/verify_bundle.py`` (full mode) on exported bundles, without monai_ext.

For each bundle: train briefly on a small synthetic data set through its own ``train.json``, export it
with ``python -m monai_ext export`` and a ``file://`` address for its weights, move the weights there (a
zoo pull request leaves them out; the zoo's CI fetches them from ``large_files.yml``), lay it out as the
zoo's repository does (``models/<bundle>/``, an empty ``models/model_info.json``, the metadata schema at
``models/<bundle>/eval/schema.json`` as ``ci/prepare_schema.py`` puts it), and run
``verify_bundle.py -b <bundle> -p models -m full`` in an
interpreter that has this project's dependencies but not ``monai_ext`` itself (a virtual environment whose
only link to ours is a ``.pth`` line naming our site-packages, so our editable install's hook is not
loaded). The exported bundle must bring the code it needs. Before that, with the weights out, the zoo's
``runtests.sh --codeformat`` tools (isort, black, flake8 with its ``setup.cfg`` and ``pyproject.toml``, from
the folder above ``ci/``) and its content pre-commit hooks run on the bundle: a bundle passes with no finding.

The zoo's CI code is not part of this repository: get it as the zoo publishes it and pass its folder::

    git clone --depth 1 https://github.com/Project-MONAI/model-zoo /tmp/model-zoo
    .venv/bin/python scripts/zoo/check_export.py --zoo-ci /tmp/model-zoo/ci [--bundles unet madgnet ...]

Prints one line per bundle and writes ``<work>/zoo_check.json`` (and ``--result``: ``scripts/zoo/RESULT.json`` holds
the last full run's); exits non-zero if any bundle failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ["unet", "unetplusplus", "resunet", "resunetplusplus", "madgnet", "medsegdiff", "higmisnet"]
CI_FILES = ("verify_bundle.py", "utils.py", "bundle_custom_data.py")
ZOO_SETTINGS = ("setup.cfg", "pyproject.toml")  # the zoo's isort, black and flake8 settings, at its root
# values that keep a CPU run to a minute per bundle (multiples of 32 for MADGNet)
SMALL = {"patch_size": [32, 32], "num_workers": 0, "batch_size": 2, "train#trainer#max_epochs": 1}
DIFFUSION = {"validate_steps": 2, "validate_ensemble": 1, "val_interval": 1}


def isolated_python(work: Path) -> Path:
    """A Python with our dependencies importable but without monai_ext (see the module docstring)."""
    env = work / "env"
    if not (env / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (target / "project_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = subprocess.run([str(python), "-c", "import monai_ext"], capture_output=True, text=True, cwd=work)
    if probe.returncode == 0:
        raise RuntimeError(
            f"{python}: monai_ext is importable; the check would not show that the export is self-contained"
        )
    return python


def publish(bundle: Path, store: Path) -> None:
    """Move every file ``large_files.yml`` lists to its ``file://`` address, as a zoo pull request leaves the
    weights out: the zoo's CI must fetch them back from there, and check their hashes, before the bundle runs."""
    import yaml

    for entry in yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]:
        target = store / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(bundle / entry["path"], target)


def train_and_export(name: str, work: Path) -> Path:
    from monai.bundle import run

    from monai_ext.bundle.export import export_bundle
    from monai_ext.data import make_synthetic_dataset

    data = work / "data"
    if not (data / "datalist.json").exists():
        make_synthetic_dataset(data, num_cases=6, spatial_dims=2, size=(40, 40), seed=3)
    bundle = ROOT / "bundles" / name
    run_root = work / "runs" / name
    overrides = {**SMALL, **(DIFFUSION if name == "medsegdiff" else {})}
    run(
        config_file=str(bundle / "configs" / "train.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(run_root),
        dataset_dir=str(data),
        **overrides,
    )
    out = work / "models" / name
    published = work / "published" / name
    export_bundle(
        bundle, out, checkpoint=run_root / "models" / "model.pt", overwrite=True, large_files_url=published.as_uri()
    )
    publish(out, published)
    return out


def add_schema(bundle: Path) -> None:
    """The metadata schema where the zoo's ``ci/prepare_schema.py`` puts it (its CI writes it; no pull request
    carries it)."""
    (bundle / "eval").mkdir(exist_ok=True)
    shutil.copyfile(ROOT / "schemas" / "meta_schema_20240725.json", bundle / "eval" / "schema.json")


def code_format(python: Path, work: Path, name: str) -> List[str]:
    """The zoo's ``runtests.sh --codeformat`` on ``models/<name>`` (isort, black, flake8, with the zoo's own
    ``setup.cfg`` and ``pyproject.toml`` beside ``models/``), then the pre-commit hooks of its
    ``.pre-commit-config.yaml`` that read file contents: the findings, one a line."""
    from monai_ext.bundle.zoo_style import hook_findings

    findings = []
    for tool in (["isort", "--check"], ["black", "--skip-magic-trailing-comma", "--check"], ["flake8"]):
        proc = subprocess.run(
            [str(python), "-m", *tool, f"models/{name}"], capture_output=True, text=True, cwd=work, timeout=600
        )
        if proc.returncode != 0:
            findings += [f"{tool[0]}: {line}" for line in (proc.stdout + proc.stderr).strip().splitlines()]
    return findings + [f"pre-commit: {line}" for line in hook_findings(work / "models" / name)]


def _commit(folder: Path) -> str:
    proc = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown (not a git checkout)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo-ci", required=True, type=Path, help="the model zoo's ci/ folder")
    parser.add_argument("--bundles", nargs="+", default=BUNDLES, choices=BUNDLES)
    parser.add_argument("--work", type=Path, default=ROOT / ".zoo_check")
    parser.add_argument(
        "--result", type=Path, help="also write the report here (scripts/zoo/RESULT.json: a full run's)"
    )
    args = parser.parse_args()
    missing = [f for f in CI_FILES if not (args.zoo_ci / f).is_file()]
    missing += [f"../{f}" for f in ZOO_SETTINGS if not (args.zoo_ci.parent / f).is_file()]
    if missing:
        print(f"error: {args.zoo_ci}: not the model zoo's ci/ folder (missing {', '.join(missing)})", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    ci = args.work / "ci"
    shutil.rmtree(ci, ignore_errors=True)
    shutil.copytree(args.zoo_ci, ci)
    for settings in ZOO_SETTINGS:  # isort's, black's and flake8's settings, at the root as in the zoo's repository
        shutil.copyfile(args.zoo_ci.parent / settings, args.work / settings)
    (args.work / "models").mkdir(exist_ok=True)
    (args.work / "models" / "model_info.json").write_text("{}\n")
    python = isolated_python(args.work)
    results = {}
    for name in args.bundles:
        start = time.perf_counter()
        verified, style, tail = False, [], []
        try:
            out = train_and_export(name, args.work)
            style = code_format(python, args.work, name)
            add_schema(out)
            proc = subprocess.run(
                [str(python), "ci/verify_bundle.py", "-b", name, "-p", "models", "-m", "full"],
                capture_output=True,
                text=True,
                cwd=args.work,
                timeout=1800,
            )
            verified = proc.returncode == 0
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
        except Exception as e:  # report and go on with the next bundle
            tail = [f"{type(e).__name__}: {e}"]
        ok = verified and not style
        results[name] = {
            "passed": ok,
            "verify_bundle_full": verified,
            "code_format_findings": style,
            "seconds": round(time.perf_counter() - start, 1),
            "output_tail": tail,
        }
        print(
            f"{name}: {'passed' if ok else 'FAILED'} ({results[name]['seconds']} s)"
            + ("" if ok else "\n  " + "\n  ".join(tail + style[:40]))
        )
    run = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "monai_ext_commit": _commit(ROOT),
        "model_zoo_commit": _commit(args.zoo_ci.parent),
        "python": sys.version.split()[0],
        "checks": "verify_bundle.py -m full with the weights fetched from large_files.yml; isort, black and flake8 with "
        "the zoo's settings; its content pre-commit hooks",
    }
    report = json.dumps({"run": run, "bundles": results}, indent=4) + "\n"
    (args.work / "zoo_check.json").write_text(report)
    if args.result:
        args.result.write_text(report)
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
