"""Best and last weights of a training run, each carrying the settings inference needs, and the full
training state to resume from.

MONAI's ``CheckpointSaver`` writes the key-metric checkpoint in place (after removing the previous one, so
a full disk loses both) and knows nothing of earlier runs; :class:`BundleCheckpointSaver` writes every file
under a temporary name, flushes it to disk and renames it, never replaces a better checkpoint of the same
experiment, moves earlier runs' files aside instead of overwriting them, records the trained settings in
each checkpoint (see :mod:`monai_ext.bundle.trained`) and in ``trained.json`` beside them, and writes after
every epoch a ``last.pt`` from which ``resume_from`` continues the run exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from monai.transforms import Randomizable, Transform
from monai.utils import min_version, optional_import

from monai_ext.atomic import write_atomically
from monai_ext.bundle.trained import (
    SETTINGS_FILE,
    SettingsMismatch,
    check_fits,
    fingerprint,
    read_record,
    unloadable,
    with_record,
)
from monai_ext.errors import CheckpointError, first_line

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")

__all__ = ["BundleCheckpointSaver"]

logger = logging.getLogger("monai_ext.checkpoint")


def _is_writer() -> bool:
    """Rank 0 (or no process group) writes; other ranks only follow."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


class BundleCheckpointSaver:
    """Keep a run's best weights in ``model.pt``, its last in ``model_last.pt``, with their settings, and its
    training state in ``last.pt`` after every epoch; resume a run from that state.

    - **best**: after each validation, when the validator's key metric beats the best so far, the network's
      state dict is written (temporary name, then rename) to ``<save_dir>/model.pt``. The best so far
      includes an existing ``model.pt`` of the same experiment (same network structure, settings and
      validation cases, e.g. a run started again): a worse run never replaces it. An existing ``model.pt``
      of another experiment is moved to ``<save_dir>/replaced-<time>/`` before the first write.
    - **last**: when training ends (all epochs, a time budget, an error after at least one epoch of this run),
      ``model_last.pt``. A run that fails inside its first epoch leaves none: its weights are no result.
    - **training state**: at the end of every epoch (after the learning-rate step and the validation),
      ``last.pt``: the network, every object of ``training_state`` (optimisers, learning-rate scheduler,
      discriminators...), the trainer's epoch and iteration, its AMP grad scaler, the best metric so far,
      and the random states (PyTorch, CUDA, NumPy, Python, and each random transform of the training
      data), so that a run resumed from it (``resume_from``) trains exactly as the uninterrupted run would
      have. It is loaded with ``weights_only=True``.
    - a fresh run (no ``resume_from``) moves an earlier run's ``last.pt`` and ``model_last.pt`` to
      ``<save_dir>/replaced-<time>/`` before its first write; nothing is overwritten without a copy.
    - a file that cannot be written (a full disk) stops training with one line naming it; the previous
      file of that name is intact (temporary name, fsync, rename).
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
        training_state: the objects with a ``state_dict`` that training changes besides the network, by
            name, e.g. ``{"optimizer": ..., "lr_scheduler": ...}``.
        resume_from: a ``last.pt`` to continue from (``None``: a fresh run). Training continues to the
            configured ``max_epochs``.
        state_filename: file of the training state.

    Raises:
        CheckpointError: a file cannot be written; ``resume_from`` is missing, not a training state, of
            another network, or already at ``max_epochs``.
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
        training_state: Optional[Mapping[str, Any]] = None,
        resume_from: Optional[Union[str, Path]] = None,
        state_filename: str = "last.pt",
    ) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.settings = json.loads(json.dumps(dict(settings), default=_json_value))
        self.validator = validator
        self.best_filename, self.last_filename = best_filename, last_filename
        self.data_source = dict(data_source) if data_source else None
        self.training_state = dict(training_state or {})
        reserved = {"network", "trainer", "scaler", "rng", "saver", "record"} & set(self.training_state)
        if reserved:
            raise ValueError(f"training_state: {sorted(reserved)} are names of last.pt's own entries")
        self.resume_from = Path(resume_from) if resume_from not in (None, "") else None
        self.state_filename = state_filename
        # read now, so that a wrong file stops the run before anything starts
        self._resume_state = self._read_state(self.resume_from) if self.resume_from is not None else None
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.last_metric: Optional[Dict[str, Any]] = None
        self._move_aside: List[str] = []
        self._trainer = None
        self._digest: Optional[str] = None  # of the validation cases, fixed for a run
        self._fingerprint: Optional[str] = None
        self._epochs_done = 0

    def attach(self, engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
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
        return {
            "data": self._digest,
            "data_source": self.data_source,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }

    def _started(self, engine) -> None:
        self.best, self.best_epoch = None, None
        self._epochs_done = 0  # completed in this run
        self._digest, self._fingerprint = self._data(), fingerprint(self._module().state_dict())
        existing = self.save_dir / self.best_filename
        self._move_aside = (
            []
            if self.resume_from is not None
            else [n for n in (self.state_filename, self.last_filename) if (self.save_dir / n).exists()]
        )
        if existing.exists():
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
                logger.info(
                    "%s: keeps its %s %.4f unless this run does better", existing, record["metric"]["name"], self.best
                )
            else:
                self._move_aside = [self.best_filename, self.last_filename, SETTINGS_FILE, self.state_filename]
        if self.resume_from is not None:
            self._resume(engine)

    def _prepare(self) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        names = [n for n in self._move_aside if (self.save_dir / n).exists()]
        self._move_aside = []
        if not names:
            return
        target = self.save_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir(exist_ok=True)
        for name in names:
            shutil.move(str(self.save_dir / name), str(target / name))
        logger.info("an earlier run's %s in %s moved to %s", ", ".join(names), self.save_dir, target)

    def _write(self, path: Path, state: Any) -> Path:
        try:
            return write_atomically(path, lambda tmp: torch.save(state, tmp))
        except OSError as e:
            raise CheckpointError(
                f"{path}: could not be written ({e.strerror or e}); the previous {path.name}, if any, is intact"
            ) from e

    def _save(self, filename: str, **extra: Any) -> Path:
        self._prepare()
        state = with_record(self._module().state_dict(), self.settings, **self._record(**extra))
        return self._write(self.save_dir / filename, state)

    # --------------------------------------------------------------------------------- training state

    def _scaler(self, engine) -> Optional[Any]:
        scaler = getattr(engine, "scaler", None)
        return scaler if scaler is not None and hasattr(scaler, "state_dict") else None

    def _state(self, engine) -> Dict[str, Any]:
        state: Dict[str, Any] = {
            "network": self._module().state_dict(),
            **{name: _unwrapped(obj).state_dict() for name, obj in self.training_state.items()},
            "trainer": dict(engine.state_dict()),
            "rng": _random_states(engine),
            "saver": {"best": self.best, "best_epoch": self.best_epoch, "last_metric": self.last_metric},
            "record": json.dumps(
                {"settings": self.settings, "fingerprint": self._fingerprint, **self._record(epoch=engine.state.epoch)}
            ),
        }
        scaler = self._scaler(engine)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        return state

    def _read_state(self, path: Path) -> Dict[str, Any]:
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no training state to resume from (a run writes {self.state_filename} into its models folder at the "
                "end of every epoch)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several kinds for corrupt, truncated or unsafe files
            raise CheckpointError(unloadable(path, e)) from e
        if not isinstance(state, dict) or not {"network", "trainer", "rng"} <= set(state):
            raise CheckpointError(
                f"{path}: holds weights only, not a training state; resume from the {self.state_filename} a run writes"
            )
        missing = [name for name in self.training_state if name not in state]
        if missing:
            raise CheckpointError(
                f"{path}: has no {', '.join(missing)} state; it was written by another bundle's training"
            )
        try:
            check_fits(path, state["network"], self._module(), {})
        except SettingsMismatch as e:
            raise CheckpointError(str(e)) from e
        return state

    def _resume(self, engine) -> None:
        path, state = self.resume_from, self._resume_state
        self._resume_state = None  # the run owns it from here
        record = json.loads(state.get("record", "{}"))
        if record.get("settings") not in (None, self.settings):
            changed = sorted(
                k
                for k in set(record["settings"]) | set(self.settings)
                if record["settings"].get(k) != self.settings.get(k)
            )
            logger.warning("%s: resumed with other settings than it was trained with: %s", path, ", ".join(changed))
        self._module().load_state_dict(state["network"])
        try:
            for name, obj in self.training_state.items():
                _unwrapped(obj).load_state_dict(state[name])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: its {name} state does not fit this run's ({first_line(e)})") from e
        scaler = self._scaler(engine)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        if max_epochs is not None and engine.state.epoch >= max_epochs:
            raise CheckpointError(
                f"{path}: already trained {engine.state.epoch} epoch(s); set train#trainer#max_epochs above that to train on"
            )
        engine.state.max_epochs = max_epochs
        _restore_random_states(engine, state["rng"])
        saved = state.get("saver", {})
        if saved.get("best") is not None and (self.best is None or not self._better(self.best, saved["best"])):
            self.best, self.best_epoch = saved["best"], saved.get("best_epoch")
        self.last_metric = saved.get("last_metric")
        logger.info("resumed from %s at epoch %d of %d", path, engine.state.epoch, max_epochs)

    def _better(self, value: float, than: float) -> bool:
        return getattr(self.validator, "metric_cmp_fn", lambda current, prev: current > prev)(value, than)

    def _write_settings(self, engine) -> None:
        overlay = {
            "_desc_": "settings the weights in this folder were trained with "
            "(written by training; merged automatically by inference)",
            **self.settings,
            "trained_run": {
                "best": {
                    "file": self.best_filename,
                    "metric": self.last_metric and self.last_metric["name"],
                    "value": self.best,
                    "epoch": self.best_epoch,
                },
                "epochs": engine.state.epoch if engine is not None else None,
                "data": self._digest,
                "fingerprint": self._fingerprint,
            },
        }
        write_atomically(
            self.save_dir / SETTINGS_FILE, lambda tmp: tmp.write_text(json.dumps(overlay, indent=4) + "\n")
        )

    # ----------------------------------------------------------------------------------------- events

    def _validated(self, evaluator) -> None:
        name = getattr(evaluator.state, "key_metric_name", None)
        if name is None or name not in evaluator.state.metrics:
            return
        value = float(evaluator.state.metrics[name])
        epoch = self._trainer.state.epoch if self._trainer is not None else None
        self.last_metric = {"name": name, "value": value, "epoch": epoch}
        if self.best is not None and not self._better(value, self.best):
            return
        self.best, self.best_epoch = value, epoch
        if _is_writer():
            path = self._save(self.best_filename, metric=self.last_metric, epoch=epoch)
            self._write_settings(self._trainer)
            logger.info("best %s %.4f at epoch %s: %s", name, value, epoch, path)

    def _epoch_completed(self, engine) -> None:
        self._epochs_done += 1
        if _is_writer():
            self._prepare()
            self._write(self.save_dir / self.state_filename, self._state(engine))

    def _completed(self, engine) -> None:
        if not _is_writer():
            return
        path = self._save(self.last_filename, metric=self.last_metric, epoch=engine.state.epoch)
        if self.validator is None:
            self._save(self.best_filename, metric=None, epoch=engine.state.epoch)
        self._write_settings(engine)
        logger.info("last weights (epoch %d): %s", engine.state.epoch, path)

    def _failed(self, engine, e: Exception) -> None:
        # weights from inside an epoch that never completed are not a result: no model_last.pt for them
        if _is_writer() and self._epochs_done and not isinstance(e, CheckpointError):
            self._save(
                self.last_filename, metric=self.last_metric, epoch=engine.state.epoch, stopped_by=type(e).__name__
            )
            logger.info(
                "training stopped by %s; last weights kept in %s", type(e).__name__, self.save_dir / self.last_filename
            )
        raise e


def _unwrapped(obj: Any) -> Any:
    """A ``DistributedDataParallel`` module's inner module (a state saved on many GPUs resumes on one)."""
    return obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj


