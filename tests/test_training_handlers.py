"""Training writes self-describing checkpoints, atomically, never over a better one, and stops on a time budget."""

import json
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_ext.bundle import TrainedSettings, check_fits, read_record
from monai_ext.bundle.trained import SettingsMismatch, fingerprint
from monai_ext.handlers import BundleCheckpointSaver, TimeBudget

SETTINGS = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 3,
    "class_names": {"0": "background", "1": "a", "2": "b"},
}


class _Validator(Engine):
    """An evaluator that reports the next score of a list as its key metric."""

    def __init__(self, scores, cases=("case1", "case2")):
        super().__init__(lambda engine, batch: None)
        self.scores = list(scores)
        self.data_loader = type(
            "Loader", (), {"dataset": type("Dataset", (), {"data": [{"image": c} for c in cases]})()}
        )()
        self.add_event_handler(Events.COMPLETED, self._score)

    def _score(self, engine):
        engine.state.key_metric_name = "val_mean_dice"
        engine.state.metrics["val_mean_dice"] = self.scores.pop(0)


def _train(
    save_dir: Path, net: torch.nn.Module, scores, settings=SETTINGS, cases=("case1", "case2"), epochs=None
) -> BundleCheckpointSaver:
    validator = _Validator(scores, cases)
    trainer = Engine(lambda engine, batch: None)
    saver = BundleCheckpointSaver(save_dir, net, settings, validator, data_source={"name": "X", "url": "https://x"})
    saver.attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    trainer.run([0], max_epochs=epochs or len(scores))
    return saver


def test_best_and_last_checkpoints_carry_the_settings(tmp_path):
    net = torch.nn.Conv2d(1, 3, 3)
    _train(tmp_path, net, [0.5, 0.8, 0.6])
    best, last = read_record(tmp_path / "model.pt"), read_record(tmp_path / "model_last.pt")
    assert best["metric"] == {"name": "val_mean_dice", "value": 0.8, "epoch": 2} and best["settings"] == SETTINGS
    assert last["epoch"] == 3 and best["fingerprint"] == fingerprint(net.state_dict())
    assert best["data_source"] == {"name": "X", "url": "https://x"}
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # still a plain state dict (the bundle spec)
    torch.nn.Conv2d(1, 3, 3).load_state_dict(state)
    assert TrainedSettings(tmp_path / "model.pt").get("class_names") == SETTINGS["class_names"]
    assert TrainedSettings(tmp_path / "missing.pt").get("spatial_dims", 3) == 3
    overlay = json.loads((tmp_path / "trained.json").read_text())
    assert {k: overlay[k] for k in SETTINGS} == SETTINGS and overlay["trained_run"]["best"]["value"] == 0.8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_worse_run_of_the_same_experiment_never_replaces_the_best(tmp_path):
    net = torch.nn.Conv2d(1, 3, 3)
    _train(tmp_path, net, [0.9])
    before = (tmp_path / "model.pt").read_bytes()
    _train(tmp_path, net, [0.4, 0.7])  # started again: same network, settings and validation cases
    assert (tmp_path / "model.pt").read_bytes() == before
    assert read_record(tmp_path / "model_last.pt")["epoch"] == 2
    _train(tmp_path, net, [0.95])
    assert read_record(tmp_path / "model.pt")["metric"]["value"] == 0.95


def test_another_experiments_weights_are_moved_aside_not_overwritten(tmp_path):
    net = torch.nn.Conv2d(1, 3, 3)
    _train(tmp_path, net, [0.9])
    first = (tmp_path / "model.pt").read_bytes()
    _train(tmp_path, net, [0.3], cases=("other",))  # other validation cases: another experiment
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
    assert (moved / "model.pt").read_bytes() == first and (moved / "trained.json").is_file()
    assert read_record(tmp_path / "model.pt")["metric"]["value"] == 0.3


def test_weights_that_do_not_fit_name_the_setting():
    trained = torch.nn.Conv3d(1, 3, 3)
    from monai_ext.bundle import with_record

    state = with_record(trained.state_dict(), {"spatial_dims": 3, "out_channels": 3})
    with pytest.raises(SettingsMismatch, match=r"spatial_dims: trained 3, configured 2"):
        check_fits("model.pt", state, torch.nn.Conv2d(1, 3, 3), {"spatial_dims": 2, "out_channels": 3})
    with pytest.raises(SettingsMismatch, match=r"weight has shape \[3, 1, 3, 3, 3\] in the weights, \[3, 1, 3, 3\]"):
        check_fits("model.pt", trained.state_dict(), torch.nn.Conv2d(1, 3, 3), {})  # plain weights: the parameter
    check_fits("model.pt", state, torch.nn.Conv3d(1, 3, 3), {"spatial_dims": 3})


