"""Load every bundle in MONAI Label's bundle app (``monaibundle``) and use it as a MONAI Label user would:
``/info`` (the model and its label names from the metadata's channel definitions), ``/infer`` on a NIfTI
study, ``/train`` on the labelled studies, then ``/infer`` again with the trained weights. Then a trained
bundle as users get one: the U-Net trained (outside MONAI Label) on data whose one foreground label is
"lesion", exported with ``python -m monai_ext export`` into the app as ``unet_lesion``: ``/info`` must list
the trained label, ``/infer`` must run the exported pipeline.

Runs headlessly in the environment ``scripts/monailabel/setup_env.sh`` builds, against the FastAPI app
through its TestClient (no port is opened), with a local studies folder of synthetic NIfTI images in
MONAI Label's datastore layout (``studies/*.nii.gz``, ``studies/labels/final/*.nii.gz``)::

    .venv-monailabel/bin/python scripts/monailabel/check.py [--bundles unet madgnet ...] [--work DIR]

Each bundle starts from untrained weights (``models/model.pt`` written from its ``network_def``: MONAI
Label ignores a bundle without one) and is trained for ``--epochs`` through its own ``train.json``. Prints
one line per step and writes ``<work>/monailabel_check.json``; exits non-zero if any step failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ["unet", "unetplusplus", "resunet", "resunetplusplus", "madgnet", "medsegdiff", "higmisnet"]
EXPORTED = "unet_lesion"
# values that keep a CPU run to minutes: small patches (multiples of 32 for MADGNet), few diffusion steps
OVERRIDES = {"patch_size": [64, 64], "resize": [64, 64], "num_workers": 0, "batch_size": 2, "val_interval": 1}
DIFFUSION = {"num_inference_steps": 5, "ensemble": 2, "validate_steps": 5, "validate_ensemble": 2}


def make_studies(folder: Path, cases: int) -> list:
    """Synthetic 2D NIfTI studies with final labels, in MONAI Label's local datastore layout."""
    import nibabel as nib
    import numpy as np

    from monai_ext.data import make_synthetic_dataset

    source = make_synthetic_dataset(
        folder.parent / "synthetic", num_cases=cases, spatial_dims=2, size=(64, 64), seed=7
    ).parent
    datalist = json.loads((source / "datalist.json").read_text())
    (folder / "labels" / "final").mkdir(parents=True, exist_ok=True)
    ids = []
    for case in datalist["training"] + datalist["validation"] + datalist["test"]:
        name = Path(case["image"]).name
        shutil.copy(source / case["image"], folder / name)
        label = nib.load(str(source / case["label"]))
        nib.save(
            nib.Nifti1Image(np.asarray(label.dataobj).astype(np.uint8), label.affine),
            str(folder / "labels" / "final" / name),
        )
        ids.append(name.split(".")[0])
    return ids


def install_bundle(name: str, model_dir: Path, settings: dict = OVERRIDES) -> Path:
    """Copy the bundle into the app's model folder with the check's small settings and untrained weights."""
    import torch
    from monai.bundle import ConfigParser

    target = model_dir / name
    shutil.copytree(ROOT / "bundles" / name, target, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    overrides = {**settings, **(DIFFUSION if name == "medsegdiff" else {})}
    for config in ("inference.json", "train.json"):
        path = target / "configs" / config
        content = json.loads(path.read_text())
        content.update({k: v for k, v in overrides.items() if k in content})
        path.write_text(json.dumps(content, indent=4) + "\n")
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.json"))
    parser.read_meta(str(target / "configs" / "metadata.json"))
    (target / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), target / "models" / "model.pt")
    return target


def install_exported(model_dir: Path, work: Path) -> None:
    """Train the U-Net bundle briefly on 2D cases whose one foreground label is "lesion" and export it into
    the app's model folder (what a user who trained on their own data hands to MONAI Label)."""
    import nibabel as nib
    import numpy as np
    from monai.bundle import run

    from monai_ext.bundle.export import export_bundle
    from monai_ext.data import make_synthetic_dataset

    data = make_synthetic_dataset(work / "own", num_cases=6, spatial_dims=2, size=(64, 64), seed=11).parent
    for case in (
        json.loads((data / "datalist.json").read_text())["training"]
        + json.loads((data / "datalist.json").read_text())["validation"]
    ):
        label = nib.load(str(data / case["label"]))
        nib.save(
            nib.Nifti1Image((np.asarray(label.dataobj) == 1).astype(np.uint8), label.affine), str(data / case["label"])
        )
    overlay = work / "own_overlay.json"
    overlay.write_text(
        json.dumps(
            {
                "dataset_dir": str(data),
                "out_channels": 2,
                "class_names": {"0": "background", "1": "lesion"},
                "patch_size": [64, 64],
            }
        )
    )
    bundle = ROOT / "bundles" / "unet"
    run(
        config_file=[str(bundle / "configs" / "train.json"), str(overlay)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(work / "own_run"),
        **{"train#trainer#max_epochs": 2, "num_workers": 0, "batch_size": 2},
    )
    export_bundle(bundle, model_dir / EXPORTED, checkpoint=work / "own_run" / "models" / "model.pt", local_only=True)


def create_client(app_dir: Path, studies: Path, work: Path, models: list):
    from monailabel.config import settings

    settings.MONAI_LABEL_APP_DIR = str(app_dir)
    settings.MONAI_LABEL_STUDIES = str(studies)
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    settings.MONAI_LABEL_APP_CONF = {
        "models": ",".join(models),
        "zoo_source": "local",
        "sam2": "false",
        "preload": "false",
        "skip_strategies": "true",
        "skip_scoring": "true",
    }
    settings.MONAI_LABEL_SESSION_PATH = str(work / "sessions")
    settings.MONAI_LABEL_TRACKING_ENABLED = False
    for k, v in settings.dict().items():
        os.environ[k] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    (app_dir / "logs").mkdir(parents=True, exist_ok=True)
    (app_dir / "logs" / "app.log").touch()

    from fastapi.testclient import TestClient
    from monailabel.app import app

    return TestClient(app)


def record_failure(result: dict, name: str, error: Exception) -> bool:
    """Note a bundle's failed step in its result and print it (every bundle is reported, then the check fails)."""
    result.update(ok=False, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-3000:])
    print(f"{name}: FAILED {result['error']}", flush=True)
    return True