def _transform_generators(engine) -> List[np.random.RandomState]:
    """The random generators of the training data's transforms, in a fixed order.

    With ``num_workers=0`` the transforms draw from these in the main process across epochs; with workers,
    each epoch's workers are seeded from PyTorch's generator instead and these are not used.
    """
    found: List[np.random.RandomState] = []
    seen = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        elif isinstance(obj, (Transform, Randomizable)):
            if isinstance(getattr(obj, "R", None), np.random.RandomState):
                found.append(obj.R)
            for value in vars(obj).values():
                visit(value)

    loader = getattr(engine, "data_loader", None)
    visit(getattr(getattr(loader, "dataset", None), "transform", None))
    return found


def _numpy_state(generator_state: tuple) -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = generator_state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    return state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"]


def _random_states(engine) -> Dict[str, Any]:
    """Every random state a training epoch draws from, as data ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(np.random.get_state()),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "transforms": [_numpy_state(g.get_state()) for g in _transform_generators(engine)],
    }


def _restore_random_states(engine, states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(_numpy_tuple(states["numpy"]))
    python = states["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    generators = _transform_generators(engine)
    if len(generators) != len(states["transforms"]):
        logger.warning(
            "the training transforms differ from the saved run's (%d random transforms, %d saved): "
            "their random draws will differ from the uninterrupted run's",
            len(generators),
            len(states["transforms"]),
        )
        return
    for generator, state in zip(generators, states["transforms"]):
        generator.set_state(_numpy_tuple(state))


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"setting value {value!r} is not JSON data")