class _Evaluator(Engine):
    """Runs as MONAI's evaluators do: ``run(global_epoch)``."""

    def __init__(self):
        super().__init__(lambda engine, batch: None)

    def run(self, global_epoch=1):
        return super().run([0])


def _slow_trainer(seconds_per_iteration: float) -> Engine:
    return Engine(lambda engine, batch: time.sleep(seconds_per_iteration))


def test_time_budget_stops_between_epochs_when_the_next_would_overrun():
    trainer = _slow_trainer(0.05)
    completed = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.epoch))
    TimeBudget(minutes=0.5 / 60).attach(trainer)  # 0.5 s; an epoch of 4 iterations takes 0.2 s
    start = time.perf_counter()
    trainer.run(range(4), max_epochs=100)
    assert completed == [2] and time.perf_counter() - start < 0.5


def test_time_budget_inside_an_epoch_stops_and_validates_the_final_weights():
    trainer = _slow_trainer(0.05)
    validated = []
    validator = _Evaluator()
    validator.add_event_handler(Events.COMPLETED, lambda e: validated.append(trainer.state.iteration))
    completed = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    TimeBudget(minutes=0.3 / 60, validator=validator).attach(trainer)
    trainer.run(range(100), max_epochs=1)
    assert completed and completed[0] < 100 and validated == completed
    assert TimeBudget(None).seconds is None and TimeBudget(0).seconds is None  # no budget: epochs decide


def test_records_are_read_from_any_checkpoint_form_and_a_bad_file_leaves_the_defaults(tmp_path):
    from monai_ext.bundle import with_record

    state = with_record(torch.nn.Conv2d(1, 3, 3).state_dict(), SETTINGS)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    torch.save({"model": state}, tmp_path / "wrapped.pt")  # MONAI CheckpointSaver's form
    assert (
        read_record(tmp_path / "legacy.pt")["settings"] == SETTINGS == read_record(tmp_path / "wrapped.pt")["settings"]
    )
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a PyTorch checkpoint"):
        read_record(tmp_path / "bad.pt")
    assert (
        TrainedSettings(tmp_path / "bad.pt").get("spatial_dims", 3) == 3
    )  # the config still parses; loading reports it


# ------------------------------------------------------------------------------------ training state


