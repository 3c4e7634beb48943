"""A failure inside training told in one line, in the user's terms: the setting, the case, what to change."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional, Sequence

import torch
from monai.utils import min_version, optional_import

from monai_ext.errors import ReportedError, first_line, reported_cause

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["TrainingError", "TrainingErrors", "run_training"]


class TrainingError(ReportedError, RuntimeError):
    """Training stopped; the message says where (epoch, cases), why, and which setting to change."""


class _Quiet(logging.Filter):
    """Drops the records that repeat a failure this handler reports: ignite's "run is terminating" line and
    MONAI's ``StatsHandler`` traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.exc_info or "run is terminating due to exception" in message or message.startswith("Exception:")
        )


def _root_message(e: BaseException) -> str:
    """The innermost cause's first line; for an error in a data-loader worker, the worker's own error line."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    if (
        "Original Traceback" in text
    ):  # torch's worker exception: the original error is the traceback's last "XError: ..." line
        raised = [line.strip() for line in text.splitlines() if re.match(r"^\w+(Error|Exception): ", line.strip())]
        return raised[-1] if raised else [line for line in text.splitlines() if line.strip()][-1].strip()
    return f"{type(e).__name__}: {first_line(e)}" if text else type(e).__name__


def _cases(batch: Any) -> list:
    """The files a batch came from (MONAI's metadata), for the message."""
    if not isinstance(batch, dict):
        return []
    for key in ("label", "image"):
        meta = getattr(batch.get(key), "meta", None) or {}
        names = meta.get("filename_or_obj")
        if names:
            names = [names] if isinstance(names, str) else list(names)
            return list(dict.fromkeys(str(n) for n in names))
    return []


def run_training(trainer) -> None:
    """Run a bundle's trainer (its config's ``run``): through the :class:`TrainingErrors` attached to it, if any.
    The config names the trainer alone, so that nothing is built in another order than ``trainer.run()`` would."""
    errors = getattr(trainer, "training_errors", None)
    if errors is None:
        trainer.run()
    else:
        errors.run(trainer)


class TrainingErrors:
    """Attach to a trainer, and run it with :func:`run_training`: label values are checked before each step, and any
    failure is raised as one :class:`TrainingError` line (printed as ``error: ...`` by :mod:`monai_ext`'s
    exception hook) instead of ignite's and MONAI's tracebacks; the trainer's own failure handlers (the last
    weights kept) run first. ``MONAI_EXT_TRACEBACK=1`` keeps the full trace.

    - a label value that ``out_channels`` has no channel for names the case and the value;
    - patches that cannot be stacked into a batch name their shapes and ``patch_size``;
    - out of memory names ``batch_size``, ``num_samples`` and ``patch_size``;
    - anything else names the epoch, iteration and cases, and the error's own line.

    Args:
        out_channels: the classes the network predicts (labels 0 to ``out_channels - 1``).
        patch_size: the training patch.
        batch_size: volumes per step.
        num_samples: patches per volume.
        validator: the evaluator run during training (its failures are reported here too).
    """

    def __init__(
        self,
        out_channels: int,
        patch_size: Sequence[int],
        batch_size: int,
        num_samples: int = 1,
        validator: Optional[Any] = None,
    ) -> None:
        self.out_channels = int(out_channels)
        self.patch_size = list(patch_size)
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.validator = validator

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._check_labels)
        engine.training_errors = self  # for run_training
        if not os.environ.get("MONAI_EXT_TRACEBACK"):
            quiet = _Quiet()
            for e in (engine, self.validator):
                if e is not None:
                    e.logger.addFilter(quiet)
            logging.getLogger("StatsHandler").addFilter(quiet)
            logging.getLogger("dev_collate").addFilter(
                lambda record: False
            )  # MONAI's dump of a batch that does not collate

    def _check_labels(self, engine) -> None:
        batch = engine.state.batch
        label = batch.get("label") if isinstance(batch, dict) else None
        if not torch.is_tensor(label) or label.numel() == 0:
            return
        top = int(label.max())
        if top < self.out_channels:
            return
        cases = _cases(batch)
        worst = (
            [c for c, item in zip(cases, label) if int(item.max()) >= self.out_channels]
            if len(cases) == len(label)
            else cases
        )
        where = worst[0] if worst else "a training case"
        raise TrainingError(
            f"{where}: label value {top}, but out_channels is {self.out_channels} (labels 0 to {self.out_channels - 1}): "
            f"set out_channels to {top + 1} or more, or relabel the case (`prepare folder` counts the labels and sets it)"
        )

    def run(self, trainer) -> None:
        """``trainer.run()``, a failure told in one line (the trainer's state still says where it stopped)."""
        try:
            trainer.run()
        except Exception as e:
            self._raised(trainer, e)

    def _raised(self, engine, e: BaseException) -> None:
        reported = reported_cause(e)
        if reported is not None:
            raise reported from e
        where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        cases = _cases(getattr(engine.state, "batch", None))
        on = (
            f" (cases {', '.join(os.path.basename(c) for c in cases[:4])}{' ...' if len(cases) > 4 else ''})"
            if cases
            else ""
        )
        line = _root_message(e)
        if isinstance(e, torch.OutOfMemoryError) or "out of memory" in line.lower() or "can't allocate memory" in line:
            raise TrainingError(
                f"training ran out of memory at {where}{on} with batch_size {self.batch_size} x num_samples {self.num_samples} "
                f"patches of {self.patch_size}: lower batch_size (or patch_size); `prepare folder` plans them for this machine"
            ) from e
        if "stack expects each tensor to be equal size" in line:
            raise TrainingError(
                f"training at {where}: the patches of a batch differ in shape and cannot be stacked ({line}); every training "
                f"transform must keep patch_size {self.patch_size} (the planned augmentation does: `prepare folder`)"
            ) from e
        raise TrainingError(
            f"training failed at {where}{on}: {line} (MONAI_EXT_TRACEBACK=1 shows the full trace)"
        ) from e
