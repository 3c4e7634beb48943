"""Segment volumes with a bundle's own inference pipeline: read, preprocess, predict, postprocess, write.

``python -m monai_ext segment --bundle bundles/<name> --input PATH --output DIR`` runs :func:`segment`.
The bundle's ``configs/inference.json`` is the one definition of its pipeline: the bundle is loaded as a
MONAI workflow (``ConfigWorkflow``, type ``infer``) and its ``preprocessing``, ``inferer``,
``postprocessing`` and ``network`` are what runs, exactly as ``python -m monai.bundle run`` and MONAI Label
run them. This module only

- overrides config values (``device``, ``amp``, the inferer's ``sw_batch_size``, ``overlap`` and
  ``tta_axes``, the ``checkpoint``, a user's overlays and ``--set`` values);
- loads each file with the bundle's own ``LoadImaged`` and checks what it loaded (channels, dimensions,
  finite and non-constant values: one-line errors); DICOM (folders, ``DICOMDIR``, files, a DICOMweb study
  or series) is read by :mod:`monai_ext.data.dicom`, which checks the series' geometry and keeps the
  headers a DICOM SEG or RTSTRUCT needs. The loaded image then goes through the rest of the bundle's
  preprocessing, as MONAI Label hands its loaded images to a bundle;
- writes what the bundle's ``SaveImaged`` steps would write, under the same names
  (``<case>_<output_postfix>``), with its own writers: atomic NIfTI with the input's affine, or a DICOM SEG
  or RT Structure Set referencing the source series for the ``pred`` key (``--format dicom-seg`` or
  ``rtstruct``; :mod:`monai_ext.data.dicom.seg`), stored back on a DICOMweb input's server with ``store``.
  A diffusion bundle's probability and uncertainty maps are simply more ``SaveImaged`` keys of its
  postprocessing.

A trained bundle's weights carry the settings they were trained with and the bundle's configs read them
(:mod:`monai_ext.bundle.trained`), so nothing has to be repeated here; weights that do not fit the
configured network are a one-line error naming the setting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from monai.transforms import Compose, LoadImaged, SaveImaged
from tqdm import tqdm

from monai_ext.atomic import stale_temporaries
from monai_ext.bundle.overrides import check_device, check_overrides
from monai_ext.bundle.trained import SettingsMismatch, check_fits, differing_settings, load_state, record_of
from monai_ext.data.dicom.seg import write_dicom_seg, write_rtstruct
from monai_ext.data.image_checks import check_image
from monai_ext.data.nifti import nifti_header_codes, write_nifti
from monai_ext.data.volume_io import Case, Volume, find_cases, read_volume
from monai_ext.errors import InputError, ReportedError, first_line, reported_cause

__all__ = ["BundleSegmenter", "OutputWriter", "ReadOptions", "segment", "CaseResult"]

logger = logging.getLogger("monai_ext.segment")
FORMATS = ("nifti", "dicom-seg", "rtstruct")
DICOM_FORMATS = ("dicom-seg", "rtstruct")


@dataclass
class CaseResult:
    """One case's outcome: written (``output``), skipped (its outputs existed, ``skip_existing``) or failed (``error``)."""

    input: Path
    output: Optional[Path]
    seconds: Dict[str, float]
    error: Optional[str] = None
    skipped: bool = False


@dataclass
class _Output:
    """What one of the bundle's ``SaveImaged`` steps writes: a key, a file-name postfix and a dtype."""

    key: str
    postfix: str
    dtype: Any


@dataclass
class ReadOptions:
    """How a DICOM series may be read: ``allow_gaps`` (interpolate missing slices) and ``slice_tolerance``
    (mm a slice may sit off the fitted grid; default :mod:`monai_ext.data.dicom`'s)."""

    allow_gaps: bool = False
    slice_tolerance: Optional[float] = None


