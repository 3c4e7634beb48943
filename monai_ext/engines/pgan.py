"""The parallel-GAN (pGAN) training of Hi-gMISnet as a MONAI / ignite engine."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys

from monai_ext.losses.reciprocal import ReciprocalLoss

__all__ = ["ParallelGANTrainer"]


class ParallelGANTrainer(Trainer):
    """Train ``G`` generator-discriminator pairs in parallel with a reciprocal loss (Hi-gMISnet's pGAN).

    Each iteration, with ``p_k = softmax(G_k(I))`` (sigmoid for one channel) and ``y`` the one-hot label
    (the generators run together, as the training-mode forward of ``network``; the discriminators too):

    1. **discriminators** (``d_steps`` times): ``L_D = mean_k [BCE(D_k(I, y), 1) + BCE(D_k(I, p_k), 0)] / 2``,
       ``p_k`` detached;
    2. **generators**: ``L_G = mean_k [adversarial_weight * BCE(D_k(I, p_k), 1) + seg_loss(G_k(I), y)]
       + reciprocal_weight * L_rec(G_1(I), ..., G_G(I))``.

    ``engine.state.output`` holds the image, label, the generators' fused prediction (``pred``, see
    :class:`~monai_ext.networks.nets.HiGMISnet`), ``loss`` (= ``L_G``), ``g_loss``, ``d_loss``, ``adversarial``,
    ``segmentation`` and ``reciprocal``; every standard MONAI handler works (checkpoints with
    ``save_dict`` including ``"trainer"`` resume at the saved iteration, validation, TensorBoard).

    Args:
        network: a :class:`~monai_ext.networks.nets.HiGMISnet` (its ``generators``).
        discriminator: a :class:`~monai_ext.networks.nets.PairedPatchDiscriminator` with one discriminator per
            generator.
        optimizer: the generators' optimiser; ``d_optimizer`` the discriminators'.
        loss_function: the segmentation loss of each generator (e.g. ``DiceCELoss(to_onehot_y=True, softmax=True)``).
        adversarial_weight, reciprocal_weight: the weights of the two other terms (0 turns a term off).
        num_classes: channels of the one-hot label the discriminators see.
        inferer: how a generator is run on the images (``SimpleInferer``).
        d_steps: discriminator updates per generator update.
        amp: automatic mixed precision on CUDA.
    """

    def __init__(
        self,
        device: torch.device,
        max_epochs: int,
        train_data_loader,
        network: torch.nn.Module,
        discriminator: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        num_classes: int,
        adversarial_weight: float = 1.0,
        reciprocal_weight: float = 1.0,
        inferer: Optional[Inferer] = None,
        d_steps: int = 1,
        epoch_length: Optional[int] = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Optional[Callable] = None,
        postprocessing: Optional[Callable] = None,
        key_train_metric: Optional[Dict] = None,
        additional_metrics: Optional[Dict] = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Optional[Sequence] = None,
        amp: bool = False,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: Optional[Dict] = None,
        amp_kwargs: Optional[Dict] = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        generators = len(getattr(network, "module", network).generators)
        discriminators = len(getattr(discriminator, "module", discriminator).discriminators)
        if discriminators != generators:
            raise ValueError(
                f"one discriminator per generator: {discriminators} discriminators, {generators} generators."
            )
        self.network = network
        self.discriminator = discriminator
        self.optimizer = optimizer
        self.d_optimizer = d_optimizer
        self.loss_function = loss_function
        self.reciprocal = ReciprocalLoss(getattr(network, "module", network).activation)
        self.spatial_shape: tuple = ()
        self.num_classes = num_classes
        self.adversarial_weight = adversarial_weight
        self.reciprocal_weight = reciprocal_weight
        self.inferer = inferer or SimpleInferer()
        self.d_steps = d_steps
        self.optim_set_to_none = optim_set_to_none
        self.scaler = torch.amp.GradScaler("cuda") if amp and torch.cuda.is_available() else None

    def _model(self, module: torch.nn.Module) -> torch.nn.Module:
        return getattr(module, "module", module)  # DistributedDataParallel

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of logits ``(B, [G,] C, ...)``; the class axis is the one after the generators'."""
        axis = logits.dim() - len(self.spatial_shape) - 1
        return (
            torch.softmax(logits, axis) if self._model(self.network).activation == "softmax" else torch.sigmoid(logits)
        )

    def _one_hot(self, label: torch.Tensor) -> torch.Tensor:
        if self._model(self.network).activation == "sigmoid" and self.num_classes == 1:
            return (label > 0).float()
        return F.one_hot(label[:, 0].long(), self.num_classes).movedim(-1, 1).float()

    def _autocast(self):
        return (
            torch.autocast("cuda", **self.amp_kwargs)
            if self.scaler is not None
            else torch.autocast("cpu", enabled=False)
        )

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, event: Any = None) -> None:
        """Backward and step; ``event`` is fired between the two (gradient clipping, as in MONAI's trainers)."""
        optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if event is not None:
                self.fire_event(event)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if event is not None:
                self.fire_event(event)
            optimizer.step()

    def _iteration(self, engine: "ParallelGANTrainer", batchdata: Dict[str, Any]) -> Dict[str, Any]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        image, label = batch[0], batch[1]  # (inputs, targets) or (inputs, targets, args, kwargs), as MONAI's
        engine.spatial_shape = tuple(image.shape[2:])
        target = engine._one_hot(label)
        engine.network.train()
        engine.discriminator.train()
        # every network runs once per backward (the generators stacked, the discriminators batched), so that
        # DistributedDataParallel can wrap both

        for _ in range(engine.d_steps):
            with torch.no_grad(), engine._autocast():
                fakes = engine._probabilities(engine.inferer(image, engine.network)).float()  # (B, G, C, ...)
            reals = target.unsqueeze(1).expand_as(fakes)
            with engine._autocast():
                scores = engine.discriminator(torch.cat([image, image]), torch.cat([reals, fakes]))
                real_score, fake_score = scores.split(image.shape[0])
                d_loss = 0.5 * (
                    F.binary_cross_entropy_with_logits(real_score, torch.ones_like(real_score))
                    + F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score))
                )
            engine._step(d_loss, engine.d_optimizer)

        with engine._autocast():
            logits = engine.inferer(image, engine.network)  # (B, G, C, ...)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            score = engine.discriminator(image, engine._probabilities(logits))
            adversarial = F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
            generators = logits.unbind(1)
            segmentation = sum(engine.loss_function(z, label) for z in generators) / len(generators)
            reciprocal = engine.reciprocal(logits) if len(generators) > 1 else torch.zeros((), device=image.device)
            g_loss = segmentation + engine.adversarial_weight * adversarial + engine.reciprocal_weight * reciprocal
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        # the generators' gradients are complete at BACKWARD_COMPLETED, before their step (clipping acts there); the
        # discriminators' gradients from this pass are cleared before their own step
        engine._step(g_loss, engine.optimizer, IterationEvents.BACKWARD_COMPLETED)

        with torch.no_grad():
            probabilities = engine._probabilities(logits.float()).mean(1)
            softmax = engine._model(engine.network).activation == "softmax"
            fused = torch.log(probabilities) if softmax else torch.logit(probabilities, eps=1e-6)
        engine.state.output = {
            Keys.IMAGE: image,
            Keys.LABEL: label,
            Keys.PRED: fused,
            Keys.LOSS: g_loss.detach(),
            "g_loss": g_loss.item(),
            "d_loss": float(d_loss.detach()),
            "adversarial": float(adversarial.detach()),
            "segmentation": float(segmentation.detach()),
            "reciprocal": float(reciprocal.detach()),
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # decollation and postprocessing, as MONAI's trainers
        return engine.state.output
