"""Values a user sets on a bundle from outside its configs (``--set KEY=VALUE``, ``--device``), checked
against the bundle's own config before anything is built: one line naming the option and what is wrong.
``segment`` and ``export`` both check their overrides here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from monai_ext.errors import InputError

__all__ = ["check_overrides", "check_device"]


def check_device(name: str) -> torch.device:
    """The torch device ``name`` names, checked against this machine.

    Raises:
        InputError: not a device name, or a device this machine does not have (one line naming it).
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"--device {name}: not a device (cpu, cuda, cuda:N, mps)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise InputError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise InputError(f"--device {name}: {device.type} devices are not supported (cpu, cuda, cuda:N, mps)")
    return device


def _kind(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return "text"
    return None


def _constructor_argument(base, key: str) -> bool:
    """Whether ``key`` (``network_def#backbone_layers``) names an argument of the constructor of a component the
    config builds (its ``_target_``), which the config does not set."""
    import inspect
    import pydoc

    parent, _, name = key.rpartition("#")
    if not parent or parent not in base:
        return False
    component = base[parent]
    target = component.get("_target_") if isinstance(component, dict) else None
    if not isinstance(target, str):
        return False
    if "." not in target:  # a MONAI name, as the config resolves it
        from monai.bundle.config_item import ComponentLocator

        module = ComponentLocator().get_component_module_name(target)
        target = f"{module}.{target}" if isinstance(module, str) else target
    built = pydoc.locate(target)
    try:
        parameters = inspect.signature(built).parameters if built is not None else {}
    except (TypeError, ValueError):
        return False
    return name in parameters and parameters[name].kind not in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    )


def check_overrides(
    files: Sequence[Path], overrides: Mapping[str, Any], values: Optional[Mapping[str, Any]] = None
) -> None:
    """Check ``--set`` values (``overrides``) before the bundle is built from ``files`` with ``values`` (the
    other options already set): the key must exist in the bundle's config, and the value must be of the kind
    the bundle's own value is (and in range, for the settings every bundle has).

    Raises:
        InputError: one line naming the ``--set`` option and what is wrong.
    """
    if not overrides:
        return
    import difflib

    from monai.bundle import ConfigParser

    base = ConfigParser()
    base.read_config([str(f) for f in files])
    base.update({k: str(v) if isinstance(v, torch.device) else v for k, v in (values or {}).items()})
    for key, value in overrides.items():
        option = f"--set {key}={json.dumps(value)}"
        if key not in base and _constructor_argument(base, key):
            continue  # an argument the component's constructor takes and the config leaves at its default
        if key not in base:
            top = [k for k in base.get() if isinstance(k, str) and not k.startswith("_")]
            near = difflib.get_close_matches(key, top, n=1)
            raise InputError(
                f"{option}: the bundle's config has no {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
            )
        default = base[key]
        if isinstance(default, str) and default.startswith(("$", "@")):
            try:
                default = base.get_parsed_content(key)
            except Exception:  # an expression that needs more than the config: its kind is unknown
                default = None
        expected, got = _kind(default), _kind(value)
        if expected and got != expected:
            raise InputError(f"{option}: expected {expected}, like the bundle's {json.dumps(default, default=str)}")
        if (
            isinstance(default, int)
            and not isinstance(default, bool)
            and isinstance(value, float)
            and not value.is_integer()
        ):
            raise InputError(f"{option}: expected a whole number, like the bundle's {default}")
        if key == "device":
            check_device(str(value))
    dims = overrides.get("spatial_dims")
    if dims is not None and dims not in (2, 3):
        raise InputError(f"--set spatial_dims={json.dumps(dims)}: the bundles are 2D or 3D (2 or 3)")
    for key in ("in_channels", "out_channels"):
        if key in overrides and not (
            isinstance(overrides[key], int) and not isinstance(overrides[key], bool) and overrides[key] >= 1
        ):
            raise InputError(f"--set {key}={json.dumps(overrides[key])}: expected a whole number of at least 1")
    patch = overrides.get("patch_size")
    if patch is not None and not (
        isinstance(patch, list)
        and patch
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in patch)
    ):
        raise InputError(
            f"--set patch_size={json.dumps(patch)}: expected a list of whole numbers of at least 1, one per spatial axis"
        )