@dataclass
class OutputWriter:
    """Writes a case's outputs into ``folder`` as the bundle's ``SaveImaged`` steps would name them
    (``<case>_<postfix>.nii.gz``; the mask as ``.dcm`` for ``dicom-seg`` and ``rtstruct``): each atomically
    with the input's geometry, the mask last, and a case whole or not at all."""

    folder: Path
    outputs: List[_Output]
    output_format: str = "nifti"
    class_names: Dict[int, str] = field(default_factory=dict)
    algorithm: str = "monai_ext"
    version: str = "0"

    def names(self, case_name: str) -> Dict[str, str]:
        """The file names of one case's outputs, by key."""
        names = {}
        for o in self.outputs:
            suffix = ".dcm" if self.output_format in DICOM_FORMATS and o.key == "pred" else ".nii.gz"
            names[o.key] = f"{case_name}_{o.postfix}{suffix}"
        return names

    def write(self, outputs: Dict[str, torch.Tensor], volume: Volume) -> Path:
        """Write every output of ``volume``'s case; return the mask's path.

        A file that cannot be written (a full disk, a read-only folder) is an :class:`InputError` naming it;
        the outputs this call wrote before it are removed, so a case is written whole or not at all."""
        written: List[Path] = []
        try:
            return self._write(outputs, volume, written)
        except OSError as e:
            for path in written:
                path.unlink(missing_ok=True)
            target = e.filename or self.folder  # write_atomically names the file it was writing
            raise InputError(f"{target}: could not be written ({e.strerror or e}); earlier outputs are kept") from e

    def _write(self, outputs: Dict[str, torch.Tensor], volume: Volume, written: List[Path]) -> Path:
        names = self.names(volume.name)
        affine = volume.image.affine
        codes = nifti_header_codes(volume.image.meta)  # the input's qform/sform codes and units
        mask_path = self.folder / names["pred"]
        for o in sorted(self.outputs, key=lambda o: o.key == "pred"):  # the mask last: it marks a finished case
            if o.key not in outputs:
                continue
            values = outputs[o.key].detach().cpu()
            if tuple(values.shape[1:]) != tuple(volume.image.shape[1:]):
                raise InputError(
                    f"{volume.path}: the bundle's {o.key} has shape {list(values.shape[1:])}, not the input's "
                    f"{list(volume.image.shape[1:])}"
                )
            if o.key == "pred":
                labels = values[0] if not values.is_floating_point() else values[0].round().to(torch.int32)
                if self.output_format == "dicom-seg":
                    write_dicom_seg(
                        labels, volume, self.class_names, mask_path, algorithm=self.algorithm, version=self.version
                    )
                elif self.output_format == "rtstruct":
                    write_rtstruct(labels, volume, self.class_names, mask_path)
                else:
                    write_nifti(labels, affine, mask_path, dtype=o.dtype, codes=codes)
                written.append(mask_path)
            else:
                path = self.folder / names[o.key]
                write_nifti(
                    values[0] if values.shape[0] == 1 else values.movedim(0, -1),
                    affine,
                    path,
                    dtype=o.dtype or np.float32,
                    codes=codes,
                )
                written.append(path)
        return mask_path


def _outputs(parser) -> List[_Output]:
    """What the bundle's ``SaveImaged`` steps write, read from their config entries (``keys``, ``output_postfix``,
    ``output_dtype``, with ``SaveImaged``'s own defaults), not from the transforms' private state; ``pred`` as
    ``<case>_seg`` when no step writes it. A step is found by what its entry builds, so a disabled entry
    (``_disabled_``) before it changes nothing."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(SaveImaged).parameters.items()}
    raw = parser.get("postprocessing")
    base, entries = (
        ("postprocessing#transforms", raw["transforms"]) if isinstance(raw, dict) else ("postprocessing", raw)
    )
    outputs = []
    for i in range(len(entries or [])):
        if not isinstance(parser.get_parsed_content(f"{base}#{i}"), SaveImaged):
            continue
        value = {
            k: parser.get_parsed_content(f"{base}#{i}#{k}") if f"{base}#{i}#{k}" in parser else defaults[k]
            for k in ("keys", "output_postfix", "output_dtype")
        }
        keys = [value["keys"]] if isinstance(value["keys"], str) else list(value["keys"])
        outputs += [_Output(key, value["output_postfix"] or "seg", value["output_dtype"]) for key in keys]
    if not any(o.key == "pred" for o in outputs):
        outputs.insert(0, _Output("pred", "seg", np.uint8))
    return outputs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reason(e: BaseException) -> str:
    """The innermost cause's first line (MONAI wraps transform errors in 'applying transform ...')."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__