def _resumable(save_dir: Path, net: torch.nn.Module, scores, epochs: int, resume_from=None, cases=("case1", "case2")):
    """A trainer with an optimiser and a learning-rate schedule, validated before the checkpoint is written
    (the order of a bundle's handlers)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def step(engine, batch):
        optimizer.zero_grad()
        net(torch.ones(1, 1, 5, 5)).sum().backward()
        optimizer.step()

    validator = _Validator(scores, cases)
    trainer = Engine(step)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scheduler.step())
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    saver = BundleCheckpointSaver(
        save_dir,
        net,
        SETTINGS,
        validator,
        training_state={"optimizer": optimizer, "lr_scheduler": scheduler},
        resume_from=resume_from,
    )
    saver.attach(trainer)
    return trainer, saver, optimizer, scheduler


def test_every_epoch_writes_a_training_state_that_loads_without_unpickling_code(tmp_path):
    trainer, _, optimizer, scheduler = _resumable(tmp_path, torch.nn.Conv2d(1, 3, 3), [0.5, 0.6], 2)
    epochs = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: epochs.append(torch.load(tmp_path / "last.pt", weights_only=True)["trainer"]["iteration"]),
    )
    trainer.run(range(3), max_epochs=2)
    assert epochs == [3, 6]  # written at the end of each epoch
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "rng", "saver", "record"} <= set(state)
    assert state["lr_scheduler"]["last_epoch"] == 2 and state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        0.025
    )
    assert state["trainer"]["iteration"] == 6 and state["saver"]["best"] == 0.6


def test_a_resumed_run_continues_the_schedule_and_keeps_the_better_best(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3)
    trainer, _, _, _ = _resumable(tmp_path, net, [0.9, 0.5], 2)
    trainer.run(range(3), max_epochs=2)
    best = (tmp_path / "model.pt").read_bytes()
    uninterrupted = torch.nn.Conv2d(1, 3, 3)
    uninterrupted.load_state_dict(net.state_dict())

    fresh = torch.nn.Conv2d(1, 3, 3)  # another process: other initial weights, state from last.pt
    trainer, saver, optimizer, scheduler = _resumable(tmp_path, fresh, [0.8, 0.85], 4, resume_from=tmp_path / "last.pt")
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    trainer.run(range(3), max_epochs=4)
    assert seen == [7, 8, 9, 10, 11, 12]  # epochs 3 and 4 only
    assert scheduler.last_epoch == 4 and optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert (tmp_path / "model.pt").read_bytes() == best and saver.best == 0.9  # 0.85 < 0.9 (epoch 1, before the kill)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]


def test_resume_refuses_what_is_not_this_runs_training_state_in_one_line(tmp_path):
    from monai_ext.errors import CheckpointError

    net = torch.nn.Conv2d(1, 3, 3)
    trainer, _, _, _ = _resumable(tmp_path, net, [0.5], 1)
    trainer.run(range(2), max_epochs=1)
    last = tmp_path / "last.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(last.read_bytes()[:1000])
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"network": net.state_dict(), "trainer": {}, "rng": {}, "x": Path("a")}, unsafe)  # a pickled class
    cases = {
        tmp_path / "absent.pt": r"absent.pt: no training state to resume from",
        tmp_path / "model.pt": r"model.pt: holds weights only, not a training state",
        truncated: r"truncated.pt: a damaged or truncated checkpoint",
        unsafe: r"unsafe.pt: holds pickled Python objects \(pathlib.PosixPath\) besides weights, which are not loaded",
    }
    for path, message in cases.items():  # refused when the handler is built, before a run starts
        with pytest.raises(CheckpointError, match=message):
            _resumable(tmp_path / "run", torch.nn.Conv2d(1, 3, 3), [0.5], 2, resume_from=path)
    with pytest.raises(CheckpointError, match=r"last.pt: weights do not fit the configured network \(weight has shape"):
        _resumable(tmp_path / "run", torch.nn.Conv2d(1, 4, 3), [0.5], 2, resume_from=last)
    trainer, _, _, _ = _resumable(tmp_path / "run", torch.nn.Conv2d(1, 3, 3), [0.5], 1, resume_from=last)
    with pytest.raises(CheckpointError, match=r"already trained 1 epoch\(s\); set train#trainer#max_epochs above that"):
        trainer.run(range(2), max_epochs=1)
    assert not (tmp_path / "run").exists()  # nothing written by a refused resume


def test_a_failing_save_keeps_the_previous_checkpoint_and_stops_with_one_line(tmp_path, monkeypatch):
    import errno

    from monai_ext.errors import CheckpointError

    net = torch.nn.Conv2d(1, 3, 3)
    trainer, _, _, _ = _resumable(tmp_path, net, [0.5, 0.9, 0.95], 3)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if trainer.state.epoch >= 2:  # epoch 1 is written; then the disk fills up half-way through a file
            Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        CheckpointError,
        match=r"^.*model.pt: could not be written \(No space left on device\); the previous model.pt, if any, is intact$",
    ):
        trainer.run(range(2), max_epochs=3)
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["trainer"]["iteration"] == 2  # epoch 1's
    assert read_record(tmp_path / "model.pt")["metric"]["value"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model.pt", "trained.json"]  # no temporary file


def test_a_fresh_run_moves_an_earlier_runs_training_state_aside(tmp_path):
    net = torch.nn.Conv2d(1, 3, 3)
    trainer, _, _, _ = _resumable(tmp_path, net, [0.5], 1)
    trainer.run(range(2), max_epochs=1)
    earlier = (tmp_path / "last.pt").read_bytes()
    trainer, _, _, _ = _resumable(tmp_path, net, [0.4], 1)  # started again, not resumed
    trainer.run(range(2), max_epochs=1)
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
    assert (moved / "last.pt").read_bytes() == earlier
    assert read_record(tmp_path / "model.pt")["metric"]["value"] == 0.5  # the same experiment's better best stays


def _validated_trainer(epochs, per_class_scores):
    """A trainer of ``epochs`` x 3 iterations whose validator, run after each epoch, reports one row of
    per-class scores (two cases alike) as MONAI's metric handlers keep them in ``metric_details``."""
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(0.5 / engine.state.iteration)})
    validator = Engine(lambda engine, batch: None)
    scores = list(per_class_scores)

    @validator.on(Events.EPOCH_COMPLETED)  # first, as MONAI's metric handlers are attached when the evaluator is made
    def _score(engine):
        row = torch.tensor(scores.pop(0))
        engine.state.key_metric_name = "val_mean_dice"
        engine.state.metric_details = {"val_mean_dice": torch.stack([row, row])}
        engine.state.metrics["val_mean_dice"] = float(row.mean())
        engine.state.best_metric, engine.state.best_metric_epoch = (
            engine.state.metrics["val_mean_dice"],
            trainer.state.epoch,
        )

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run([0]))
    return trainer, validator


