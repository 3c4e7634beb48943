"""What a trained bundle knows about itself: the settings its weights were trained with.

A checkpoint written by :class:`monai_ext.handlers.BundleCheckpointSaver` is a plain state dict (the bundle
spec's ``models/model.pt``) whose root metadata (``state_dict._metadata[""]``, which ``torch.save`` and
``torch.load(weights_only=True)`` keep and ``load_state_dict`` ignores) carries a record:

- ``settings``: every value inference needs that training may have changed (spatial dims, channels, label
  names, patch, spacing, intensity settings, a diffusion schedule, ...), whatever overlay or override set it;
- ``fingerprint``: a SHA-256 of the network's structure (parameter and buffer names, shapes, dtypes).

A bundle's ``inference.json`` reads the settings through :class:`TrainedSettings`
(``"spatial_dims": "$@trained.get('spatial_dims', 2)"``), so ``python -m monai.bundle run``, MONAI Label and
``python -m monai_ext segment`` all rebuild the trained pipeline without a setting repeated by hand. The
same settings are written beside the weights as ``models/trained.json``, a config overlay people can read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from monai_ext.errors import ReportedError

__all__ = [
    "RECORD_KEY",
    "SETTINGS_FILE",
    "TrainedSettings",
    "SettingsMismatch",
    "fingerprint",
    "read_record",
    "with_record",
    "check_fits",
    "differing_settings",
    "record_of",
    "load_state",
    "unloadable",
]

logger = logging.getLogger("monai_ext.bundle")
RECORD_KEY = "monai_ext"
SETTINGS_FILE = "trained.json"


class SettingsMismatch(ReportedError, ValueError):
    """Weights and configured network disagree; the message names the setting, in one line."""


def _structure(state: Mapping[str, torch.Tensor]) -> list:
    return [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items() if isinstance(v, torch.Tensor)
    ]


def fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's structure: names, shapes and dtypes, not values."""
    return hashlib.sha256(json.dumps(_structure(state)).encode()).hexdigest()


def with_record(state: Dict[str, torch.Tensor], settings: Mapping[str, Any], **extra: Any) -> Dict[str, torch.Tensor]:
    """``state`` with the record (settings, fingerprint and ``extra``) in its root metadata."""
    metadata = getattr(state, "_metadata", None)
    if metadata is None:
        from collections import OrderedDict

        state = OrderedDict(state)
        metadata = state._metadata = OrderedDict()  # type: ignore[attr-defined]
    root = dict(metadata.get("", {}))
    root[RECORD_KEY] = json.dumps({"settings": dict(settings), "fingerprint": fingerprint(state), **extra})
    metadata[""] = root
    return state


def load_state(checkpoint: Union[str, Path], mmap: bool = False) -> Dict[str, torch.Tensor]:
    """A checkpoint's state dict (MONAI's ``{"model": state_dict}`` unwrapped), loaded with ``weights_only=True``.

    ``mmap`` maps the file instead of reading it (for the record of a large checkpoint); a checkpoint in
    torch's legacy format, which cannot be mapped, is read.

    Raises:
        ValueError: one line naming the file, when it is not a loadable checkpoint.
    """
    path = Path(checkpoint)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for corrupt or foreign files
        raise ValueError(unloadable(path, e)) from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("network"), dict) and "trainer" in state:
        state = state["network"]  # a training state (last.pt)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no weights (a PyTorch file, but not a state dict of tensors)")
    return state


