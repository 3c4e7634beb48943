"""Post-processing of :class:`monai_ext.inferers.DiffusionSegmentationInferer`'s output."""

from __future__ import annotations

from typing import Dict, Hashable, Mapping, Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_ext.inferers.diffusion import OUTPUT_MAPS

__all__ = ["SplitDiffusionMapsd"]


class SplitDiffusionMapsd(MapTransform):
    """Split the sampler's stacked maps ``(len(maps) * K, ...)`` into named keys and derive the label map.

    ``<key>_<map>`` gets each map (``K`` channels: one per diffused mask channel); ``<key>`` becomes the label
    map ``(1, ...)``: 0 where every class's mean probability is below ``threshold``, otherwise 1 + the most
    probable class. The maps keep the input's metadata, so ``Invertd`` and ``SaveImaged`` treat them like
    ``<key>``.

    Args:
        keys: the sampler output's key (``"pred"``).
        maps: the sampler's ``maps``, in its order.
        threshold: foreground threshold on the mean probability (0.5).
    """

    def __init__(
        self, keys, maps: Sequence[str] = ("probability", "variance", "entropy"), threshold: float = 0.5
    ) -> None:
        super().__init__(keys)
        unknown = [m for m in maps if m not in OUTPUT_MAPS]
        if unknown or "probability" not in maps:
            raise ValueError(f"maps must be a choice of {OUTPUT_MAPS} that includes 'probability', got {list(maps)}.")
        self.maps = list(maps)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            stacked = d[key]
            k = stacked.shape[0] // len(self.maps)
            if k * len(self.maps) != stacked.shape[0]:
                raise ValueError(f"{key}: {stacked.shape[0]} channels do not split into maps {self.maps}.")
            plain = stacked.as_tensor() if isinstance(stacked, MetaTensor) else stacked
            for i, name in enumerate(self.maps):
                d[f"{key}_{name}"] = self._like(plain[i * k : (i + 1) * k], stacked)
            probability = (
                plain[:k] if self.maps[0] == "probability" else plain[self.maps.index("probability") * k :][:k]
            )
            background = torch.full_like(probability[:1], self.threshold)
            d[key] = self._like(torch.cat([background, probability]).argmax(0, keepdim=True).to(torch.float32), stacked)
        return d

    @staticmethod
    def _like(values: torch.Tensor, source) -> torch.Tensor:
        """``values`` with ``source``'s metadata (file name, affine, applied operations) when it has any."""
        if not isinstance(source, MetaTensor):
            return values
        out = MetaTensor(values)
        out.copy_meta_from(source, copy_attr=True)
        return out