def check_labels(info: dict, app_dir: Path, name: str) -> dict:
    """The labels ``/info`` lists for the bundle, which must be those of its installed metadata's ``channel_def``."""
    model = info["models"].get(name)
    if model is None:
        raise RuntimeError(f"/info: {name} not among the models {sorted(info['models'])}")
    metadata = json.loads((app_dir / "model" / name / "configs" / "metadata.json").read_text())  # the installed copy
    expected = {
        v.lower(): int(k)
        for k, v in metadata["network_data_format"]["outputs"]["pred"]["channel_def"].items()
        if v.lower() != "background"
    }
    if model["labels"] != expected:
        raise RuntimeError(f"/info: {name} labels {model['labels']}, the metadata says {expected}")
    print(f"{name}: /info lists it with labels {model['labels']}", flush=True)
    return expected


def check_infer(client, name: str, image_id: str, studies: Path, labels: dict) -> dict:
    import nibabel as nib
    import numpy as np

    start = time.perf_counter()
    response = client.post(f"/infer/{name}?image={image_id}&output=image", json={"device": "cpu"})
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"/infer/{name}: HTTP {response.status_code}: {response.text[:500]}")
    out = studies.parent / f"{name}_{image_id}_pred.nii.gz"
    out.write_bytes(response.content)
    mask, source = nib.load(str(out)), nib.load(str(studies / f"{image_id}.nii.gz"))
    data = np.asarray(mask.dataobj)
    values = sorted(int(v) for v in np.unique(data))
    if data.squeeze().shape != source.shape:  # MONAI Label writes 2D masks with a leading channel axis
        raise RuntimeError(f"/infer/{name}: mask {mask.shape} for a study of {source.shape}")
    if not set(values) <= {0, *labels.values()}:
        raise RuntimeError(f"/infer/{name}: values {values} outside the labels {labels}")
    return {"seconds": round(seconds, 2), "shape": list(mask.shape), "values": values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=BUNDLES, choices=BUNDLES)
    parser.add_argument("--work", type=Path, default=ROOT / ".monailabel_check")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-exported", action="store_true", help="skip the exported, relabelled U-Net")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import monailabel

    shutil.rmtree(args.work, ignore_errors=True)
    app_dir, studies = args.work / "apps" / "monaibundle", args.work / "studies"
    sample = Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"
    if not sample.is_dir():
        print(f"MONAI Label's monaibundle sample app is not at {sample}; is this the environment setup_env.sh built?")
        return 2
    shutil.copytree(sample, app_dir)
    ids = make_studies(studies, args.cases)
    for name in args.bundles:
        install_bundle(name, app_dir / "model")
    names = list(args.bundles)
    if not args.skip_exported:
        install_exported(app_dir / "model", args.work)
        names.append(EXPORTED)
    print(f"MONAI Label {monailabel.__version__}: app {app_dir}, {len(ids)} studies, bundles {names}", flush=True)

    client = create_client(app_dir, studies, args.work, names)
    results, failed = {}, False
    info = client.get("/info/").json()
    for name in names:
        result: dict = {}
        try:
            result["labels"] = expected = check_labels(info, app_dir, name)
            if name == EXPORTED:
                if expected != {"lesion": 1}:
                    raise RuntimeError(f"/info: {name} labels {expected}, trained with 'lesion' = 1")
                result["infer_exported"] = check_infer(client, name, ids[-1], studies, expected)
                print(f"{name}: /infer with the exported bundle {result['infer_exported']}", flush=True)
                result["ok"] = True
                results[name] = result
                continue
            result["infer_untrained"] = check_infer(client, name, ids[-1], studies, expected)
            print(f"{name}: /infer {result['infer_untrained']}", flush=True)

            weights = app_dir / "model" / name / "models" / "model.pt"
            before = weights.stat().st_mtime_ns
            start = time.perf_counter()
            response = client.post(
                "/train/?run_sync=True",
                json={
                    "model": name,
                    "max_epochs": args.epochs,
                    "device": "cpu",
                    "val_split": 0.25,
                    "multi_gpu": False,
                    "name": f"check_{name}",
                },
            )
            if response.status_code != 200:
                raise RuntimeError(f"/train {name}: HTTP {response.status_code}: {response.text[:500]}")
            if weights.stat().st_mtime_ns == before:
                raise RuntimeError(f"/train {name}: models/model.pt was not rewritten")
            result["train_seconds"] = round(time.perf_counter() - start, 1)
            print(
                f"{name}: /train {args.epochs} epoch(s) in {result['train_seconds']} s, models/model.pt rewritten",
                flush=True,
            )
            result["infer_trained"] = check_infer(client, name, ids[-1], studies, expected)
            print(f"{name}: /infer after training {result['infer_trained']}", flush=True)
            result["ok"] = True
        except Exception as e:  # report every bundle, then fail
            failed = record_failure(result, name, e)
        results[name] = result
    report = {"monailabel": monailabel.__version__, "bundles": results}
    (args.work / "monailabel_check.json").write_text(json.dumps(report, indent=4) + "\n")
    print(f"{'FAILED' if failed else 'passed'}: {args.work / 'monailabel_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