def unloadable(path: Path, e: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file."""
    import re

    text = str(e)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found or "Unsupported global" in text:
        what = f" ({found.group(1)})" if found else ""
        return (
            f"{path}: holds pickled Python objects{what} besides weights, which are not loaded because unpickling could run code; "
            "save the network's state dict alone, torch.save(network.state_dict(), path), where it was trained"
        )
    if path.is_file() and path.stat().st_size == 0:
        return f"{path}: an empty file, not a checkpoint"
    if isinstance(e, (IsADirectoryError, PermissionError, FileNotFoundError)):
        return f"{path}: unreadable ({getattr(e, 'strerror', None) or e})"
    head = path.read_bytes()[:4] if path.is_file() else b""
    if head.startswith(b"PK\x03\x04"):
        return f"{path}: a damaged or truncated checkpoint (its zip archive does not read)"
    return f"{path}: not a PyTorch checkpoint (its content is neither a torch archive nor a legacy torch file)"


def read_record(checkpoint: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The record of a checkpoint file, or ``None`` when it has none (plain weights) or does not exist.

    Raises:
        ValueError: the file exists but is not a loadable checkpoint.
    """
    path = Path(checkpoint)
    return record_of(load_state(path, mmap=True)) if path.is_file() else None


def record_of(state: Any) -> Optional[Dict[str, Any]]:
    """The record carried by a state dict (as :func:`load_state` returns it), or ``None``."""
    metadata = getattr(state, "_metadata", None) or {}
    text = metadata.get("", {}).get(RECORD_KEY)
    return json.loads(text) if text else None


class TrainedSettings:
    """The settings a checkpoint was trained with, for a bundle config to read.

    ``"trained": "$monai_ext.bundle.TrainedSettings(@checkpoint)"`` then
    ``"spatial_dims": "$@trained.get('spatial_dims', 2)"``: the trained value when the checkpoint carries
    one, else the default. A value given on the command line or in an overlay replaces the whole
    expression, as any config override does (``segment`` then checks that the weights still fit).

    Args:
        checkpoint: the weights file (it need not exist: an untrained bundle gets its defaults).
    """

    def __init__(self, checkpoint: Union[str, Path]) -> None:
        self.checkpoint = Path(checkpoint)
        try:
            self.record = read_record(self.checkpoint) or {}
        except ValueError as e:  # the weights loader reports the file when it is loaded; the config still parses
            logger.warning("%s", e)
            self.record = {}

    @property
    def settings(self) -> Dict[str, Any]:
        return self.record.get("settings", {})

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.settings[key]) if key in self.settings else default

    def __contains__(self, key: str) -> bool:
        return key in self.settings

    def __repr__(self) -> str:
        return f"TrainedSettings({str(self.checkpoint)!r}: {sorted(self.settings)})"


def check_fits(
    checkpoint: Union[str, Path],
    state: Mapping[str, torch.Tensor],
    network: torch.nn.Module,
    configured: Mapping[str, Any],
) -> None:
    """Check that weights fit the configured network before loading them.

    Args:
        checkpoint: the file, for the message.
        state: the loaded state dict.
        network: the configured network.
        configured: the configured values of the settings (id -> value).

    Raises:
        SettingsMismatch: the structures differ; the message names the settings whose trained and
            configured values differ, or the first parameter that differs when no recorded setting does.
    """
    expected = network.state_dict()
    if fingerprint(state) == fingerprint(expected):
        return
    differ = differing_settings(record_of(state), configured)
    if differ:
        pairs = "; ".join(f"{k}: trained {json.dumps(t)}, configured {json.dumps(c)}" for k, (t, c) in differ.items())
        raise SettingsMismatch(
            f"{checkpoint}: weights do not fit the configured network ({pairs}); drop the override or overlay that changes it"
        )
    mine, theirs = {n: s for n, s, _ in _structure(expected)}, {n: s for n, s, _ in _structure(state)}
    missing = [n for n in mine if n not in theirs]
    unexpected = [n for n in theirs if n not in mine]
    shaped = [n for n in mine if n in theirs and mine[n] != theirs[n]]
    if shaped:
        n = shaped[0]
        detail = f"{n} has shape {theirs[n]} in the weights, {mine[n]} in the configured network"
    elif missing or unexpected:
        detail = (
            f"{len(missing)} parameter(s) missing (e.g. {missing[0]})"
            if missing
            else f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"
        )
    else:
        return  # same structure; the record was written for a different but equally shaped network
    raise SettingsMismatch(
        f"{checkpoint}: weights do not fit the configured network ({detail}); give the settings it was trained with"
    )


def differing_settings(record: Optional[Mapping[str, Any]], configured: Mapping[str, Any]) -> Dict[str, tuple]:
    """``{id: (trained, configured)}`` for every recorded setting whose configured value differs."""
    trained = (record or {}).get("settings", {})
    return {k: (v, _plain(configured[k])) for k, v in trained.items() if k in configured and _plain(configured[k]) != v}


def _plain(value: Any) -> Any:
    """A configured value as JSON data (tuples to lists), for comparison with a record."""
    return json.loads(json.dumps(value, default=str))
