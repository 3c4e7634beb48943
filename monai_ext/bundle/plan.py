"""A training plan for one bundle on one data set and one machine, as ``prepare folder`` writes it.

The data's part (target spacing, patch shape, augmentation) follows nnU-Net's rules
(:mod:`monai_ext.data.plan`); the machine's part is measured, not guessed:

- on a GPU, batch and patches per volume are sized to a memory target, as nnU-Net does: one forward and
  backward pass of the bundle's network on two patches gives the memory a patch costs;
- on a CPU, to a step time: one forward and backward pass (after one to warm up) gives the seconds a patch
  costs; while a patch costs more than half the target step, the patch is shortened (its largest axis
  against the median case first) and measured again, so that a step holds at least two patches; but not
  further than to an eighth of the median case's voxels (half of each side): a slow network keeps the context a
  segmentation needs and takes longer steps instead (ResUNet++ on 91x109x91 MNI152 volumes, 8 minutes on 2
  cores: test Dice 0.709 planned at 48x48x48, 0.722 with 48x64x48 patches, 0.712 with the 24x32x32 that step
  time alone gives, all within one setting's spread between runs; without the floor Hi-gMISnet would plan
  patches of about 21^3 voxels);
- data-loader workers: never more than the cores this process may use (:mod:`monai_ext.threads`) minus the
  one the training loop runs on;
- sliding-window batch at inference: as many windows as a training step holds, at most 8.

The plan is written once into the overlay and every run from that overlay uses it, so the same overlay
gives the same training on a fast machine and a slow one; a time budget only caps it.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from monai_ext.data import plan as data_plan
from monai_ext.threads import available_threads

__all__ = ["plan_training", "show_plan", "STEP_SECONDS", "GPU_MEMORY_FRACTION"]

logger = logging.getLogger("monai_ext.plan")

STEP_SECONDS = 2.0  # CPU: the step time batches are sized to
GPU_MEMORY_FRACTION = (
    0.5  # GPU: the share of the device's memory a training step may take (nnU-Net aims at ~8 GB of 11)
)
MAX_PATCHES = 32  # patches per step
MAX_SAMPLES = 4  # patches per volume
MIN_MEDIAN_FRACTION = (
    1 / 8
)  # CPU: a patch is not shortened below this share of the median case's voxels (half of each side)


def _bundle_config(bundle: Path, overlay: Mapping[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({k: v for k, v in overlay.items() if k not in ("plan", "_desc_")})
    return parser


def _probe(parser, patch: Sequence[int], device: torch.device) -> Dict[str, float]:
    """Seconds and peak memory per patch of one forward and backward pass of the bundle's network: on two patches
    on a GPU, on one on a CPU (half the memory; two where batch norm needs more than one value)."""
    try:
        return _pass(parser, patch, device, 2 if device.type == "cuda" else 1)
    except ValueError:  # "Expected more than 1 value per channel when training": a 1-voxel bottleneck
        return _pass(parser, patch, device, 2)


def _pass(parser, patch: Sequence[int], device: torch.device, patches: int) -> Dict[str, float]:
    from monai_ext.networks.nets import MedSegDiff

    parser["patch_size"] = list(patch)
    network = parser.get_parsed_content("network_def", lazy=False).to(device).train()
    channels = int(parser.get_parsed_content("in_channels"))
    extra = network.mask_channels if isinstance(network, MedSegDiff) else 0
    x = torch.randn(patches, channels + extra, *patch, device=device)
    args = (torch.zeros(patches, dtype=torch.long, device=device),) if extra else ()

    def step() -> float:
        start = time.perf_counter()
        out = network(x, *args)
        outs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().mean() for o in outs if torch.is_tensor(o)).backward()
        network.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up: allocator, kernel choice
    seconds = step()
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {"seconds_per_patch": seconds / patches, "bytes_per_patch": memory / patches}


def plan_training(
    bundle: Union[str, Path],
    overlay: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    device: Union[str, torch.device, None] = None,
    step_seconds: float = STEP_SECONDS,
) -> Dict[str, Any]:
    """The plan for ``bundle`` (a bundle folder) trained on a data set with ``overlay``'s settings (its
    ``pixdim`` is the target spacing, or none when every case has it) and
    ``fingerprint`` (``spacings``, ``shapes``: one per case; ``training_cases``), on ``device`` (default: CUDA
    when present). Returns the config values to merge into the overlay, ``plan`` among them."""
    bundle = Path(bundle)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dims = int(overlay["spatial_dims"])
    spacings, shapes = fingerprint["spacings"], fingerprint["shapes"]
    spacing = data_plan.target_spacing(spacings, shapes)
    median = data_plan.median_shape(shapes, spacings, spacing)

    parser = _bundle_config(bundle, overlay)
    anisotropic_strides = "strides" in parser.config  # a U-Net with per-axis strides
    levels = len(parser["strides"]) if anisotropic_strides else 0

    def shape_for(max_voxels: int) -> Dict[str, Any]:
        if not anisotropic_strides:
            multiple = [int(m) for m in _multiple(parser, dims)]
            return {
                "patch_size": data_plan.patch_size(median, multiple, max_voxels, spacing),
                "patch_multiple": multiple,
            }
        patch = data_plan.patch_size(median, 2**levels, max_voxels, spacing)
        for _ in range(2):  # strides follow the patch, the patch's multiples follow the strides
            strides = data_plan.unet_strides(spacing, patch, levels)
            multiple = data_plan.stride_product(strides, dims)
            patch = data_plan.patch_size(median, multiple, max_voxels, spacing)
        strides = data_plan.unet_strides(spacing, patch, levels)
        return {"patch_size": patch, "patch_multiple": data_plan.stride_product(strides, dims), "strides": strides}

    def measured(shape: Dict[str, Any]):
        """The probe of ``shape``, or of a smaller patch where a GPU runs out of memory."""
        for _ in range(6):
            if anisotropic_strides:
                parser["strides"] = shape["strides"]
            try:
                return shape, _probe(parser, shape["patch_size"], device)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                shape = shape_for(math.prod(shape["patch_size"]) // 2)
        raise ValueError(f"{bundle.name}: even a {shape['patch_size']} patch does not fit in the memory of {device}")

    shape, probe = measured(shape_for(data_plan.MAX_VOXELS[dims]))
    if device.type == "cpu":
        floor = math.prod(median) * MIN_MEDIAN_FRACTION
        for _ in range(4):  # shorten the patch until two patches fit in a step, but not below the floor
            voxels = math.prod(shape["patch_size"])
            if probe["seconds_per_patch"] <= step_seconds / 2 or voxels <= floor:
                break
            smaller = shape_for(int(max(voxels * (step_seconds / 2) / probe["seconds_per_patch"], floor)))
            if smaller["patch_size"] == shape["patch_size"]:
                break
            shape, probe = measured(smaller)
        patches = int(step_seconds // max(probe["seconds_per_patch"], 1e-6))
        sized = {
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "target_seconds_per_step": step_seconds,
            "seconds_per_patch": round(probe["seconds_per_patch"], 4),
        }
    else:
        total = torch.cuda.get_device_properties(device).total_memory
        patches = int(GPU_MEMORY_FRACTION * total // max(probe["bytes_per_patch"], 1))
        sized = {
            "device": torch.cuda.get_device_name(device),
            "memory_gb": round(total / 2**30, 1),
            "target_memory_fraction": GPU_MEMORY_FRACTION,
            "gb_per_patch": round(probe["bytes_per_patch"] / 2**30, 3),
        }
    patches = max(2, min(MAX_PATCHES, patches))
    cases = max(1, int(fingerprint.get("training_cases", 1)))
    num_samples = max(1, min(MAX_SAMPLES, patches // 2))
    batch_size = max(1, min(cases, math.ceil(patches / num_samples)))
    num_samples = max(
        num_samples, min(MAX_SAMPLES, math.ceil(patches / batch_size))
    )  # few training cases: more patches each
    while batch_size * num_samples > patches and batch_size > 1:  # rounded up: never past the memory or time target
        batch_size -= 1
    if device.type == "cpu":  # what a step of the planned batch takes, against the target
        sized["seconds_per_step"] = round(batch_size * num_samples * probe["seconds_per_patch"], 2)
    values = {
        "patch_size": shape["patch_size"],
        "batch_size": batch_size,
        "num_samples": num_samples,
        "num_workers": max(0, min(4, available_threads() - 1)),
        "sw_batch_size": max(1, min(8, batch_size * num_samples)),
        "augmentation": data_plan.augmentation(shape["patch_size"], spacing),
        **({"strides": shape["strides"]} if anisotropic_strides else {}),
    }
    values["plan"] = {
        "bundle": bundle.name,
        "network": str(parser.config["network_def"]["_target_"]).rsplit(".", 1)[-1],
        "machine": {**sized, "processor": platform.processor() or platform.machine(), "cores": available_threads()},
        "cases": len(shapes),
        "median_spacing": [round(float(s), 4) for s in np.median(np.asarray(spacings, dtype=float), axis=0)],
        "target_spacing": spacing,
        "median_shape_at_target": median,
        "patch_multiple": shape["patch_multiple"],
        **{
            k: values[k]
            for k in ("patch_size", "batch_size", "num_samples", "num_workers", "sw_batch_size", "augmentation")
        },
        **({"strides": shape["strides"]} if anisotropic_strides else {}),
    }
    return values


def _multiple(parser, dims: int) -> Sequence[int]:
    value = parser.get_parsed_content("patch_multiple") if "patch_multiple" in parser.config else 32
    return [int(value)] * dims if isinstance(value, int) else value


def show_plan(plan: Optional[Mapping[str, Any]], network: Optional[torch.nn.Module] = None, **effective: Any) -> None:
    """Log the training plan once, as a block, when training starts: what ``prepare folder`` planned, and every
    effective value that an override changed."""
    if not plan:
        logger.info(
            "training plan: none (the bundle's defaults; `python -m monai_ext prepare folder` plans for your data "
            "and machine): %s",
            json.dumps(effective),
        )
        return
    lines = [f"training plan (prepare folder, for {plan.get('bundle')} on {plan.get('machine', {}).get('device')}):"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in plan.items() if k not in ("bundle",)]
    changed = {k: v for k, v in effective.items() if k in plan and json.loads(json.dumps(v)) != plan[k]}
    lines += [f"  overridden: {k} {json.dumps(v)} (planned {json.dumps(plan[k])})" for k, v in changed.items()]
    if network is not None and plan.get("network") not in (None, type(network).__name__):
        lines.append(
            f"  planned for {plan['bundle']} ({plan['network']}), training {type(network).__name__}: "
            "`prepare folder --bundle <this bundle>` sizes the batch and patch for it"
        )
    logger.info("\n".join(lines))
