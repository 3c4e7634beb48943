"""The authors' published MADGNet checkpoint (``Inha-CVAI/MADGNet``) as weights of :class:`MADGNet`.

The official model has exactly our architecture (every module's parameter count equal) but other names and
two differences of form, which :func:`convert_official_state_dict` undoes:

- MFCA's shared MLP is a pair of 1x1 convolutions there, ``Linear`` layers here: the ``(out, in, 1, 1)``
  kernels become ``(out, in)`` matrices;
- the official file stores MFCA's DCT bases as 192 buffers (``dct_weight_<k>``, one ``(C, H, W)`` copy per
  branch and frequency); we compute them, so each is checked against ours (the same frequencies in the same
  order, equal to 1e-5) and dropped;
- the official head predicts one binary map (``num_classes=1``, a sigmoid); our bundles take channel 0 as
  background and the arg-max over channels, so a background channel whose logit is 0 everywhere is added:
  ``argmax(0, z) = [sigmoid(z) > 0.5]``, the official decision, and ``softmax(0, z)[1] = sigmoid(z)``.

The official names, by module (``MFMSNet`` in ``IS2D_models/mfmsnet.py``):

==================================================================  ==============================================
official                                                            ours
==================================================================  ==============================================
``feature_encoding.<ResNeSt-50>``                                   ``encoder.<ResNeSt>`` (:func:`convert_resnest_state_dict`)
``skip_connection<i>.<0|1>``                                        ``skips.<i-1>.<0|1>``
``decoder_stage<i>.conv<1|2>``                                      ``decoder.<i-1>.conv<1|2>``
``decoder_stage<i>.attention_layer.multi_scale_branches.<s>.<j>``   ``decoder.<i-1>.attention.branches.<s>.features.<j>``
``... .multi_frequency_branches.<s>.0.fc.<0|2>``                    ``... .branches.<s>.mfca.mlp.<0|2>``
``... .multi_frequency_branches_conv1.<s>.0``                       ``... .branches.<s>.spatial.0``
``... .multi_frequency_branches_conv2.<s>.<0|1>``                   ``... .branches.<s>.project.<0|1>``
``... .alpha_list.<s>``, ``... .beta_list.<s>``                     ``... .branches.<s>.alpha``, ``.beta``
``sub_decoder_stage<i>.output_<map|distance|boundary>_conv``        ``heads.<i-1>.<region|distance|boundary>``
==================================================================  ==============================================
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Union

import torch

from monai_ext.errors import ReportedError, first_line
from monai_ext.networks.blocks.dct_attention import dct_basis, dct_frequencies
from monai_ext.networks.nets.madgnet import MADGNet, convert_resnest_state_dict, official_dct_size

__all__ = ["OfficialCheckpointError", "OFFICIAL_SETTINGS", "convert_official_state_dict", "load_official_checkpoint"]

# the official test path: 352x352 (a multiple of 32), resize then ToTensor (8-bit values to [0, 1]), RGB input
OFFICIAL_SETTINGS = {
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 2,
    "backbone": "resnest50",
    "patch_size": [352, 352],
    "resize": [352, 352],
    "intensity": {"scheme": "window", "a_min": 0.0, "a_max": 255.0},
}
DECODER_CHANNELS = (256, 128, 64, 32)
_HEADS = {"map": "region", "distance": "distance", "boundary": "boundary"}
_BRANCH_PARTS = {
    "multi_scale_branches": "features",
    "multi_frequency_branches_conv1": "spatial",
    "multi_frequency_branches_conv2": "project",
}


class OfficialCheckpointError(ReportedError, ValueError):
    """The file is not the official MADGNet checkpoint (or a state dict with its names and shapes)."""


def _official_bases() -> Dict[int, torch.Tensor]:
    """Our MFCA bases (``top16`` on the official width-keyed grid), by decoder width: ``(16, H, W)``."""
    bases = {}
    for width in DECODER_CHANNELS:
        size = [official_dct_size(width)] * 2
        bases[width] = dct_basis(size, dct_frequencies("top16", 2, size)).float()
    return bases


def _rename(key: str) -> str:
    """Our name for an official key (DCT buffers excluded)."""
    if key.startswith("feature_encoding."):
        return "encoder." + next(iter(convert_resnest_state_dict({key[len("feature_encoding.") :]: None})), "")
    key = re.sub(r"^skip_connection(\d)\.", lambda m: f"skips.{int(m.group(1)) - 1}.", key)
    key = re.sub(r"^sub_decoder_stage(\d)\.output_(map|distance|boundary)_conv\.", _head, key)
    key = re.sub(r"^decoder_stage(\d)\.", lambda m: f"decoder.{int(m.group(1)) - 1}.", key)
    key = key.replace(".attention_layer.", ".attention.")
    key = re.sub(r"\.(alpha|beta)_list\.(\d+)$", r".branches.\2.\1", key)
    key = re.sub(r"\.multi_frequency_branches\.(\d+)\.0\.fc\.", r".branches.\1.mfca.mlp.", key)
    for official, ours in _BRANCH_PARTS.items():
        key = re.sub(rf"\.{official}\.(\d+)\.", rf".branches.\1.{ours}.", key)
    return key


def _head(match: "re.Match[str]") -> str:
    return f"heads.{int(match.group(1)) - 1}.{_HEADS[match.group(2)]}."


def _check_basis(key: str, value: torch.Tensor, bases: Dict[int, torch.Tensor]) -> None:
    """An official DCT buffer must be our basis image of the same frequency, repeated over its channels."""
    found = re.match(r"^decoder_stage(\d)\..*\.dct_weight_(\d+)$", key)
    if found is None:
        raise OfficialCheckpointError(f"unexpected DCT buffer {key!r}")
    ours = bases[DECODER_CHANNELS[int(found.group(1)) - 1]][int(found.group(2))]
    if value.dim() != 3 or tuple(value.shape[1:]) != tuple(ours.shape):
        raise OfficialCheckpointError(
            f"{key}: shape {list(value.shape)}, expected (C, {', '.join(map(str, ours.shape))})"
        )
    if not torch.allclose(value.float(), ours.expand_as(value), atol=1e-5):
        raise OfficialCheckpointError(f"{key}: not the DCT basis our MFCA computes for this frequency")


def _with_background(key: str, value: torch.Tensor) -> torch.Tensor:
    """A head's one-class kernel or bias with a background channel in front whose final logit is 0:
    all-zero kernels, and a region bias of ``-sigmoid(0.5)`` that cancels ESDM's ``+ sigmoid(T_d)``
    (``T_d = 0 + sigmoid(0)`` for an all-zero background)."""
    background = torch.zeros_like(value[:1])
    if key.endswith("region.bias"):
        background.fill_(-torch.sigmoid(torch.tensor(0.5)).item())
    return torch.cat([background, value])


def convert_official_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our :class:`MADGNet` weights (2D, ResNeSt-50, ``out_channels=2``) from the official state dict.

    Raises:
        OfficialCheckpointError: a key that does not map, a missing key, a shape that differs, or a DCT buffer
            that is not our basis.
    """
    bases = _official_bases()
    renamed: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key  # saved from DataParallel
        if ".dct_weight_" in key:
            _check_basis(key, value, bases)
            continue
        if key.startswith("feature_encoding.fc."):
            continue  # the classifier, replaced by an identity in the official model
        ours = _rename(key)
        if ".mfca.mlp." in ours and value.dim() == 4:
            value = value.flatten(1)
        if ours.startswith("heads."):
            if value.shape[0] != 1:
                raise OfficialCheckpointError(f"{key}: {value.shape[0]} classes; the published model has one")
            value = _with_background(ours, value)
        renamed[ours] = value
    net = MADGNet(**{k: OFFICIAL_SETTINGS[k] for k in ("spatial_dims", "in_channels", "out_channels", "backbone")})
    expected = net.state_dict()
    missing = sorted(set(expected) - set(renamed))
    unknown = sorted(set(renamed) - set(expected))
    if missing or unknown:
        raise OfficialCheckpointError(
            f"not the official MADGNet: {len(missing)} weights missing (e.g. {missing[:2]}), "
            f"{len(unknown)} not ours (e.g. {unknown[:2]})"
        )
    for key, value in expected.items():
        if renamed[key].shape != value.shape:
            raise OfficialCheckpointError(f"{key}: shape {list(renamed[key].shape)}, ours {list(value.shape)}")
    net.load_state_dict(renamed)
    return net.state_dict()


def load_official_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read the published file (``{"model_state_dict": ...}``, or a bare state dict) with ``weights_only=True``
    and convert it (:func:`convert_official_state_dict`).

    Raises:
        OfficialCheckpointError: one line naming the file, when it cannot be read or converted.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for corrupt or foreign files
        raise OfficialCheckpointError(f"{path}: not a checkpoint torch loads as weights ({first_line(e)})") from e
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialCheckpointError(f"{path}: holds no state dict (expected a dict with 'model_state_dict')")
    try:
        return convert_official_state_dict(state)
    except OfficialCheckpointError as e:
        raise OfficialCheckpointError(f"{path}: {e}") from e
