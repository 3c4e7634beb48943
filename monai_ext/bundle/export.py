"""A distributable bundle: trained weights, their settings baked into the configs, and the code it needs.

:func:`export_bundle` (``python -m monai_ext export --bundle bundles/<name> --output DIR``) writes a bundle
that runs on a machine where ``monai_ext`` is not installed, as the MONAI model zoo's CI runs bundles:

- ``models/model.pt`` (the trained weights), ``models/model.pt2`` (the network as a ``torch.export`` program,
  checked equal to it), ``models/compiled/`` (the network compiled for OpenVINO and ONNX Runtime as
  ``segment`` asks for it, so that those backends convert nothing: fp32, and OpenVINO int8 where the bundle's
  validation cases are there to calibrate it and it passes ``segment``'s accuracy check) and
  ``models/trained.json`` (their settings, readable);
- ``configs/``: ``inference.json`` and ``train.json`` with every trained setting written in as a plain
  value (no lookup in the weights), data-set overlays and ``--set`` values merged, personal data paths
  reset to the bundle's defaults; ``evaluate.json``, ``multi_gpu_train.json``, ``logging.conf`` as they are;
- ``configs/metadata.json``: the trained label names as the output ``channel_def``, the network's channel
  counts and patch shape, a new version with its changelog entry, ``required_packages_version`` from
  what the code actually imports, ``supported_apps``, and ``eval_metrics`` from the last evaluation
  (``<run>/eval/metrics_summary.json`` beside the weights' ``models`` folder);
- ``large_files.yml`` listing every weight file (``models/`` but the settings) and any other file over the
  zoo's 25 MB limit, each with its URL and SHA-256, so that a zoo pull request can leave them all out: the
  URL is required (``large_files_url``) unless the export is ``local_only`` (kept with its weights, not for
  the zoo);
- ``docs/data_license.txt`` when the training data set is a public one with recorded terms;
- ``monai_ext/``: the package's modules the configs import, found by importing them in a fresh process
  (the zoo puts the bundle folder on ``sys.path``).

Everything is written into a temporary folder beside the target and renamed at the end; the export is
checked with MONAI's ``verify_metadata`` and ``verify_net_in_out`` before that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from monai_ext.bundle.overrides import check_overrides
from monai_ext.bundle.shipped import shipped
from monai_ext.bundle.trained import SETTINGS_FILE, check_fits, load_state, record_of
from monai_ext.errors import ReportedError, first_line

__all__ = ["export_bundle", "LARGE_FILE_BYTES", "ExportError"]

logger = logging.getLogger("monai_ext.export")
LARGE_FILE_BYTES = 25 * 1024 * 1024  # the model zoo's limit for committed files
PACKAGE = Path(__file__).resolve().parents[1]
SCHEMA = "meta_schema_20240725.json"
# packages the metadata's own fields pin, or that come with Python
_NOT_REQUIREMENTS = {"torch", "monai", "numpy", "monai-ext"}
# packages the vendored code imports only on a path that a bundle's default run does not take: named in the exported
# README as extras, not required by its metadata (the model zoo installs every required package for its checks)
OPTIONAL_PACKAGES = {
    "openvino": "`backend` openvino: CPU inference with OpenVINO (the IR in `models/compiled/`)",
    "onnxruntime": "`backend` onnxruntime: CPU inference with ONNX Runtime",
    "nncf": "`precision` int8 with the openvino backend",
    "matplotlib": "the training-curve and overlay pictures (without it training logs that it skips them)",
    "pydicom": "DICOM series as input (with its decoder plugins for compressed series)",
    "itk": "ITK readers and threads where MONAI uses ITK",
}
_HOOK = re.compile(r"@trained\.get\(")


class ExportError(ReportedError, ValueError):
    """The bundle cannot be exported as asked; the message names the file and the problem."""


def _dump(data: Any) -> str:
    """JSON as the zoo's pretty-format-json hook writes it: 4 spaces, keys in their order, ASCII."""
    return json.dumps(data, indent=4) + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hooked(config: Dict[str, Any]) -> List[str]:
    """The ids whose value is read from the trained weights (``$@trained.get(...)``)."""
    return [k for k, v in config.items() if isinstance(v, str) and _HOOK.search(v)]


def _plain(value: Any) -> Any:
    return json.loads(
        json.dumps(
            value,
            default=lambda v: (
                v.tolist() if isinstance(v, torch.Tensor) else list(v) if isinstance(v, tuple) else str(v)
            ),
        )
    )