def test_training_stops_once_every_class_reaches_the_target():
    from monai_ext.handlers import StopAtTarget

    trainer, validator = _validated_trainer(6, [[0.70, 0.60], [0.90, 0.80], [0.88, 0.86], [0.95, 0.95]])
    StopAtTarget(validator, target=0.85).attach(trainer)
    trainer.run([0, 1, 2], max_epochs=6)
    assert trainer.state.epoch == 3  # epoch 2's mean (0.85) reaches it, its second class (0.80) does not
    off, validator = _validated_trainer(2, [[0.9, 0.9], [0.9, 0.9]])
    StopAtTarget(validator, target=None).attach(off)
    off.run([0, 1, 2], max_epochs=2)
    assert off.state.epoch == 2


def test_training_stops_once_validation_stops_improving_for_patience_validations():
    from monai_ext.handlers import StopAtTarget

    scores = [[0.5, 0.5], [0.6, 0.6], [0.6, 0.5], [0.55, 0.6], [0.9, 0.9]]
    trainer, validator = _validated_trainer(6, scores)
    StopAtTarget(validator, patience=2).attach(trainer)
    trainer.run([0, 1, 2], max_epochs=6)
    assert trainer.state.epoch == 4  # best at epoch 2 (0.60); epochs 3 and 4 do not beat it


def test_training_console_is_one_line_per_validation_unless_verbose_and_curves_are_drawn(caplog, tmp_path):
    import logging

    from monai_ext.handlers import TrainingProgress

    trainer, validator = _validated_trainer(2, [[0.5, 0.7], [0.8, 0.6]])
    progress = TrainingProgress(
        validator, verbose=False, disable=False, curves=tmp_path / "eval" / "training_curves.png"
    )
    progress.attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run([0, 1, 2], max_epochs=2)
    assert trainer.logger.level == logging.WARNING and validator.logger.level == logging.WARNING
    assert progress.bar is None and progress.last == pytest.approx(
        0.7
    )  # the bar closed, its postfix the last validation
    assert progress.validations == [(1, pytest.approx(0.6)), (2, pytest.approx(0.7))] and sorted(progress.losses) == [
        1,
        2,
    ]
    assert (tmp_path / "eval" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    trainer, validator = _validated_trainer(1, [[0.5, 0.5]])
    TrainingProgress(validator, verbose=True, disable=True).attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run([0, 1, 2], max_epochs=1)
    assert trainer.logger.level == logging.NOTSET  # MONAI's own lines back
    lines = [r.getMessage() for r in caplog.records if r.name == "monai_ext.training"]
    assert lines == [
        "epoch 1/1: val_mean_dice 0.5000 (best 0.5000 at epoch 1)"
    ]  # with no bar, the line goes to the log


def test_without_matplotlib_training_runs_and_says_it_draws_no_curves(caplog, tmp_path, monkeypatch):
    """matplotlib is optional (an export's metadata does not require it): training without it logs once and goes on."""
    import logging
    import sys

    from monai_ext.handlers import TrainingProgress

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    trainer, validator = _validated_trainer(2, [[0.5, 0.7], [0.8, 0.6]])
    TrainingProgress(validator, disable=True, curves=tmp_path / "training_curves.png").attach(trainer)
    with caplog.at_level(logging.WARNING):
        trainer.run([0, 1, 2], max_epochs=2)
    assert trainer.state.epoch == 2 and not (tmp_path / "training_curves.png").exists()
    assert [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()] == [
        f"matplotlib is not installed: no training curves at {tmp_path / 'training_curves.png'} (pip install matplotlib)"
    ]


def test_without_matplotlib_the_report_writes_its_metrics_and_says_it_draws_no_overlays(caplog, tmp_path, monkeypatch):
    import logging
    import sys

    from ignite.engine import Engine

    from monai_ext.handlers import SegmentationReport

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    label = torch.zeros(2, 16, 16)
    label[1, 4:12, 4:12] = 1
    label[0] = 1 - label[1]
    item = {"image": torch.rand(1, 16, 16), "pred": label.clone(), "label": label}
    evaluator = Engine(lambda engine, batch: [item, item])
    SegmentationReport(tmp_path, class_names={1: "square"}).attach(evaluator)
    with caplog.at_level(logging.WARNING):
        evaluator.run([0])
    summary = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert summary["cases"] == 2 and summary["metrics"]["dice_square"]["mean"] == pytest.approx(1.0)
    assert not (tmp_path / "overlays").exists()
    assert [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()] == [
        "matplotlib is not installed: no overlay pictures (pip install matplotlib)"
    ]  # once, not once a case
