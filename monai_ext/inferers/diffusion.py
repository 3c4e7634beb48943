"""Diffusion segmentation on MONAI's schedulers: training batches and a sampler with uncertainty maps.

The three parts stay apart, as in diffusers and MONAI: the network predicts (noise or the clean mask) and
knows nothing about steps; the scheduler (MONAI's ``DDPMScheduler`` / ``DDIMScheduler``) knows nothing
about images; :class:`DiffusionSegmentationInferer` runs the loop.

- :class:`SegmentationDiffusionPrepareBatch` turns a ``{"image", "label"}`` batch into MONAI's diffusion
  training call: the mask, scaled to [-1, 1], is what gets noised; the image is the condition,
  concatenated to the noisy mask (``DiffusionInferer`` in ``"concat"`` mode).
- :class:`DiffusionSegmentationInferer` samples an ensemble of masks for each image: the image is encoded
  once, all members go through one network call per step, the noise comes from a seeded generator. It
  returns the ensemble's mean foreground probability, its per-voxel variance and the entropy of the mean
  (and, optionally, ITK's STAPLE estimate), and runs inside the sliding window for large inputs, each
  window diffused with its image window as the condition.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import Inferer
from monai.networks.schedulers import DDIMScheduler
from tqdm import tqdm

from monai_ext.inferers.streaming import StreamingSlidingWindowInferer

__all__ = ["mask_to_diffusion", "SegmentationDiffusionPrepareBatch", "DiffusionSegmentationInferer", "OUTPUT_MAPS"]

OUTPUT_MAPS = ("probability", "variance", "entropy", "staple")


def mask_to_diffusion(label: torch.Tensor, mask_channels: int) -> torch.Tensor:
    """A label map ``(B, 1, ...)`` of class indices as the diffused variable ``(B, mask_channels, ...)`` in {-1, 1}:
    one channel = foreground (label > 0); K channels = the one-hot masks of classes 1..K."""
    labels = label[:, 0].long()
    if mask_channels == 1:
        mask = (labels > 0).unsqueeze(1)
    else:
        mask = F.one_hot(labels.clamp(0, mask_channels), mask_channels + 1)[..., 1:].movedim(-1, 1)
    return mask.float() * 2 - 1


class SegmentationDiffusionPrepareBatch(DiffusionPrepareBatch):
    """Diffusion training batches for segmentation (use with MONAI's ``DiffusionInferer`` and an MSE loss).

    Args:
        num_train_timesteps: the scheduler's number of training steps (timesteps are drawn uniformly).
        mask_channels: channels of the diffused mask (see :func:`mask_to_diffusion`).
        prediction_type: ``"epsilon"`` (the target is the noise, the paper's loss) or ``"sample"`` (the clean
            mask); must match the scheduler's.
        image_key: key of the image (the condition).
        label_key: key of the label map.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        mask_channels: int = 1,
        prediction_type: str = "epsilon",
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(num_train_timesteps)
        if prediction_type not in ("epsilon", "sample"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'sample', got {prediction_type!r}.")
        self.mask_channels = mask_channels
        self.prediction_type = prediction_type
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs: Any):
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking)
        mask = mask_to_diffusion(
            batchdata[self.label_key].to(device=device, non_blocking=non_blocking), self.mask_channels
        )
        noise = self.get_noise(mask)
        timesteps = self.get_timesteps(mask)
        target = noise if self.prediction_type == "epsilon" else mask
        return mask, target, (), {"noise": noise, "timesteps": timesteps, "condition": image, "mode": "concat"}


