"""Segment volumes with a bundle: read, preprocess, infer, invert, write, each stage timed.

``python -m monai_ext segment --bundle bundles/<name> --input PATH --output DIR`` runs :func:`segment`.
The pipeline follows nnU-Net's three visible stages and keeps the data on the device between them:

1. **preprocess**: the case is read (:mod:`monai_ext.data.volume_io`), moved to the device, and put through
   the bundle's own preprocessing values (RAS orientation, resampling to ``pixdim`` or resizing to
   ``resize``, the bundle's ``intensity_transform``) as MONAI invertible transforms, on the device;
2. **predict**: :class:`~monai_ext.inferers.SlidingWindowInferer` with the bundle's window, reduced on the
   fly to a label map (a 2D bundle on a volume runs slice by slice, many slices per network call);
3. **export**: the label map goes back through the inverse of step 1 (nearest neighbour) onto the
   input's own grid and orientation and is written atomically as NIfTI with the input's affine, or as a
   DICOM SEG referencing the source series.

A diffusion bundle (its ``inferer`` a :class:`~monai_ext.inferers.DiffusionSegmentationInferer`) is sampled
with its own configured sampler, and its probability and uncertainty maps are written beside the mask
as ``<case>_probability.nii.gz``, ``<case>_variance.nii.gz``, ... (one component per class).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, Resized, Spacingd
from tqdm import tqdm

from monai_ext.data.volume_io import InputError, Volume, find_cases, read_volume, write_dicom_seg, write_nifti
from monai_ext.inferers import SliceWiseInferer, SlidingWindowInferer
from monai_ext.transforms import SplitDiffusionMapsd

__all__ = ["BundleSegmenter", "segment", "CaseResult"]

logger = logging.getLogger("monai_ext.segment")
FORMATS = ("nifti", "dicom-seg")


@dataclass
class CaseResult:
    input: Path
    output: Optional[Path]
    seconds: Dict[str, float]
    error: Optional[str] = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BundleSegmenter:
    """One of our bundles, loaded for inference on volumes.

    Args:
        bundle: the bundle folder (with ``configs/inference.json`` and ``configs/metadata.json``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: CUDA when present.
        amp: run the network in bfloat16 autocast.
        tta: mirror test-time augmentation along every spatial axis of the window.
        checkpoint: the weights (default ``<bundle>/models/model.pt``), loaded with ``weights_only=True``.
        configs: more config files merged on ``inference.json`` (e.g. a data-set overlay).
        overrides: config values to set, as for ``python -m monai.bundle run --<id> <value>``
            (e.g. ``{"spatial_dims": 3}``); use the values the weights were trained with.
        sw_batch_size: windows per network call (slices per call for a 2D bundle on a volume).
        overlap: window overlap.

    Raises:
        InputError: a missing bundle file or checkpoint, or weights that do not fit the network.
    """

    def __init__(
        self,
        bundle: Union[str, Path],
        device: Optional[str] = None,
        amp: bool = False,
        tta: bool = False,
        checkpoint: Optional[Union[str, Path]] = None,
        configs: Sequence[Union[str, Path]] = (),
        overrides: Optional[Dict[str, Any]] = None,
        sw_batch_size: int = 4,
        overlap: float = 0.5,
    ) -> None:
        self.bundle = Path(bundle)
        folder = self.bundle / "configs"
        files = [folder / "inference.json"] + [Path(c) for c in configs]
        for f in [folder / "metadata.json"] + files:
            if not f.is_file():
                raise InputError(f"{f}: missing config file (is {self.bundle} a bundle folder?)")
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        parser = ConfigParser()
        parser.read_meta(str(folder / "metadata.json"))
        parser.read_config([str(f) for f in files])
        parser.update({"bundle_root": str(self.bundle), **(overrides or {})})
        self.spatial_dims = int(parser.get_parsed_content("spatial_dims"))
        self.in_channels = int(parser.get_parsed_content("in_channels"))
        self.patch_size = list(parser.get_parsed_content("patch_size"))
        self.pixdim = parser.get_parsed_content("pixdim")
        self.resize = parser.get_parsed_content("resize")
        self.intensity = parser.get_parsed_content("intensity_transform")
        channel_def = parser.get_parsed_content("_meta_#network_data_format#outputs#pred#channel_def", default={})
        self.class_names = {int(k): v for k, v in channel_def.items()}
        self.network = parser.get_parsed_content("network_def")
        weights = Path(checkpoint) if checkpoint else self.bundle / "models" / "model.pt"
        if not weights.is_file():
            raise InputError(f"{weights}: missing checkpoint (train the bundle first, or pass --checkpoint)")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            self.network.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
        except Exception as e:
            raise InputError(
                f"{weights}: checkpoint does not fit the bundle's network as configured ({str(e).splitlines()[0]} ...); "
                "pass the values it was trained with (--set spatial_dims=3, --config <overlay>)"
            ) from e
        self.network.to(self.device).eval()
        # a diffusion bundle segments by sampling: its own configured sampler, and extra maps to write
        target = str((parser.get("inferer") or {}).get("_target_", "")) if isinstance(parser.get("inferer"), dict) else ""
        self.diffusion = parser.get_parsed_content("inferer") if target.endswith("DiffusionSegmentationInferer") else None
        self.maps: List[str] = list(parser.get_parsed_content("maps")) if self.diffusion is not None else []
        self.amp = amp
        self.tta = tta
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap

    def _preprocessing(self, dims: int) -> Compose:
        transforms = [Orientationd(keys="image", axcodes="RAS"[:dims])]
        if self.pixdim is not None and len(self.pixdim) == dims:
            transforms.append(Spacingd(keys="image", pixdim=self.pixdim, mode="bilinear"))
        if self.resize is not None and len(self.resize) == dims:
            transforms.append(Resized(keys="image", spatial_size=self.resize, mode="area"))
        transforms.append(self.intensity)
        return Compose(transforms)

    def _inferer(self, dims: int):
        kwargs = dict(
            overlap=self.overlap, mode="gaussian", output="labels", sw_device=self.device, device=self.device,
            amp_dtype=torch.bfloat16 if self.amp else None,
        )
        if self.spatial_dims == 2 and dims == 3:
            return SliceWiseInferer(spatial_axis=2, roi_size=self.patch_size, sw_batch_size=max(self.sw_batch_size, 16),
                                    tta_axes=[0, 1] if self.tta else None, **kwargs)
        return SlidingWindowInferer(self.patch_size, self.sw_batch_size, tta_axes=list(range(dims)) if self.tta else None, **kwargs)

    def _predict_maps(self, image: torch.Tensor, dims: int) -> Dict[str, torch.Tensor]:
        """A diffusion bundle's label map and probability/uncertainty maps (``SplitDiffusionMapsd``'s keys)."""
        def sample(x: torch.Tensor) -> torch.Tensor:
            return self.diffusion(x, self.network)

        with torch.no_grad():
            if self.spatial_dims == 2 and dims == 3:
                stacked = SliceWiseInferer(spatial_axis=2, roi_size=self.patch_size, sw_batch_size=1, sw_device=self.device,
                                           device=self.device)(image.unsqueeze(0), sample)[0]
            else:
                stacked = sample(image.unsqueeze(0))[0]
        out = MetaTensor(stacked.as_tensor() if isinstance(stacked, MetaTensor) else stacked)
        out.copy_meta_from(image, copy_attr=True)
        return SplitDiffusionMapsd("pred", self.maps)({"pred": out})

    def segment_volume(self, volume: Volume, seconds: Dict[str, float]) -> Dict[str, MetaTensor]:
        """The label map ``(1, *spatial)`` (uint8) of a loaded case on its own grid, under ``"pred"``; a
        diffusion bundle adds its maps under ``"pred_<map>"`` (float32)."""
        dims = volume.image.dim() - 1
        start = time.perf_counter()
        pre = self._preprocessing(dims)
        data = pre({"image": volume.image.to(self.device)})
        _sync(self.device)
        seconds["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        if self.diffusion is not None:
            outputs = self._predict_maps(data["image"], dims)
        else:
            with torch.no_grad():
                labels = self._inferer(dims)(data["image"].unsqueeze(0), self.network)[0]
            pred = MetaTensor(labels.float())
            pred.copy_meta_from(data["image"], copy_attr=True)  # affine, meta and the applied operations to undo
            outputs = {"pred": pred}
        _sync(self.device)
        seconds["predict"] = time.perf_counter() - start

        start = time.perf_counter()
        keys = list(outputs)
        data.update(outputs)
        data = Invertd(keys=keys, transform=pre, orig_keys="image", nearest_interp=[k == "pred" for k in keys])(data)
        restored = {k: data[k] for k in keys}
        restored["pred"] = restored["pred"].round().to(torch.uint8)
        _sync(self.device)
        seconds["invert"] = time.perf_counter() - start
        return restored


def segment(
    bundle: Union[str, Path],
    input_path: Union[str, Path],
    output_dir: Union[str, Path],
    device: Optional[str] = None,
    amp: bool = False,
    tta: bool = False,
    output_format: str = "nifti",
    overwrite: bool = False,
    checkpoint: Optional[Union[str, Path]] = None,
    configs: Sequence[Union[str, Path]] = (),
    overrides: Optional[Dict[str, Any]] = None,
    progress: bool = True,
    dicom_reader: str = "itk",
) -> List[CaseResult]:
    """Segment one file, one DICOM series folder, or a folder of cases; see the module docstring.

    DICOM series are read with ITK or pydicom (``dicom_reader``). Outputs are
    ``<output_dir>/<case>_seg.nii.gz`` (or ``_seg.dcm``); an existing one is an error unless
    ``overwrite``; inputs are never written. A case that fails is reported (``error``) and the others go on.

    Raises:
        InputError: a bad bundle, checkpoint, format or input path (before any case runs).
    """
    if output_format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    output_dir = Path(output_dir)
    cases = [c for c in find_cases(input_path) if output_dir.resolve() not in c.resolve().parents]
    if not cases:
        raise InputError(f"{input_path}: no cases outside the output folder {output_dir}")
    suffix = ".dcm" if output_format == "dicom-seg" else ".nii.gz"
    targets: Dict[Path, Path] = {}
    for case in cases:
        target = output_dir / f"{Volume(case, torch.empty(0)).name}_seg{suffix}"
        if target in targets:
            raise InputError(f"{targets[target]} and {case} would both be written to {target}; segment them separately")
        targets[target] = case
    model = BundleSegmenter(bundle, device, amp, tta, checkpoint, configs, overrides)
    logger.info("%s on %s: %d case(s)", model.bundle.name, model.device, len(cases))
    results: List[CaseResult] = []
    for case in tqdm(cases, desc="segment", disable=not progress):
        seconds: Dict[str, float] = {}
        start = time.perf_counter()
        try:
            volume = read_volume(case, model.in_channels, 3 if model.spatial_dims == 3 else 2, dicom_reader)
            seconds["read"] = time.perf_counter() - start
            target = output_dir / f"{volume.name}_seg{suffix}"
            if target.exists() and not overwrite:
                raise InputError(f"{target}: exists (pass --overwrite to replace it)")
            if output_format == "dicom-seg" and not volume.dicom:
                raise InputError(f"{case}: --format dicom-seg needs a DICOM series as input")
            outputs = model.segment_volume(volume, seconds)
            start = time.perf_counter()
            if output_format == "dicom-seg":
                write_dicom_seg(outputs["pred"][0], volume.dicom, model.class_names, target)
            else:
                write_nifti(outputs["pred"][0], volume.image.affine, target)
            for key, values in outputs.items():  # a diffusion bundle's probability and uncertainty maps
                if key != "pred":
                    name = key.split("_", 1)[1]
                    write_nifti(values.movedim(0, -1), volume.image.affine, output_dir / f"{volume.name}_{name}.nii.gz", dtype=np.float32)
            seconds["write"] = time.perf_counter() - start
            results.append(CaseResult(case, target, seconds))
            logger.info("%s -> %s in %.2f s (%s)", case.name, target.name, sum(seconds.values()),
                        ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
        except InputError as e:
            results.append(CaseResult(case, None, seconds, str(e)))
            logger.error("%s", e)
    return results
