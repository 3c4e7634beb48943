"""A training run's console: one progress bar with the loss and the last validation Dice, and one line per
validation; MONAI's and ignite's per-iteration and per-epoch lines only when ``verbose``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from monai.utils import min_version, optional_import

from monai_ext.atomic import write_atomically

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
      ``LrSchedule`` the same ``verbose`` for the per-iteration loss and learning-rate lines.

    - with ``curves``, a PNG of the mean training loss per epoch and each validation's key metric, rewritten
      after every validation and at the end (the bundles write ``eval/training_curves.png`` beside their
      TensorBoard metrics).

    Args:
        validator: the evaluator whose key metric is shown (``None``: loss only).
        verbose: keep every engine log line as MONAI prints it.
        disable: ``None`` (default): a bar only on a terminal; ``True``: never; ``False``: always.
        curves: where to write the loss and validation curves PNG (``None``: none).
    """

    def __init__(
        self,
        validator: Optional[Any] = None,
        verbose: bool = False,
        disable: Optional[bool] = None,
        curves: Optional[Union[str, Path]] = None,
    ) -> None:
        self.validator = validator
        self.verbose = verbose
        self.disable = disable
        self.curves = None if curves is None else Path(curves)
        self.bar = None
        self.trainer = None
        self.last: Optional[float] = None
        self.losses: Dict[int, List[float]] = {}
        self.validations: List[Tuple[int, float]] = []
        self.metric_name = "validation"

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
        self.bar = tqdm(
            total=total,
            initial=engine.state.iteration,
            desc="training",
            unit="step",
            dynamic_ncols=True,
            disable=self.disable if self.disable is not None else not sys.stderr.isatty(),
            leave=True,
        )

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
        if loss is not None:
            self.losses.setdefault(engine.state.epoch, []).append(loss)
        self._postfix(loss)
        self.bar.update(1)

    def _validated(self, validator) -> None:
        name = validator.state.key_metric_name if hasattr(validator.state, "key_metric_name") else None
        name = name or next(iter(validator.state.metrics), None)
        if name is None:
            return
        self.last = float(validator.state.metrics[name])
        self.metric_name = name
        self.validations.append((self.trainer.state.epoch, self.last))
        best, best_epoch = (
            getattr(validator.state, "best_metric", None),
            getattr(validator.state, "best_metric_epoch", None),
        )
        epoch, epochs = self.trainer.state.epoch, self.trainer.state.max_epochs
        line = f"epoch {epoch}/{epochs}: {name} {self.last:.4f}"
        if best is not None and best_epoch is not None and best_epoch >= 0:
            line += f" (best {float(best):.4f} at epoch {best_epoch})"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            logger.info(line)
        self.plot()

    def plot(self) -> Optional[Path]:
        """Write the curves PNG (temporary name, then rename); returns its path."""
        if self.curves is None or not (self.losses or self.validations):
            return None

        try:
            import matplotlib
        except ImportError:  # an optional package (a bundle's metadata does not require it)
            logger.warning(
                "matplotlib is not installed: no training curves at %s (pip install matplotlib)", self.curves
            )
            self.curves = None
            return None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, left = plt.subplots(figsize=(8, 4.5), dpi=100)
        epochs = sorted(self.losses)
        left.plot(
            epochs,
            [sum(self.losses[e]) / len(self.losses[e]) for e in epochs],
            color="tab:blue",
            label="training loss (epoch mean)",
        )
        left.set_xlabel("epoch")
        left.set_ylabel("training loss", color="tab:blue")
        left.grid(alpha=0.3)
        right = left.twinx()
        if self.validations:
            right.plot(*zip(*self.validations), color="tab:orange", marker="o", label=self.metric_name)
        right.set_ylabel(self.metric_name, color="tab:orange")
        right.set_ylim(0, 1)
        fig.legend(loc="lower center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        try:
            return write_atomically(self.curves, lambda tmp: fig.savefig(tmp, format="png"))
        finally:
            plt.close(fig)

    def _close(self, engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.plot()
