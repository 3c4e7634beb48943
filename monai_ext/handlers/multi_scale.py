"""Multi-scale training (PraNet's recipe): each training batch resized to the next of a few rates in turn."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["MultiScaleTraining"]


class MultiScaleTraining:
    """Attach to a MONAI ``SupervisedTrainer``: before each iteration, resize the batch's ``image`` and ``label``
    to the next rate of ``rates`` in turn (PraNet, Fan et al., MICCAI 2020, ``MyTrain.py``: rates 0.75, 1, 1.25,
    sizes rounded to a multiple of 32; MADGNet's authors trained with PraNet's script).

    The size at rate ``r`` of a spatial size ``s`` is ``round(s * r / multiple) * multiple`` (halves rounded up,
    where PraNet's Python ``round`` rounds them to even; at least ``multiple``). Images are resized
    (bi/tri)linearly with aligned corners, as PraNet does; labels,
    which here are class indices, by nearest neighbour so that they stay classes.

    PraNet trains every batch at all rates, one optimiser step each; here each batch takes the next rate, so
    there are as many steps at each rate and each step costs what one of PraNet's does. Validation and
    inference are not touched.

    Args:
        rates: the rates, used in this order; ``None`` or only 1: the handler does nothing.
        multiple: sizes are rounded to a multiple of this (the network's total downsampling).
        image_key: the batch key of the image.
        label_key: the batch key of the label map.
    """

    def __init__(
        self,
        rates: Optional[Sequence[float]] = (0.75, 1.0, 1.25),
        multiple: int = 32,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        self.rates = tuple(float(r) for r in rates) if rates else ()
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates must be positive, got {rates}.")
        if multiple < 1:
            raise ValueError(f"multiple must be at least 1, got {multiple}.")
        self.multiple = int(multiple)
        self.image_key = image_key
        self.label_key = label_key

    def attach(self, engine) -> None:
        if not self.rates or all(r == 1.0 for r in self.rates):
            return
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def size(self, spatial: Sequence[int], rate: float) -> Tuple[int, ...]:
        """The spatial size at ``rate``."""
        m = self.multiple
        return tuple(max(m, int(math.floor(s * rate / m + 0.5)) * m) for s in spatial)

    def __call__(self, engine) -> None:
        batch = engine.state.batch
        rate = self.rates[(engine.state.iteration - 1) % len(self.rates)]
        image = batch[self.image_key]
        spatial = tuple(image.shape[2:])
        size = self.size(spatial, rate)
        if size == spatial:
            return
        mode = "bilinear" if len(size) == 2 else "trilinear"
        batch = engine.state.batch = dict(batch)  # a new batch: the loader's may be reused (a list, a cache)
        batch[self.image_key] = F.interpolate(_plain(image).float(), size=size, mode=mode, align_corners=True).to(
            image.dtype
        )
        if self.label_key in batch and isinstance(batch[self.label_key], torch.Tensor):
            label = batch[self.label_key]
            batch[self.label_key] = F.interpolate(_plain(label).float(), size=size, mode="nearest").to(label.dtype)


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A plain tensor: the resized batch no longer matches the MetaTensor's affine."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x