class DiffusionSegmentationInferer(Inferer):
    """Sample an ensemble of masks per image and summarise it.

    Args:
        scheduler: a MONAI ``DDPMScheduler`` or ``DDIMScheduler`` configured as in training (steps, schedule,
            prediction type; ``clip_sample`` keeps predictions in [-1, 1]).
        num_inference_steps: sampling steps (default: every training step, e.g. 1000 for DDPM).
        ensemble: samples per image (5 in the official README), all in one network call per step.
        eta: DDIM's noise scale (0: deterministic given the starting noise).
        seed: seeds the starting noise and every step's noise; ``None``: PyTorch's global generator.
        maps: which maps to return, in this order of channel groups: ``"probability"`` (mean of the members'
            ``(x_0 + 1) / 2``), ``"variance"`` (across members), ``"entropy"`` (binary entropy of the mean,
            nats), ``"staple"`` (ITK's STAPLE on the members thresholded at 0.5).
        roi_size: window of the network; larger inputs are sampled window by window in
            :class:`StreamingSlidingWindowInferer` (``sw_batch_size``, ``overlap``, Gaussian blending); a 2D
            window on a volume samples the volume slice by slice along ``spatial_dim``.
        progress: show a progress bar over the steps.

    ``__call__(image, network)`` returns ``(B, len(maps) * mask_channels, *spatial)``;
    :meth:`sample` returns the members ``(B, ensemble, mask_channels, *spatial)`` as probabilities.
    """

    def __init__(
        self,
        scheduler: Any,
        num_inference_steps: Optional[int] = None,
        ensemble: int = 5,
        eta: float = 0.0,
        seed: Optional[int] = None,
        maps: Sequence[str] = ("probability", "variance", "entropy"),
        roi_size: Optional[Union[Sequence[int], int]] = None,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        progress: bool = False,
        spatial_dim: int = 2,
    ) -> None:
        super().__init__()
        if ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {ensemble}.")
        unknown = [m for m in maps if m not in OUTPUT_MAPS]
        if unknown or not maps:
            raise ValueError(f"maps must be a non-empty choice of {OUTPUT_MAPS}, got {list(maps)}.")
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps or scheduler.num_train_timesteps
        self.ensemble = ensemble
        self.eta = eta
        self.seed = seed
        self.maps = list(maps)
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.progress = progress
        self.spatial_dim = spatial_dim

    def _generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)
        return generator

    @torch.no_grad()
    def sample(
        self, image: torch.Tensor, network: Callable[..., torch.Tensor], generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """The ensemble ``(B, ensemble, mask_channels, *spatial)`` of sampled masks as probabilities in [0, 1].

        The noise comes from ``generator``, or from a new one seeded with ``seed`` (the global generator when
        there is no seed).
        """
        if generator is None:
            generator = self._generator(image.device)
        model = getattr(network, "module", network)  # DistributedDataParallel
        channels = getattr(model, "mask_channels", 1)
        b, n = image.shape[0], self.ensemble
        features = model.encode_image(image) if hasattr(model, "encode_image") else None
        x = torch.randn([b * n, channels] + list(image.shape[2:]), generator=generator, device=image.device)
        self.scheduler.set_timesteps(self.num_inference_steps, device=image.device)
        repeated = None if features is not None else image.repeat_interleave(n, dim=0)
        for t in tqdm(self.scheduler.timesteps, desc="diffusion", disable=not self.progress):
            steps = torch.full((b * n,), int(t), device=image.device, dtype=torch.long)
            if features is not None:
                out = model.denoise(x, steps, features)
            else:
                out = network(torch.cat([x, repeated], dim=1), steps)
            if isinstance(self.scheduler, DDIMScheduler):
                x = self.scheduler.step(out, int(t), x, eta=self.eta, generator=generator)[0]
            else:
                x = self.scheduler.step(out, int(t), x, generator=generator)[0]
        return ((x.clamp(-1, 1) + 1) / 2).reshape([b, n, channels] + list(image.shape[2:]))

    def summarise(self, members: torch.Tensor) -> torch.Tensor:
        """The requested maps of an ensemble ``(B, N, C, ...)``, concatenated on the channels."""
        mean = members.mean(1)
        out = []
        for name in self.maps:
            if name == "probability":
                out.append(mean)
            elif name == "variance":
                out.append(members.var(1, unbiased=False))
            elif name == "entropy":
                p = mean.clamp(1e-6, 1 - 1e-6)
                out.append(-(p * p.log() + (1 - p) * (1 - p).log()) * (mean > 1e-6) * (mean < 1 - 1e-6))
            else:
                out.append(staple(members > 0.5))
        return torch.cat(out, dim=1)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        image = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        generator = self._generator(image.device)  # one stream of noise through all windows, in window order

        def window(w: torch.Tensor) -> torch.Tensor:
            return self.summarise(self.sample(w, network, generator))

        roi = (
            None
            if self.roi_size is None
            else list(
                np.broadcast_to(self.roi_size, (image.dim() - 2,)) if np.ndim(self.roi_size) == 0 else self.roi_size
            )
        )
        if roi is None or roi == list(image.shape[2:]):
            out = window(image)
        else:
            out = StreamingSlidingWindowInferer(
                roi, self.sw_batch_size, self.overlap, "gaussian", spatial_dim=self.spatial_dim
            )(image, window)
        if isinstance(inputs, MetaTensor):  # keep the image's metadata (file name, affine), as MONAI's inferers do
            out = MetaTensor(out, meta=inputs.meta)
        return out


def staple(members: torch.Tensor) -> torch.Tensor:
    """ITK's STAPLE (Warfield et al. 2004) over binary members ``(B, N, C, ...)``: ``(B, C, ...)`` probabilities."""
    import itk

    out = torch.zeros(members.shape[:1] + members.shape[2:], dtype=torch.float32)
    ndim = members.dim() - 3
    for b in range(members.shape[0]):
        for c in range(members.shape[2]):
            votes = members[b, :, c].cpu().numpy().astype(np.float32)
            if (votes == votes[0]).all():  # the raters agree everywhere: STAPLE is their vote
                out[b, c] = torch.from_numpy(votes[0])
                continue
            image_type = itk.Image[itk.F, ndim]  # the pixel type ITK wraps the filter for
            filt = itk.STAPLEImageFilter[image_type, image_type].New()
            for i, vote in enumerate(votes):
                filt.SetInput(i, itk.image_from_array(np.ascontiguousarray(vote)))
            filt.SetForegroundValue(1.0)
            filt.Update()
            out[b, c] = torch.from_numpy(itk.array_from_image(filt.GetOutput()).astype(np.float32))
    return out.to(members.device)
