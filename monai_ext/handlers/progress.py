"""A training run's console: one progress bar with the loss and the last validation Dice, and one line per
validation; MONAI's and ignite's per-iteration and per-epoch lines only when ``verbose``."""

from __future__ import annotations

import logging
import sys
from typing import Any, Optional

from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["TrainingProgress"]

logger = logging.getLogger("monai_ext.training")


class TrainingProgress:
    """Attach to a trainer (a bundle's ``train#handlers``) for a quiet console.

    - a ``tqdm`` bar over the whole run's iterations, its postfix the last loss and the last validation's
      key metric (shown only on a terminal: a log file gets no bar);
    - after each validation one line: the epoch, the key metric, the best so far and where it was
      (logger ``monai_ext.training``);
    - unless ``verbose``, the trainer's and the validator's own loggers (ignite's "Epoch[1] Complete", MONAI's
      "Got new best metric") are set to warnings only; the bundles give their ``StatsHandler`` and
      ``LrScheduleHandler`` the same ``verbose`` for the per-iteration loss and learning-rate lines.

    Args:
        validator: the evaluator whose key metric is shown (``None``: loss only).
        verbose: keep every engine log line as MONAI prints it.
        disable: ``None`` (default): a bar only on a terminal; ``True``: never; ``False``: always.
    """

    def __init__(self, validator: Optional[Any] = None, verbose: bool = False, disable: Optional[bool] = None) -> None:
        self.validator = validator
        self.verbose = verbose
        self.disable = disable
        self.bar = None
        self.trainer = None
        self.last: Optional[float] = None

    def attach(self, engine) -> None:
        self.trainer = engine
        for e in (engine, self.validator):  # an engine's logger is shared by every engine of its class: set, either way
            if e is not None:
                e.logger.setLevel(logging.NOTSET if self.verbose else logging.WARNING)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._close)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _started(self, engine) -> None:
        from tqdm import tqdm

        total = engine.state.max_epochs * (engine.state.epoch_length or 0) or None
        self.bar = tqdm(total=total, initial=engine.state.iteration, desc="training", unit="step", dynamic_ncols=True,
                        disable=self.disable if self.disable is not None else not sys.stderr.isatty(), leave=True)

    def _postfix(self, loss: Optional[float]) -> None:
        shown = {} if loss is None else {"loss": f"{loss:.4f}"}
        if self.last is not None:
            shown["val"] = f"{self.last:.4f}"
        self.bar.set_postfix(shown, refresh=False)

    def _iteration(self, engine) -> None:
        if self.bar is None:
            return
        output = engine.state.output
        loss = None
        if isinstance(output, list) and output and isinstance(output[0], dict):
            output = output[0]
        if isinstance(output, dict) and "loss" in output:
            try:
                loss = float(output["loss"])
            except (TypeError, ValueError):
                loss = None
        self._postfix(loss)
        self.bar.update(1)

    def _validated(self, validator) -> None:
        name = validator.state.key_metric_name if hasattr(validator.state, "key_metric_name") else None
        name = name or next(iter(validator.state.metrics), None)
        if name is None:
            return
        self.last = float(validator.state.metrics[name])
        best, best_epoch = getattr(validator.state, "best_metric", None), getattr(validator.state, "best_metric_epoch", None)
        epoch, epochs = self.trainer.state.epoch, self.trainer.state.max_epochs
        line = f"epoch {epoch}/{epochs}: {name} {self.last:.4f}"
        if best is not None and best_epoch is not None and best_epoch >= 0:
            line += f" (best {float(best):.4f} at epoch {best_epoch})"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            logger.info(line)

    def _close(self, engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