class BundleSegmenter:
    """A bundle's inference pipeline (``configs/inference.json``), loaded once for many cases.

    Args:
        bundle: the bundle folder (with ``configs/inference.json`` and ``configs/metadata.json``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: the bundle's ``device``.
        amp: the bundle's ``amp`` (mixed precision); ``None`` keeps the bundle's value.
        tta: mirror test-time augmentation along every axis of the window (the inferer's ``tta_axes``).
        checkpoint: the weights (default: the bundle's ``checkpoint``, ``<bundle>/models/model.pt``).
        configs: more config files merged on ``inference.json`` (e.g. a data-set overlay).
        overrides: config values, as ``python -m monai.bundle run --<id> <value>`` sets them.
        sw_batch_size: the inferer's windows per network call (default: the bundle's).
        overlap: the inferer's window overlap (default: the bundle's).
        backend: what runs the network: ``torch``, ``pt2`` (its ``torch.export`` program), ``openvino`` or
            ``onnxruntime`` (the bundle's ``backend``;
            :class:`~monai_ext.inferers.CompiledNetwork`).
        precision: ``fp32``, ``bf16`` (torch) or ``int8`` (openvino) (the bundle's ``precision``).

    Raises:
        InputError: a missing bundle file or checkpoint, a config that does not parse, an option the
            bundle's inferer does not have, or weights that do not fit the configured network.
    """

    def __init__(
        self,
        bundle: Union[str, Path],
        device: Optional[str] = None,
        amp: Optional[bool] = None,
        tta: bool = False,
        checkpoint: Optional[Union[str, Path]] = None,
        configs: Sequence[Union[str, Path]] = (),
        overrides: Optional[Dict[str, Any]] = None,
        sw_batch_size: Optional[int] = None,
        overlap: Optional[float] = None,
        backend: Optional[str] = None,
        precision: Optional[str] = None,
    ) -> None:
        self.bundle = Path(bundle)
        files = self._config_files(configs)
        values = self._values(files, device, amp, checkpoint, overrides, backend, precision)
        self.workflow = self._workflow(files, values, {"sw_batch_size": sw_batch_size, "overlap": overlap, "tta": tta})
        parser = self.workflow.parser
        try:
            self.workflow.initialize()
            self.device = torch.device(parser.get_parsed_content("device"))
            self.amp = bool(parser.get_parsed_content("amp", default=False))
            self.network = parser.get_parsed_content("network")
            preprocessing = _transforms(parser.get_parsed_content("preprocessing"))
            self.inferer = parser.get_parsed_content("inferer")
            postprocessing = _transforms(parser.get_parsed_content("postprocessing"))
            self.spatial_dims = int(parser.get_parsed_content("spatial_dims"))
            self.in_channels = int(parser.get_parsed_content("in_channels"))
            weights = Path(parser.get_parsed_content("checkpoint"))
        except ReportedError:
            raise
        except Exception as e:  # a config error surfaces as any kind of exception
            raise InputError(f"{files[0]}: the bundle's config does not parse with these values ({_reason(e)})") from e
        self.class_names = self._class_names(parser)
        self.version = str(parser.get_parsed_content("_meta_#version", default="0"))
        # the bundle's own steps; its SaveImaged replaced by our writers, which write what they would
        loaders = [t for t in preprocessing if isinstance(t, LoadImaged)]
        self.loader = Compose(loaders) if loaders else None
        self.preprocessing = Compose([t for t in preprocessing if not isinstance(t, LoadImaged)])
        self.postprocessing = Compose([t for t in postprocessing if not isinstance(t, SaveImaged)])
        self.outputs = _outputs(parser)
        self._load_weights(weights, parser)  # weights that do not fit name the trained settings first
        self._check_built(parser, files[0])

    def _config_files(self, configs: Sequence[Union[str, Path]]) -> List[Path]:
        """``inference.json`` and the user's overlays, each checked to be a JSON file (and the metadata)."""
        folder = self.bundle / "configs"
        files = [folder / "inference.json"] + [Path(c) for c in configs]
        for f in [folder / "metadata.json"] + files:
            if not f.is_file():
                raise InputError(f"{f}: missing config file (is {self.bundle} a bundle folder?)")
            if f.suffix == ".json":
                try:
                    json.loads(f.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise InputError(f"{f}: not a JSON config ({e})") from e
        return files

    def _values(self, files: List[Path], device, amp, checkpoint, overrides, backend, precision) -> Dict[str, Any]:
        """The config values this run sets, checked (``--set`` values against the bundle's own)."""
        from monai_ext.inferers.backends import cpu_has_native_bf16

        values: Dict[str, Any] = {"bundle_root": str(self.bundle), **(overrides or {})}
        if checkpoint is not None:
            values["checkpoint"] = str(checkpoint)
        if device is not None:
            values["device"] = check_device(str(device))
        check_overrides(files, overrides or {}, {k: v for k, v in values.items() if k not in (overrides or {})})
        if amp is not None:
            values["amp"] = bool(amp)
        on_cpu = values["device"].type == "cpu" if device is not None else not torch.cuda.is_available()
        if amp and on_cpu and not cpu_has_native_bf16():
            raise InputError(
                "--amp: mixed precision on this CPU means bfloat16, which it has no instructions for (no avx512_bf16 or "
                "amx_bf16): PyTorch emulates it, many times slower than fp32; leave --amp off (or try --backend openvino)"
            )
        for key, value in (("backend", backend), ("precision", precision)):
            if value is not None:
                values[key] = value
        return values

    def _workflow(self, files: List[Path], values: Dict[str, Any], inferer_options: Dict[str, Any]):
        """The bundle as MONAI's ``ConfigWorkflow`` (type ``infer``), with the inferer's options that were given."""
        from monai.bundle.workflows import ConfigWorkflow

        overlap, batch, tta = inferer_options["overlap"], inferer_options["sw_batch_size"], inferer_options["tta"]
        if overlap is not None and not 0 <= overlap < 1:
            raise InputError(f"--overlap {overlap:g}: the window overlap must be at least 0 and below 1")
        if batch is not None and batch < 1:
            raise InputError(f"--sw-batch-size {batch}: at least 1 window per network call")
        workflow = ConfigWorkflow(
            config_file=[str(f) for f in files],
            meta_file=str(self.bundle / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type="infer",
            **values,
        )
        inferer = workflow.parser.get("inferer")
        inferer = inferer if isinstance(inferer, dict) else {}
        for option, key, value in (
            ("--sw-batch-size", "sw_batch_size", batch),
            ("--overlap", "overlap", overlap),
            ("--tta", "tta_axes", "$list(range(len(@patch_size)))" if tta else None),
        ):
            if value is None:
                continue
            if key not in inferer:
                raise InputError(
                    f"{files[0]}: {option}: the bundle's inferer ({inferer.get('_target_')}) has no {key!r}"
                )
            workflow.parser[f"inferer#{key}"] = value
        return workflow

    def _check_built(self, parser, config: Path) -> None:
        chosen = parser.get_parsed_content("backend", default="torch") if "backend" in parser else "torch"
        if chosen in ("openvino", "onnxruntime") and self.device.type != "cpu":
            raise InputError(
                f"--backend {chosen}: runs on the CPU, and the device is {self.device}; add --device cpu, or use --backend torch"
            )
        patch = parser.get_parsed_content("patch_size", default=None) if "patch_size" in parser else None
        if self.spatial_dims not in (2, 3):
            raise InputError(f"{config}: spatial_dims is {self.spatial_dims}; the bundles are 2D or 3D")
        if patch is not None and len(patch) != self.spatial_dims:
            raise InputError(
                f"{config}: patch_size {list(patch)} has {len(patch)} value(s) for spatial_dims {self.spatial_dims}"
            )

    @staticmethod
    def _class_names(parser) -> Dict[int, str]:
        names = parser.get_parsed_content("class_names", default=None) if "class_names" in parser else None
        if not names:
            names = parser.get_parsed_content("_meta_#network_data_format#outputs#pred#channel_def", default={})
        return {int(k): str(v) for k, v in names.items()}

    def _load_weights(self, weights: Path, parser) -> None:
        if not weights.is_file():
            raise InputError(f"{weights}: missing checkpoint (train the bundle first, or pass --checkpoint)")
        try:
            state = load_state(weights)
        except ValueError as e:
            raise InputError(str(e)) from e
        record = record_of(state)
        configured = {k: parser.get_parsed_content(k) for k in (record or {}).get("settings", {}) if k in parser}
        try:
            check_fits(weights, state, self.network, configured)
            self.network.load_state_dict(state)
        except SettingsMismatch as e:
            raise InputError(str(e)) from e
        except RuntimeError as e:
            raise InputError(f"{weights}: weights do not fit the configured network ({_reason(e)})") from e
        for key, (trained, now) in differing_settings(record, configured).items():
            logger.warning(
                "%s: %s was %s in training and is %s now (an override or overlay changed it)",
                weights,
                key,
                trained,
                now,
            )
        self.network.to(self.device).eval()
        self.weights = weights

    def load(self, case: Case, read: Optional["ReadOptions"] = None) -> Volume:
        """Load and check one case: a file with the bundle's ``LoadImaged``, a DICOM series with
        :func:`~monai_ext.data.volume_io.read_volume` (which checks the series' geometry, as ``read`` allows,
        and keeps its headers)."""
        read = read or ReadOptions()
        min_dims = 3 if self.spatial_dims == 3 else 2
        if case.error:
            raise InputError(case.error)
        if not case.path.exists():
            raise InputError(f"{case.path}: no such file or folder")
        if case.series is not None or case.path.is_dir() or self.loader is None:
            volume = read_volume(case, self.in_channels, min_dims, read.allow_gaps, read.slice_tolerance)
            volume.image = volume.image.to(torch.float32)  # what the bundle's LoadImaged hands on (its dtype)
            return volume
        try:
            image = self.loader({"image": str(case.path)})["image"]
        except Exception as e:  # readers raise many kinds; our own checks' line is the whole story
            reported = reported_cause(e)
            raise InputError(
                str(reported) if reported is not None else f"{case.path}: unreadable ({_reason(e)})"
            ) from e
        check_image(case.path, image, self.in_channels, min_dims)
        return Volume(case.path, image, case.name)

    def writer(self, output_dir: Union[str, Path], output_format: str = "nifti") -> "OutputWriter":
        """What writes this bundle's outputs into ``output_dir``, as its ``SaveImaged`` steps would name them."""
        return OutputWriter(
            Path(output_dir), self.outputs, output_format, self.class_names, self.bundle.resolve().name, self.version
        )

    def segment_volume(self, volume: Volume, seconds: Dict[str, float]) -> Dict[str, torch.Tensor]:
        """Run the bundle's pipeline on a loaded case; the outputs ``(C, *spatial)`` on the case's own grid, by key."""
        start = time.perf_counter()
        data = self.preprocessing({"image": volume.image})
        seconds["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        image = data["image"].unsqueeze(0).to(self.device)
        with torch.no_grad(), torch.autocast("cuda", enabled=self.amp and self.device.type == "cuda"):
            # as MONAI's SupervisedEvaluator runs a bundle's inferer
            pred = self.inferer(image, self.network)
        data["pred"] = pred[0]
        _sync(self.device)
        seconds["predict"] = time.perf_counter() - start

        start = time.perf_counter()
        data = self.postprocessing(data)
        seconds["postprocess"] = time.perf_counter() - start
        return {o.key: data[o.key] for o in self.outputs if o.key in data}


def _transforms(compose) -> List:
    return list(compose.transforms) if isinstance(compose, Compose) else list(compose)


def segment(
    bundle: Union[str, Path],
    input_path: Union[str, Path],
    output_dir: Union[str, Path],
    device: Optional[str] = None,
    amp: Optional[bool] = None,
    tta: bool = False,
    output_format: str = "nifti",
    overwrite: bool = False,
    checkpoint: Optional[Union[str, Path]] = None,
    configs: Sequence[Union[str, Path]] = (),
    overrides: Optional[Dict[str, Any]] = None,
    progress: bool = True,
    sw_batch_size: Optional[int] = None,
    overlap: Optional[float] = None,
    series: Optional[str] = None,
    each_series: bool = False,
    allow_gaps: bool = False,
    slice_tolerance: Optional[float] = None,
    store: bool = False,
    skip_existing: bool = False,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
) -> List[CaseResult]:
    """Segment one file, one DICOM input (folder, ``DICOMDIR``, file, or a DICOMweb study or series URL), or a
    folder of cases; see the module docstring.

    DICOM inputs are read by :mod:`monai_ext.data.dicom`: one series (``series`` picks it by
    SeriesInstanceUID, ``each_series`` segments every one), its geometry checked (``allow_gaps``,
    ``slice_tolerance``). Outputs go to ``output_dir`` under the bundle's names (``<case>_seg.nii.gz``, or
    ``<case>_seg.dcm`` for ``dicom-seg`` and ``rtstruct``); an existing one is an error unless ``overwrite``
    (replace it) or ``skip_existing`` (a case whose outputs all exist is skipped, e.g. to finish a folder run
    that was stopped; a case with only some of them is segmented again); inputs are never written.
    Temporary files that a stopped run left in ``output_dir`` are removed first. An output that cannot be
    written (a full disk) fails its case, naming the file; the case's other new outputs are removed and
    earlier cases' are kept. With a DICOMweb input and ``store``, each DICOM output is also stored on that
    server (STOW-RS). A case that fails is reported (``error``) and the others go on.

    Raises:
        InputError: a bad bundle, checkpoint, format or input path (before any case runs).
    """
    if output_format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    if overwrite and skip_existing:
        raise InputError(
            "--overwrite and --skip-existing exclude each other: replace existing outputs, or keep them and skip their cases"
        )
    from monai_ext.data.dicom import web as dicomweb

    url = str(input_path)
    web = dicomweb.is_url(url)
    if store and not (web and output_format in DICOM_FORMATS):
        raise InputError(
            f"--store sends a DICOM output (--format {' or '.join(DICOM_FORMATS)}) back to the DICOMweb server "
            "of a DICOMweb --input"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output {output_dir}: a file, not a folder")
    if not web and Path(input_path).is_dir() and output_dir.resolve() == Path(input_path).resolve():
        raise InputError(
            f"--output {output_dir} is the input folder: the outputs would be mixed with the cases "
            "(and taken for cases by a later run); "
            "give another folder, e.g. a subfolder"
        )

    def load_bundle() -> BundleSegmenter:
        return BundleSegmenter(
            bundle, device, amp, tta, checkpoint, configs, overrides, sw_batch_size, overlap, backend, precision
        )

    # a bad local input fails before the bundle loads; a bad bundle fails before a (long) download
    model = load_bundle() if web else None
    with tempfile.TemporaryDirectory(prefix="monai_ext_dicomweb_") if web else contextlib.nullcontext() as download:
        if web:
            input_path = dicomweb.download(url, Path(download), series, each_series)
        cases = [
            c
            for c in find_cases(input_path, series, each_series)
            if output_dir.resolve() not in c.path.resolve().parents
        ]
        if not cases:
            raise InputError(f"{input_path}: no cases outside the output folder {output_dir}")
        model = model or load_bundle()
        writer = model.writer(output_dir, output_format)
        read = ReadOptions(allow_gaps, slice_tolerance)
        targets: Dict[Path, Path] = {}
        for case in cases:
            for name in writer.names(case.name).values():
                target = output_dir / name
                if target in targets:
                    raise InputError(
                        f"{targets[target]} and {case.path} would both be written to {target}; segment them separately"
                    )
                targets[target] = case.path
        for stale in stale_temporaries(output_dir):
            stale.unlink()
            logger.info("%s: removed (a temporary file of a run that was stopped)", stale)
        logger.info("%s (%s) on %s: %d case(s)", model.bundle.resolve().name, model.weights, model.device, len(cases))
        results = [
            _segment_case(model, case, writer, read, overwrite, skip_existing)
            for case in tqdm(cases, desc="segment", disable=not progress)
        ]
        for r in results if store else []:
            if r.error is None and not r.skipped:
                try:
                    dicomweb.store(url, r.output)
                    logger.info("%s stored on %s", r.output.name, dicomweb.base_url(url))
                except ReportedError as e:
                    r.error = str(e)
                    logger.error("%s", e)
    return results


def _segment_case(
    model: BundleSegmenter, case: Case, writer: OutputWriter, read: ReadOptions, overwrite: bool, skip_existing: bool
) -> CaseResult:
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    try:
        names = writer.names(case.name)
        existing = [writer.folder / n for n in names.values() if (writer.folder / n).exists()]
        if skip_existing and len(existing) == len(names):
            logger.info("%s: skipped (%s exists)", case.name, existing[0].name)
            return CaseResult(case.path, writer.folder / names["pred"], seconds, skipped=True)
        if existing and not (overwrite or skip_existing):
            raise InputError(
                f"{existing[0]}: exists (pass --overwrite to replace it, or --skip-existing to keep it and skip the case)"
            )
        volume = model.load(case, read)
        seconds["read"] = time.perf_counter() - start
        if writer.output_format in DICOM_FORMATS and volume.series is None:
            raise InputError(f"{case.path}: --format {writer.output_format} needs a DICOM series as input")
        try:
            outputs = model.segment_volume(volume, seconds)
        except Exception as e:  # any failure inside the bundle's pipeline is this case's failure
            raise InputError(f"{case.path}: segmentation failed ({_reason(e)})") from e
        start = time.perf_counter()
        written = writer.write(outputs, volume)
        seconds["write"] = time.perf_counter() - start
        logger.info(
            "%s -> %s in %.2f s (%s)",
            case.name,
            written.name,
            sum(seconds.values()),
            ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()),
        )
        return CaseResult(case.path, written, seconds)
    except ReportedError as e:
        logger.error("%s", e)
        return CaseResult(case.path, None, seconds, str(e))
