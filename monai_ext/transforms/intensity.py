"""Intensity normalisation described by data, so that a trained bundle can record it and replay it.

A data set's intensity settings are a small dictionary (``{"scheme": "zscore", "nonzero": true}``), the way
nnU-Net's plans name a normalisation scheme per channel, rather than a transform config: a trained
bundle stores the dictionary beside its weights and inference rebuilds the same transform from it.
"""

from __future__ import annotations

from typing import Dict, Hashable, Mapping, Optional

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, ScaleIntensityRange

__all__ = ["IntensityNormalizationd", "SCHEMES"]

SCHEMES = ("zscore", "window", "none")


class IntensityNormalizationd(MapTransform):
    """Normalise image intensities by a named scheme (MONAI's transforms underneath).

    Args:
        keys: image keys.
        scheme: ``"zscore"`` (MONAI ``NormalizeIntensity``: subtract the mean, divide by the standard
            deviation), ``"window"`` (MONAI ``ScaleIntensityRange``: ``[a_min, a_max]`` to ``[0, 1]``, clipped;
            e.g. a CT window in HU), or ``"none"``.
        nonzero: z-score over non-zero voxels only (e.g. skull-stripped MR), others left at 0.
        channel_wise: z-score each channel on its own.
        a_min: lower end of the window (``"window"``).
        a_max: upper end of the window (``"window"``).
        channels: keep only the first ``channels`` channels first (grey images stored as RGB).

    Raises:
        ValueError: an unknown scheme, a window without ``a_min < a_max``, or ``channels < 1``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scheme: str = "zscore",
        nonzero: bool = False,
        channel_wise: bool = True,
        a_min: Optional[float] = None,
        a_max: Optional[float] = None,
        channels: Optional[int] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
        if scheme == "window" and (a_min is None or a_max is None or not a_min < a_max):
            raise ValueError(f"the window scheme needs a_min < a_max, got a_min={a_min}, a_max={a_max}.")
        if channels is not None and channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        self.channels = channels
        if scheme == "zscore":
            self.transform = NormalizeIntensity(nonzero=nonzero, channel_wise=channel_wise)
        elif scheme == "window":
            self.transform = ScaleIntensityRange(a_min, a_max, 0.0, 1.0, clip=True)
        else:
            self.transform = None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if self.channels is not None:
                image = image[: self.channels]
            d[key] = self.transform(image) if self.transform is not None else image
        return d
