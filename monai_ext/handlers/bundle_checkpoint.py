"""Best and last weights of a training run, each carrying the settings inference needs.

MONAI's ``CheckpointSaver`` writes the key-metric checkpoint in place (after removing the previous one)
and knows nothing of earlier runs; :class:`BundleCheckpointSaver` writes every file under a temporary
name and renames it, never replaces a better checkpoint of the same experiment, moves a different
experiment's weights aside instead of overwriting them, and records the trained settings in each
checkpoint (see :mod:`monai_ext.bundle.trained`) and in ``trained.json`` beside them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from monai.utils import min_version, optional_import

from monai_ext.bundle.trained import SETTINGS_FILE, fingerprint, read_record, with_record
from monai_ext.data.volume_io import write_atomically

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["BundleCheckpointSaver"]

logger = logging.getLogger("monai_ext.checkpoint")


def _is_writer() -> bool:
    """Rank 0 (or no process group) writes; other ranks only follow."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


class BundleCheckpointSaver:
    """Keep a run's best weights in ``model.pt`` and its last in ``model_last.pt``, with their settings.

    - **best**: after each validation, when the validator's key metric beats the best so far, the network's
      state dict is written (temporary name, then rename) to ``<save_dir>/model.pt``. The best so far
      includes an existing ``model.pt`` of the same experiment (same network structure, settings and
      validation cases, e.g. a run started again): a worse run never replaces it. An existing ``model.pt``
      of another experiment is moved to ``<save_dir>/replaced-<time>/`` before the first write.
    - **last**: when training ends (all epochs, a time budget, an error), ``model_last.pt``.
    - each checkpoint carries the record of :func:`monai_ext.bundle.with_record` (settings, network
      fingerprint, metric, epoch); ``trained.json`` holds the same settings as a readable config overlay.

    Without a validator the last weights are also the best. Under ``torch.distributed`` only rank 0 writes.

    Args:
        save_dir: the bundle's ``models`` folder.
        network: the trained network (a ``DistributedDataParallel`` wrapper is unwrapped).
        settings: the values inference needs (a bundle's ``inference_settings``), as JSON data.
        validator: the evaluator whose key metric selects the best weights.
        best_filename: file of the best weights.
        last_filename: file of the last weights.
        data_source: where the training data came from (a data-set overlay's ``data_source``), recorded
            for an exported bundle's data licence.
    """

    def __init__(
        self,
        save_dir: Union[str, Path],
        network: torch.nn.Module,
        settings: Mapping[str, Any],
        validator: Optional[Any] = None,
        best_filename: str = "model.pt",
        last_filename: str = "model_last.pt",
        data_source: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.settings = json.loads(json.dumps(dict(settings), default=_json_value))
        self.validator = validator
        self.best_filename, self.last_filename = best_filename, last_filename
        self.data_source = dict(data_source) if data_source else None
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.last_metric: Optional[Dict[str, Any]] = None
        self._move_aside = False
        self._trainer = None
        self._digest: Optional[str] = None  # of the validation cases, fixed for a run
        self._fingerprint: Optional[str] = None

    def attach(self, engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validated)

    # ------------------------------------------------------------------------------------------ state

    def _module(self) -> torch.nn.Module:
        return getattr(self.network, "module", self.network)

    def _data(self) -> Optional[str]:
        """A digest of the validation cases (same cases = same experiment), or ``None`` if unknown."""
        try:
            cases = list(self.validator.data_loader.dataset.data)
            return hashlib.sha256(json.dumps(cases, sort_keys=True, default=str).encode()).hexdigest()
        except Exception:  # no validator, or a data source that cannot be listed
            return None

    def _record(self, **extra: Any) -> Dict[str, Any]:
        return {"data": self._digest, "data_source": self.data_source, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}

    def _started(self, engine) -> None:
        self.best, self.best_epoch = None, None
        self._digest, self._fingerprint = self._data(), fingerprint(self._module().state_dict())
        existing = self.save_dir / self.best_filename
        if not existing.exists():
            return
        try:
            record = read_record(existing)
        except ValueError:
            record = None
        same = (
            record is not None
            and record.get("fingerprint") == self._fingerprint
            and record.get("settings") == self.settings
            and record.get("data") is not None
            and record.get("data") == self._digest
            and record.get("metric") is not None
        )
        if same:
            self.best, self.best_epoch = record["metric"]["value"], None
            logger.info("%s: keeps its %s %.4f unless this run does better", existing, record["metric"]["name"], self.best)
        else:
            self._move_aside = True

    def _prepare(self) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        if not self._move_aside:
            return
        self._move_aside = False
        target = self.save_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir()
        for name in (self.best_filename, self.last_filename, SETTINGS_FILE):
            if (self.save_dir / name).exists():
                shutil.move(str(self.save_dir / name), str(target / name))
        logger.info("another experiment's weights in %s moved to %s", self.save_dir, target)

    def _save(self, filename: str, **extra: Any) -> Path:
        self._prepare()
        state = with_record(self._module().state_dict(), self.settings, **self._record(**extra))
        path = self.save_dir / filename
        write_atomically(path, lambda tmp: torch.save(state, tmp))
        return path

    def _write_settings(self, engine) -> None:
        overlay = {
            "_desc_": "settings the weights in this folder were trained with (written by training; merged automatically by inference)",
            **self.settings,
            "trained_run": {
                "best": {"file": self.best_filename, "metric": self.last_metric and self.last_metric["name"], "value": self.best, "epoch": self.best_epoch},
                "epochs": engine.state.epoch if engine is not None else None,
                "data": self._digest,
                "fingerprint": self._fingerprint,
            },
        }
        write_atomically(self.save_dir / SETTINGS_FILE, lambda tmp: tmp.write_text(json.dumps(overlay, indent=4) + "\n"))

    # ----------------------------------------------------------------------------------------- events

    def _validated(self, evaluator) -> None:
        name = getattr(evaluator.state, "key_metric_name", None)
        if name is None or name not in evaluator.state.metrics:
            return
        value = float(evaluator.state.metrics[name])
        epoch = self._trainer.state.epoch if self._trainer is not None else None
        self.last_metric = {"name": name, "value": value, "epoch": epoch}
        better = getattr(evaluator, "metric_cmp_fn", lambda current, prev: current > prev)
        if self.best is not None and not better(value, self.best):
            return
        self.best, self.best_epoch = value, epoch
        if _is_writer():
            path = self._save(self.best_filename, metric=self.last_metric, epoch=epoch)
            self._write_settings(self._trainer)
            logger.info("best %s %.4f at epoch %s: %s", name, value, epoch, path)

    def _completed(self, engine) -> None:
        if not _is_writer():
            return
        path = self._save(self.last_filename, metric=self.last_metric, epoch=engine.state.epoch)
        if self.validator is None:
            self._save(self.best_filename, metric=None, epoch=engine.state.epoch)
        self._write_settings(engine)
        logger.info("last weights (epoch %d): %s", engine.state.epoch, path)

    def _failed(self, engine, e: Exception) -> None:
        if _is_writer() and engine.state.epoch:
            self._save(self.last_filename, metric=self.last_metric, epoch=engine.state.epoch, stopped_by=type(e).__name__)
            logger.info("training stopped by %s; last weights kept in %s", type(e).__name__, self.save_dir / self.last_filename)
        raise e


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"setting value {value!r} is not JSON data")
