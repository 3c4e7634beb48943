"""``python -m monai_ext demo``: the whole path on a laptop, no data and no GPU needed.

1. writes a small synthetic 3D data set (blobs and tubes, :mod:`monai_ext.data.synthetic`);
2. trains a bundle briefly through its own ``configs/train.json`` (``monai.bundle.run``);
3. segments a held-out volume with the ``segment`` pipeline (:func:`monai_ext.apps.segment`);
4. writes the mask (NIfTI, the input's geometry), a PNG overlay of its middle slice and a metrics JSON.

On a machine with CUDA the training and the segmentation use the GPU. About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
import torch

from monai_ext.apps.segment import segment
from monai_ext.bundle.shipped import shipped
from monai_ext.data.synthetic import make_synthetic_dataset
from monai_ext.metrics import segmentation_metrics
from monai_ext.visualize import overlay_png

__all__ = ["run_demo"]

logger = logging.getLogger("monai_ext.demo")


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.stack([labels == c for c in range(classes)]).astype(np.float32)


def run_demo(
    output_dir: Union[str, Path] = "demo",
    bundle: Union[str, Path, None] = None,
    epochs: int = 80,
    cases: int = 20,
    size: int = 48,
    seed: int = 0,
) -> dict:
    """Run the demo into ``output_dir``; returns the metrics written to ``metrics.json``."""
    from monai.bundle import run as bundle_run

    out = Path(output_dir)
    bundle = Path(bundle) if bundle else shipped("bundles") / "unet"
    overrides = {"spatial_dims": 3, "patch_size": [size] * 3}
    timings = {}

    start = time.perf_counter()
    data = make_synthetic_dataset(out / "data", num_cases=cases, spatial_dims=3, size=(size,) * 3, seed=seed).parent
    timings["data"] = time.perf_counter() - start
    logger.info("phase 1/4: %d synthetic volumes (%d^3) in %s (%.1f s)", cases, size, data, timings["data"])

    start = time.perf_counter()
    run_root = out / "run"
    bundle_run(
        config_file=str(bundle / "configs" / "train.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(run_root),
        dataset_dir=str(data),
        num_workers=0,
        val_interval=max(1, epochs // 4),
        **{"train#trainer#max_epochs": epochs, "batch_size": 4},
        **overrides,
    )
    timings["train"] = time.perf_counter() - start
    logger.info("phase 2/4: trained %s for %d epochs (%.1f s)", bundle.name, epochs, timings["train"])

    start = time.perf_counter()
    datalist = json.loads((data / "datalist.json").read_text())
    case = datalist["test"][0]
    # the checkpoint carries the settings it was trained with: nothing to repeat here
    (result,) = segment(bundle, data / case["image"], out / "segmentation", checkpoint=run_root / "models" / "model.pt",
                        overwrite=True, progress=False)
    if result.error:
        raise RuntimeError(result.error)
    timings["segment"] = time.perf_counter() - start
    logger.info("phase 3/4: segmented %s -> %s (%.1f s)", case["image"], result.output, timings["segment"])

    start = time.perf_counter()
    image = nib.load(str(data / case["image"])).get_fdata(dtype=np.float32)
    truth = np.asarray(nib.load(str(data / case["label"])).dataobj).astype(np.int64)
    mask = np.asarray(nib.load(str(result.output)).dataobj).astype(np.int64)
    names = {1: "blob", 2: "tube"}
    metrics = segmentation_metrics(_one_hot(mask, 3), _one_hot(truth, 3), names, spacing=(1.0, 1.0, 1.0))
    overlay_png(image[None], mask, truth, out / "overlay.png")
    report = {
        "case": case["image"],
        "mask": str(result.output),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "seconds": {**timings, **{f"segment.{k}": v for k, v in result.seconds.items()}},
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=4) + "\n")
    timings["report"] = time.perf_counter() - start
    logger.info("phase 4/4: Dice blob %.3f, tube %.3f; overlay %s, metrics %s", metrics["dice_blob"], metrics["dice_tube"],
                out / "overlay.png", out / "metrics.json")
    return report