def _bump(version: str) -> str:
    parts = version.split(".")
    if len(parts) == 3 and parts[2].isdigit():
        return f"{parts[0]}.{parts[1]}.{int(parts[2]) + 1}"
    return f"{version}.1"


def _parser(bundle: Path, weights: Path, configs: Sequence[Path], overrides: Dict[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.read_config([str(bundle / "configs" / "inference.json")] + [str(c) for c in configs])
    parser.update({"bundle_root": str(bundle), **overrides, "checkpoint": str(weights), "device": "cpu"})
    return parser


def _modules(configs: Sequence[Dict[str, Any]]) -> List[str]:
    """The ``monai_ext`` modules the configs use, with everything they import, found by importing the
    configs' ``monai_ext.*`` names in a fresh interpreter (a package's names load only their own module)."""
    names = set()
    for config in configs:
        names.update(m.group(0) for m in re.finditer(r"monai_ext(?:\.[A-Za-z_][A-Za-z0-9_]*)+", json.dumps(config)))
    script = r"""
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:  # a package's names load their module on first use
            value = getattr(value, part)
        break
print(json.dumps(sorted(m for m in sys.modules if m == "monai_ext" or m.startswith("monai_ext."))))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sorted(names))], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise ExportError(
            "the configs' monai_ext modules do not import: "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _format_code(folder: Path) -> None:
    """The vendored code formatted as the model zoo checks it (isort and black with its settings)."""
    from monai_ext.bundle.zoo_style import format_code

    try:
        format_code(folder)
    except ImportError as e:
        logger.warning(
            "%s: the vendored code is not formatted as the model zoo checks it (isort and black: %s); "
            "pip install black isort, then export again for a zoo pull request",
            folder,
            first_line(e),
        )


def _requirements(sources: Sequence[Path]) -> Dict[str, str]:
    """The installed distributions (name: version) of the third-party packages the source files import."""
    import ast
    import importlib.metadata as md

    tops = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                tops.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
    tops -= set(getattr(sys, "stdlib_module_names", ())) | {"monai_ext", "__future__"}
    dists = md.packages_distributions()
    out = {}
    for top in sorted(tops):
        for dist in [top] if _installed(top) else dists.get(top, [])[:1]:
            if dist.lower() not in _NOT_REQUIREMENTS:
                out[dist] = md.version(dist)
    return out


def _installed(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def _copy_modules(modules: Sequence[str], target: Path) -> List[Path]:
    """Copy the modules' source files (and every package ``__init__`` on their way) under ``target``."""
    files = set()
    for module in modules:
        rel = Path(*module.split("."))
        package = PACKAGE.parent / rel / "__init__.py"
        files.add(package if package.is_file() else (PACKAGE.parent / rel).with_suffix(".py"))
        for i in range(1, len(module.split("."))):
            files.add(PACKAGE.parent / Path(*module.split(".")[:i]) / "__init__.py")
    for f in sorted(files):
        if not f.is_file():
            raise ExportError(f"{f}: the module's source file is missing")
        out = target / f.relative_to(PACKAGE.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
    return sorted(files)


def _bake(raw: Dict[str, Any], values: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """``raw`` with each setting set to its plain value, the weights lookup gone, data paths at their defaults."""
    out = {}
    for k, v in raw.items():
        if k == "trained":
            continue
        if k in values:
            out[k] = values[k]
        elif k in defaults:
            out[k] = defaults[k]
        else:
            out[k] = v
    return out


def _eval_metrics(weights: Path) -> Dict[str, float]:
    summary = weights.parent.parent / "eval" / "metrics_summary.json"
    if not summary.is_file():
        return {}
    metrics = json.loads(summary.read_text()).get("metrics", {})
    out = {}
    for name, stats in metrics.items():
        value = stats.get("mean") if isinstance(stats, dict) else stats
        if isinstance(value, (int, float)) and value == value:  # NaN: the metric had no case (e.g. an absent class)
            out[f"mean_{name}" if isinstance(stats, dict) else name] = round(float(value), 4)
    return out


def _program(network: torch.nn.Module, channels: int, patch: List[int], path: Path) -> str:
    """Write the trained network as a ``torch.export`` program (``models/model.pt2``, checked equal to the network
    on a batch of two windows of the patch size) and say which shapes it takes, for the README."""
    from monai_ext.inferers.exported_program import dynamic_axes, export_program, save_program, weights_digest

    if not patch:
        return "There is no `models/model.pt2`: the settings name no patch size to export it for."
    example = torch.randn((2, channels, *patch), generator=torch.Generator().manual_seed(0))
    try:
        program = export_program(network, (example,))
    except ReportedError as e:
        logger.warning("no torch.export program in the export: %s", e)
        return f"There is no `models/model.pt2`: {e}."
    save_program(program, path, weights_digest(network))
    axes = dynamic_axes(program)
    spatial = [a for a in axes if a >= 2]
    shapes = (
        "any batch and any window size the network's down-sampling allows"
        if len(spatial) == len(patch)
        else f"{'any batch' if 0 in axes else 'a batch of 2'} of windows of {patch}"
    )
    return (
        "`models/model.pt2` is the network as a `torch.export` program (PyTorch's successor to TorchScript, which "
        "PyTorch 2.9 deprecates; the model zoo still asks for TorchScript): "
        f"`torch.export.load('models/model.pt2').module()(x)` runs it without this code, for {shapes}; "
        "`--backend pt2` runs the bundle's pipeline with it."
    )


def _compiled(
    network: torch.nn.Module,
    channels: int,
    patch: List[int],
    batch: int,
    folder: Path,
    calibration: Optional[Callable[[], Sequence[torch.Tensor]]] = None,
) -> str:
    """The network compiled for the CPU backends as ``segment --backend openvino|onnxruntime`` will ask for it
    (``batch`` windows of the patch size, fp32, and OpenVINO int8 where ``calibration``, the bundle's validation
    cases, gives windows and the quantised network passes its accuracy check), in ``models/compiled/`` under the
    keys those runs look up, so that they load it instead of converting; says what was shipped, for the README.
    A diffusion denoiser is compiled with its timestep input, as its sampler calls it."""
    from monai_ext.inferers.backends import CompiledNetwork

    if not patch:
        return ""
    example = [torch.randn((batch, channels, *patch), generator=torch.Generator().manual_seed(0))]
    if hasattr(network, "mask_channels"):  # MedSegDiff's denoiser: the sampler adds the step (one per window)
        example.append(torch.zeros(batch, dtype=torch.long))
    shipped, refused = [], []
    for backend, precision in (("openvino", "fp32"), ("onnxruntime", "fp32"), ("openvino", "int8")):
        name = f"`--backend {backend}`" + (" (int8)" if precision == "int8" else "")
        try:
            run = CompiledNetwork(
                network, backend, precision, cache_dir=folder, calibration=calibration, batch_size=batch
            )
            with torch.no_grad():
                run(*example)
            shipped.append(name)
        except ReportedError as e:  # no ONNX export, not installed, no calibration cases, int8 does not quantise
            refused.append(f"{name}: {e}")
    network.eval()
    text = (
        f"`models/compiled/` holds the network compiled for {', '.join(shipped)} ({batch} windows of {patch}): a "
        "run with the same library versions loads it and converts nothing."
        if shipped
        else ""
    )
    return text + (f" Not compiled: {'; '.join(refused)}." if refused else "")


def _calibration(parser) -> Optional[Callable[[], Sequence[torch.Tensor]]]:
    """The bundle's int8 calibration windows (its validation cases after its preprocessing), as ``segment
    --precision int8`` reads them; ``None`` where the config has none."""
    try:
        return parser.get_parsed_content("calibration")
    except Exception as e:  # an older config without it, or one whose data set is elsewhere: no int8
        logger.info("no int8 calibration in the config (%s)", first_line(e)[:160])
        return None


def _large_files(folder: Path, url: Optional[str]) -> List[Dict[str, str]]:
    """Write ``large_files.yml`` for the weight files under ``models/`` (all but the settings) and any other
    file over 25 MB; each entry is the zoo's ``path``, ``url`` (``<url>/<path>``; empty without ``url``),
    ``hash_val`` and ``hash_type``."""
    import yaml

    large = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        weights = rel.startswith("models/") and f.name != SETTINGS_FILE
        if weights or f.stat().st_size > LARGE_FILE_BYTES:
            link = f"{url.rstrip('/')}/{rel}" if url else ""
            large.append({"path": rel, "url": link, "hash_val": _sha256(f), "hash_type": "sha256"})
    (folder / "large_files.yml").write_text(yaml.safe_dump({"large_files": large}, sort_keys=False))
    return large


# sections of a bundle's README that speak of the repository it lives in; an export gets its own
_REPOSITORY_SECTIONS = ("Data", "Additional Usage Steps")


def _readme(
    text: str,
    name: str,
    meta: Dict[str, Any],
    values: Dict[str, Any],
    local_only: bool,
    program: str,
    extras: Dict[str, str],
) -> str:
    """The exported bundle's ``docs/README.md``: the bundle's own, less the sections about the repository
    (its data builders and commands run from ``bundles/<name>``), with this export's settings, data and
    commands, all run from the export's folder, and the optional packages (``extras``: name, version) it can use."""
    kept = [
        part
        for part in re.split(r"(?m)^(?=## )", text)
        if not any(part.startswith(f"## {title}\n") for title in _REPOSITORY_SECTIONS)
    ]
    body = re.sub(r"\.\./\.\./(\w+)/", r"<monai_ext repository>/\1/", "".join(kept)).rstrip() + "\n"
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in values.items())
    scores = ", ".join(f"{k} {v}" for k, v in meta["eval_metrics"].items())
    weights = (
        "The weights are in `models/` (a local export: `large_files.yml` lists them without an address)."
        if local_only
        else "The weights are listed in `large_files.yml` with their address and SHA-256; a copy without them "
        "fetches them with `python -m monai.bundle download` or the model zoo's tools."
    )
    return (
        f"{body}\n## This export (version {meta['version']})\n\n"
        f"Exported on {time.strftime('%Y-%m-%d')} from the `{name}` bundle of `monai_ext` with `python -m monai_ext "
        "export`, from weights trained with these settings (baked into `configs/inference.json` and "
        f"`configs/train.json`):\n\n| setting | value |\n|---|---|\n{rows}\n\n"
        + (
            f"Last evaluation: {scores}.\n\n"
            if scores
            else "No evaluation was recorded beside the weights, so `eval_metrics` in the metadata is empty.\n\n"
        )
        + "## Data\n\n"
        + (f"Trained on {meta['data_source']}.\n\n" if meta.get("data_source") else "")
        + "Any image the settings above describe (channels, spatial dimensions; DICOM series, NIfTI and the other "
        "formats MONAI's `LoadImage` reads). Inference reads a datalist: a JSON file with a list of cases under a "
        'key, `{"test": [{"image": "/path/case.nii.gz"}]}`; training and evaluation read `datalist.json` in '
        "`dataset_dir` with `training`, `validation` and `test` lists of `image`/`label` pairs.\n\n"
        "## Additional Usage Steps\n\n"
        "From this folder. The `monai_ext` modules the configs use are inside it (`monai_ext/`): install the packages "
        f"of `required_packages_version` in `configs/metadata.json`, not `monai_ext`. {weights} {program}\n\n"
        + (
            "Optional packages, for what the default run does not do:\n\n"
            + "".join(f"- `{k}=={v}`: {OPTIONAL_PACKAGES[k.lower()]}\n" for k, v in sorted(extras.items()))
            + "\n"
            if extras
            else ""
        )
        + "```bash\n"
        "python -m monai.bundle run --config_file configs/inference.json --datalist_file cases.json --output_dir masks\n"
        "python -m monai.bundle run --config_file configs/train.json --dataset_dir DIR            # fine-tune on DIR\n"
        "python -m monai.bundle run --config_file \"['configs/train.json','configs/evaluate.json']\" --dataset_dir DIR\n"
        "python -m monai.bundle verify_metadata --meta_file configs/metadata.json\n"
        "```\n"
    )


def _data_license(source: Dict[str, Any]) -> str:
    terms = source.get("terms") or (
        "not recorded in this bundle: read them at the address above before using or sharing weights trained on these data"
    )
    return (
        f"The weights of this bundle were trained on: {source.get('name')}\n"
        f"Source: {source.get('url')}\n"
        f"Terms of use: {terms}\n"
        f"Cite: {source.get('citation')}\n\n"
        "The terms of the data apply to the weights trained on them; check them before any use beyond research.\n"
    )


def export_bundle(
    bundle: Union[str, Path],
    output: Union[str, Path],
    checkpoint: Optional[Union[str, Path]] = None,
    configs: Sequence[Union[str, Path]] = (),
    overrides: Optional[Dict[str, Any]] = None,
    version: Optional[str] = None,
    changelog: Optional[str] = None,
    large_files_url: Optional[str] = None,
    overwrite: bool = False,
    supported_apps: Optional[Dict[str, str]] = None,
    local_only: bool = False,
) -> Path:
    """Export a trained bundle; see the module docstring.

    Args:
        bundle: the bundle folder whose configs to export.
        output: the exported bundle's folder (must not exist, or be empty, unless ``overwrite``).
        checkpoint: the trained weights (default ``<bundle>/models/model.pt``).
        configs: config files merged on the bundle's configs (settings the weights do not record).
        overrides: config values, as ``--set`` gives them.
        version: the export's version (default: the bundle's with the patch number increased).
        changelog: that version's changelog entry.
        large_files_url: base URL under which the weight files (and any file over 25 MB) will be published,
            each at ``<url>/<path in the bundle>``.
        overwrite: replace an existing export.
        supported_apps: the metadata's ``supported_apps`` (default: MONAI Label 0.8.5, which
            ``scripts/monailabel/check.py`` runs every bundle in).
        local_only: an export that keeps its weights and is not published: ``large_files.yml`` lists them
            without a URL.

    Raises:
        ExportError: missing weights, weights that do not fit, an existing output, no ``large_files_url``
            for an export that is not ``local_only``, or a failed check.
    """
    from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

    bundle, output = Path(bundle), Path(output)
    weights = Path(checkpoint) if checkpoint else bundle / "models" / "model.pt"
    if not weights.is_file():
        raise ExportError(f"{weights}: missing checkpoint (train the bundle first, or pass --checkpoint)")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"{output}: exists and is not empty (pass --overwrite to replace it)")
    if not large_files_url and not local_only:
        raise ExportError(
            f"{output}: no large_files_url: a model-zoo pull request leaves the weights out and fetches them from "
            "the URLs of large_files.yml; give the address they will be published under, or ask for a local_only "
            "export that keeps them"
        )
    configs = [Path(c) for c in configs]
    overrides = dict(overrides or {})
    for c in configs:
        if not c.is_file():
            raise ExportError(f"{c}: no such config file")
    check_overrides(
        [bundle / "configs" / "inference.json"] + configs, overrides
    )  # the keys segment accepts, of the same kinds

    # --------------------------------------------------------------------- settings the weights fit
    parser = _parser(bundle, weights, configs, overrides)
    merged = ConfigParser(
        ConfigParser.load_config_files([str(bundle / "configs" / "inference.json")] + [str(c) for c in configs])
    )
    merged.update({k: v for k, v in overrides.items() if k not in ("bundle_root", "checkpoint", "device")})
    raw_inference = merged.get()
    source_inference = json.loads((bundle / "configs" / "inference.json").read_text())
    hooked = _hooked(source_inference)
    try:
        values = {k: _plain(parser.get_parsed_content(k)) for k in hooked}
        network = parser.get_parsed_content("network_def")
        io = (
            int(parser.get_parsed_content("network_in_channels")),
            int(parser.get_parsed_content("network_out_channels")),
        )
    except Exception as e:
        raise ExportError(
            f"{bundle / 'configs' / 'inference.json'}: does not parse with these settings ({first_line(e)})"
        ) from e
    try:
        state = load_state(weights)
        record = record_of(state)
        check_fits(weights, state, network, values)
    except ValueError as e:
        raise ExportError(str(e)) from e
    names = {str(k): str(v) for k, v in values.get("class_names", {}).items()}

    tmp = output.with_name(f".{output.name}.export-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "configs").mkdir(parents=True)
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        defaults = {
            k: source_inference[k] for k in ("dataset_dir", "datalist_file", "output_dir") if k in source_inference
        }
        inference = _bake(raw_inference, values, defaults)
        (tmp / "configs" / "inference.json").write_text(_dump(inference))
        train = json.loads((bundle / "configs" / "train.json").read_text())
        train = _bake(train, {k: v for k, v in values.items() if k in train}, {})
        (tmp / "configs" / "train.json").write_text(_dump(train))
        for name in ("evaluate.json", "multi_gpu_train.json", "logging.conf"):
            if (bundle / "configs" / name).is_file():
                shutil.copyfile(bundle / "configs" / name, tmp / "configs" / name)

        # ------------------------------------------------------------------------------ weights
        shutil.copyfile(weights, tmp / "models" / "model.pt")
        (tmp / "models" / SETTINGS_FILE).write_text(
            _dump(
                {
                    "_desc_": "the settings the weights were trained with",
                    **values,
                    "trained_run": {k: v for k, v in (record or {}).items() if k != "settings"},
                }
            )
        )
        patch = list(values.get("patch_size") or [])
        network.load_state_dict(state)
        program = _program(network, io[0], patch, tmp / "models" / "model.pt2")
        batch = int(values.get("sw_batch_size") or 1)
        compiled = _compiled(network, io[0], patch, batch, tmp / "models" / "compiled", _calibration(parser))
        large = _large_files(tmp, large_files_url)

        # ------------------------------------------------------------------------------- code
        modules = _modules([inference, train])
        requirements = _requirements(_copy_modules(modules, tmp))
        _format_code(tmp / PACKAGE.name)

        # --------------------------------------------------------------------------- metadata
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        old_version = meta["version"]
        meta["version"] = version or _bump(old_version)
        metric = (record or {}).get("metric") or {}
        trained = ", ".join(f"{k} {json.dumps(v)}" for k, v in values.items() if k in ("spatial_dims", "class_names"))
        entry = changelog or (
            f"trained weights ({trained}"
            + (f"; {metric['name']} {metric['value']:.4f}" if metric.get("value") is not None else "")
            + f"), exported from {old_version}"
        )
        meta["changelog"] = {
            meta["version"]: entry,
            **{k: v for k, v in meta.get("changelog", {}).items() if k != meta["version"]},
        }
        pins = {k: v for k, v in meta.get("required_packages_version", {}).items() if k not in _NOT_REQUIREMENTS}
        pins.update({k: v for k, v in requirements.items() if k.lower() not in _NOT_REQUIREMENTS})
        extras = {k: v for k, v in pins.items() if k.lower() in OPTIONAL_PACKAGES}
        meta["required_packages_version"] = dict(sorted((k, v) for k, v in pins.items() if k not in extras))
        meta["supported_apps"] = supported_apps if supported_apps is not None else {"monai-label": "0.8.5"}
        meta["eval_metrics"] = _eval_metrics(weights)
        if not meta["eval_metrics"]:
            logger.warning(
                "no evaluation beside the weights (%s): eval_metrics is empty; run evaluate.json on the run "
                "and export again to publish its scores",
                weights.parent.parent / "eval" / "metrics_summary.json",
            )
        fmt = meta["network_data_format"]
        image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
        default_names = [v for _, v in sorted(pred.get("channel_def", {}).items())]
        image["num_channels"], pred["num_channels"] = io
        image["spatial_shape"] = pred["spatial_shape"] = list(values.get("patch_size", image["spatial_shape"]))
        if len(image.get("channel_def", {})) != io[0]:
            image["channel_def"] = {str(i): f"channel {i}" for i in range(io[0])}
        if names:
            pred["channel_def"] = names
        relabelled = bool(names) and list(names.values()) != default_names
        if relabelled:
            meta["label_classes"] = ", ".join(f"{k} {v}" for k, v in names.items())
            meta["pred_classes"] = (
                f"{io[1]} channels (the label map holds {', '.join(f'{k} {v}' for k, v in names.items())})"
            )
        source = (record or {}).get("data_source")
        if source:
            meta["data_source"] = f"{source.get('name')}: {source.get('url')}"
            (tmp / "docs" / "data_license.txt").write_text(_data_license(source))
        elif relabelled:
            meta["data_source"] = "the trainer's own data (the training run names no public data set)"
        (tmp / "configs" / "metadata.json").write_text(_dump(meta))

        # ------------------------------------------------------------------------- docs, licence
        shutil.copyfile(bundle / "LICENSE", tmp / "LICENSE")
        source_readme = bundle / "docs" / "README.md"
        readme = _readme(
            source_readme.read_text() if source_readme.is_file() else f"# {meta.get('name')}\n",
            bundle.name,
            meta,
            values,
            local_only,
            f"{program} {compiled}".strip(),
            extras,
        )
        (tmp / "docs" / "README.md").write_text(readme)

        # -------------------------------------------------------------------------------- checks
        schema = shipped("schemas") / SCHEMA
        if schema.is_file():
            verify_metadata(meta_file=str(tmp / "configs" / "metadata.json"), filepath=str(schema))
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(tmp / "configs" / "metadata.json"),
            config_file=str(tmp / "configs" / "inference.json"),
            bundle_root=str(tmp),
            device="cpu",
        )

        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info(
        "exported %s (%s) to %s: %d monai_ext module(s), %d large file(s)",
        bundle.name,
        weights,
        output,
        len(modules),
        len(large),
    )
    return output
