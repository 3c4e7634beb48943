"""Training recipes: weight averaging and gradient clipping do what their papers say, and every bundle's
train.json sets the recipe its docs name."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer

from monai_ext.handlers import BundleCheckpointSaver, GradientClipping, WeightAverage

SETTINGS = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1}


def _trainer(net, lr=0.1, steps=6, max_norm=None, max_value=None):
    """A MONAI trainer on a fixed batch (x, y) with plain SGD: each step moves the weights by -lr * grad."""
    torch.manual_seed(0)
    data = [{"image": torch.randn(4, 3), "label": torch.randn(4, 2)}] * steps
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        amp=False,
    )
    GradientClipping(net.parameters(), max_norm=max_norm, max_value=max_value).attach(trainer)
    return trainer, data


def test_the_weight_average_follows_the_ramped_exponential_moving_average():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    trainer, _ = _trainer(net)
    history = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(net.weight.detach().numpy().copy()))
    average = WeightAverage(net, decay=0.5)
    average.attach(trainer)
    trainer.run()
    expected = history[0]  # the first update copies the weights
    for n, weights in enumerate(history[1:], start=1):  # then d_n = min(decay, (1 + n) / (10 + n)), n = updates so far
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * weights
    np.testing.assert_allclose(average.average.module.weight.detach().numpy(), expected, rtol=1e-6)
    assert not np.allclose(expected, history[-1])  # an average, not the last weights


def test_validation_scores_the_average_keeps_it_as_the_best_and_training_goes_on_with_the_raw_weights(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    trainer, _ = _trainer(net, steps=3)
    seen = {}
    validator = Engine(lambda engine, batch: seen.setdefault("weight", net.weight.detach().clone()))
    validator.data_loader = type("Loader", (), {"dataset": type("Dataset", (), {"data": [{"image": "case"}]})()})()

    @validator.on(Events.COMPLETED)
    def _score(engine):
        engine.state.key_metric_name = "val_mean_dice"
        engine.state.metrics["val_mean_dice"] = 0.5

    average = WeightAverage(net, validator, decay=0.9)
    saver = BundleCheckpointSaver(tmp_path, net, SETTINGS, validator, training_state={"weight_average": average})
    saver.attach(trainer)
    average.attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    trainer.run()
    averaged = average.average.module.weight.detach()
    torch.testing.assert_close(seen["weight"], averaged)  # the validator ran on the average
    assert not torch.allclose(net.weight.detach(), averaged)  # and the raw weights came back
    torch.testing.assert_close(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], averaged)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.testing.assert_close(state["network"]["weight"], net.weight.detach())  # training resumes from the raw weights
    resumed = WeightAverage(torch.nn.Linear(3, 2), decay=0.9)
    resumed.load_state_dict(state["weight_average"])  # ...and continues the average
    torch.testing.assert_close(resumed.average.module.weight.detach(), averaged)
    assert int(resumed.average.n_averaged) == 3


def test_without_a_decay_the_weight_average_is_off():
    net = torch.nn.Linear(3, 2)
    trainer, _ = _trainer(net, steps=2)
    average = WeightAverage(net, decay=None)
    average.attach(trainer)
    trainer.run()
    assert average.average is None and average.state_dict() == {}
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)


def _validated_every(every: int, scores):
    trainer = Engine(lambda engine, batch: None)
    validator = Engine(lambda engine, batch: None)
    scores = list(scores)

    @validator.on(Events.COMPLETED)
    def _score(engine):
        engine.state.key_metric_name = "val_mean_dice"
        engine.state.metrics["val_mean_dice"] = scores.pop(0)

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=every), lambda e: validator.run([0]))
    return trainer, validator


def test_a_plateau_schedule_counts_validations_and_other_schedules_count_epochs():
    from monai_ext.handlers import LrSchedule

    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=1)
    trainer, validator = _validated_every(2, [0.5, 0.5, 0.5])
    LrSchedule(plateau, validator).attach(trainer)
    trainer.run([0], max_epochs=6)
    # validations at epochs 2, 4, 6: the best, then two without improvement (> patience 1): one reduction. Stepped
    # every epoch with the last value it would have seen 5 epochs without improvement and reduced twice.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)

    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    trainer, validator = _validated_every(2, [0.5, 0.5, 0.5])
    LrSchedule(cosine, validator).attach(trainer)
    trainer.run([0], max_epochs=6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + np.cos(np.pi * 6 / 10)))
    with pytest.raises(ValueError, match="validator"):
        LrSchedule(plateau).attach(Engine(lambda engine, batch: None))


@pytest.mark.parametrize("max_norm, max_value", [(0.05, None), (None, 0.01), (None, None)])
def test_gradient_clipping_bounds_each_step_as_clip_by_norm_or_by_value(max_norm, max_value):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    trainer, data = _trainer(net, lr=1.0, steps=1, max_norm=max_norm, max_value=max_value)
    before = [p.detach().numpy().copy() for p in net.parameters()]
    # the gradient, computed independently with numpy: MSE over a (4, 2) output of x W^T + b
    x, y = data[0]["image"].numpy().astype(np.float64), data[0]["label"].numpy().astype(np.float64)
    w, b = (v.astype(np.float64) for v in before)
    residual = 2 * (x @ w.T + b - y) / y.size
    grads = [residual.T @ x, residual.sum(0)]
    if max_value is not None:
        grads = [np.clip(g, -max_value, max_value) for g in grads]
    if max_norm is not None:
        norm = np.sqrt(sum((g**2).sum() for g in grads))
        grads = [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]
        assert norm > max_norm  # the case clips
    trainer.run()
    for p, old, g in zip(net.parameters(), before, grads):
        np.testing.assert_allclose(old - p.detach().numpy(), g, rtol=1e-4, atol=1e-7)


# Each bundle's recipe, as its docs/README.md names it with the source (issue 17): optimiser, learning rate and
# its schedule, gradient clipping, weight average, early stopping and loss.
NNUNET = {
    "optimizer": ("torch.optim.SGD", {"momentum": 0.99, "nesterov": True, "weight_decay": 3e-05}),
    "learning_rate": 0.01,
    "lr_scheduler": ("torch.optim.lr_scheduler.PolynomialLR", {"power": 0.9}),
    "grad_clip_norm": 12,
    "loss": "DiceCELoss",
}
RECIPES = {
    "unet": {
        "optimizer": ("torch.optim.AdamW", {"weight_decay": 1e-05}),
        "learning_rate": 0.001,
        "lr_scheduler": ("torch.optim.lr_scheduler.CosineAnnealingLR", {}),
        "loss": "DiceCELoss",
    },
    "unetplusplus": {**NNUNET, "loss": "monai_ext.losses.DeepSupervisionLoss"},
    "resunet": {
        "optimizer": ("torch.optim.AdamW", {"weight_decay": 1e-05}),
        "learning_rate": 0.001,
        "lr_scheduler": ("torch.optim.lr_scheduler.CosineAnnealingLR", {}),
        "loss": "DiceCELoss",
    },
    "resunetplusplus": {
        "optimizer": ("torch.optim.NAdam", {}),
        "learning_rate": 0.0001,
        "early_stop_patience": 10,
        "loss": "DiceLoss",
        "lr_scheduler": ("torch.optim.lr_scheduler.ReduceLROnPlateau", {"mode": "max", "factor": 0.1, "patience": 5}),
    },
    "madgnet": {
        "optimizer": ("torch.optim.Adam", {}),
        "learning_rate": "$0.0001 if @pretrained_backbone else 0.001",
        "grad_clip_value": 0.5,
        "multiscale_rates": [0.75, 1.0, 1.25],
        "loss": "monai_ext.losses.MADGNetLoss",
        "lr_scheduler": ("torch.optim.lr_scheduler.StepLR", {"gamma": 0.1}),
    },
    "medsegdiff": {
        "optimizer": ("torch.optim.AdamW", {"weight_decay": 0.0}),
        "learning_rate": 0.0001,
        "ema_decay": 0.9999,
        "lr_scheduler": ("torch.optim.lr_scheduler.ConstantLR", {"factor": 1.0}),
        "loss": "torch.nn.MSELoss",
    },
    "higmisnet": {
        "optimizer": ("torch.optim.Adam", {"betas": [0.5, 0.999]}),
        "learning_rate": 0.0002,
        "loss": "DiceCELoss",
        "lr_scheduler": ("torch.optim.lr_scheduler.PolynomialLR", {"power": 0.9}),
    },
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_bundle_trains_with_the_recipe_its_docs_name(name):
    import json

    from conftest import BUNDLES_DIR

    config = json.loads((BUNDLES_DIR / name / "configs" / "train.json").read_text())
    recipe = RECIPES[name]
    for key in ("optimizer", "lr_scheduler"):
        target, kwargs = recipe[key]
        assert config[key]["_target_"] == target
        assert {k: config[key][k] for k in kwargs} == kwargs
    assert config["optimizer"]["lr"] == "@learning_rate" and config["learning_rate"] == recipe["learning_rate"]
    for key in ("grad_clip_norm", "grad_clip_value", "ema_decay", "early_stop_patience"):
        assert config[key] == recipe.get(key), key
    assert config["loss"]["_target_"] == recipe["loss"]
    # the pieces are wired: clipping and averaging in the trainer, the average in the resumable state, patience
    handlers = config["train"]["handlers"]
    targets = [h["_target_"] if isinstance(h, dict) else h for h in handlers]
    assert "monai_ext.handlers.GradientClipping" in targets
    assert (
        "monai_ext.handlers.LrSchedule" in targets and "LrScheduleHandler" not in targets
    )  # plateaus step per validation
    saver = handlers[targets.index("monai_ext.handlers.BundleCheckpointSaver")]
    # by name: MONAI Label puts a CheckpointLoader first among the handlers, which would shift a place
    assert saver["training_state"]["weight_average"] == "@weight_average"
    assert handlers[targets.index("monai_ext.handlers.Attach")]["handler"] == "@weight_average"
    assert config["weight_average"]["_target_"] == "monai_ext.handlers.WeightAverage"
    assert handlers[targets.index("monai_ext.handlers.StopAtTarget")]["patience"] == "@early_stop_patience"
    assert config.get("multiscale_rates") == recipe.get(
        "multiscale_rates"
    )  # PraNet's multi-scale training, MADGNet's recipe
    if "multiscale_rates" in config:
        assert handlers[targets.index("monai_ext.handlers.MultiScaleTraining")]["rates"] == "@multiscale_rates"
    docs = (BUNDLES_DIR / name / "docs" / "README.md").read_text()
    assert "### Training recipe" in docs and "Source" in docs


@pytest.mark.parametrize("bundle", ["resunetplusplus", "unetplusplus"])
def test_the_adamw_recipe_is_one_overlay_too(bundle):
    from conftest import BUNDLES_DIR
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(
        [
            str(BUNDLES_DIR / bundle / "configs" / "train.json"),
            str(Path(__file__).resolve().parents[1] / "recipes" / "adamw.json"),
        ]
    )
    parser["network_def"] = {
        "_target_": "torch.nn.Conv2d",
        "in_channels": 1,
        "out_channels": 3,
        "kernel_size": 1,
    }  # the recipe, not the net
    optimizer, scheduler = parser.get_parsed_content("optimizer"), parser.get_parsed_content("lr_scheduler")
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 0.001
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and parser["grad_clip_norm"] is None


def test_the_nnunet_recipe_is_one_overlay_for_a_supervised_bundle():
    from conftest import BUNDLES_DIR
    from monai.bundle import ConfigParser

    overlay = Path(__file__).resolve().parents[1] / "recipes" / "nnunet.json"
    parser = ConfigParser()
    parser.read_config([str(BUNDLES_DIR / "unet" / "configs" / "train.json"), str(overlay)])
    parser["patch_size"] = [32, 32]
    optimizer, scheduler = parser.get_parsed_content("optimizer"), parser.get_parsed_content("lr_scheduler")
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and (
        group["lr"],
        group["momentum"],
        group["nesterov"],
        group["weight_decay"],
    ) == (0.01, 0.99, True, 3e-05)
    assert isinstance(scheduler, torch.optim.lr_scheduler.PolynomialLR) and scheduler.power == 0.9
    assert (
        scheduler.total_iters == parser.get_parsed_content("train#trainer#max_epochs")
        and parser["grad_clip_norm"] == 12
    )


def test_multi_scale_training_resizes_each_batch_to_the_next_rate_in_turn_as_pranet_does():
    from scipy import ndimage

    from monai_ext.handlers import MultiScaleTraining

    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.standard_normal((2, 1, 96, 96)), dtype=torch.float32)
    label = torch.as_tensor(rng.integers(0, 3, (2, 1, 96, 96)))
    seen = []

    def step(engine, batch):
        seen.append((tuple(batch["image"].shape[2:]), batch["image"].clone(), batch["label"].clone()))

    trainer = Engine(step)
    MultiScaleTraining(rates=(0.75, 1.0, 1.25), multiple=32).attach(trainer)
    trainer.run([{"image": image, "label": label}] * 4, max_epochs=1)
    # PraNet's sizes: round(96 * rate / 32) * 32, the rates in turn
    assert [s for s, _, _ in seen] == [(64, 64), (96, 96), (128, 128), (64, 64)]
    for size, resized, resized_label in seen:
        # the image as SciPy's linear zoom with corners aligned (PraNet's align_corners=True)
        reference = ndimage.zoom(image[0, 0].numpy(), size[0] / 96, order=1, grid_mode=False)
        np.testing.assert_allclose(resized[0, 0].numpy(), reference, atol=1e-4)
        # labels stay class indices: each is the input's label at the nearest-below source position
        source = np.floor(np.arange(size[0]) * 96 / size[0]).astype(int)
        np.testing.assert_array_equal(resized_label[0, 0].numpy(), label[0, 0].numpy()[np.ix_(source, source)])
        assert resized_label.dtype == label.dtype


def test_multi_scale_training_is_off_without_rates_and_refuses_bad_ones():
    from monai_ext.handlers import MultiScaleTraining

    trainer = Engine(lambda engine, batch: None)
    MultiScaleTraining(rates=None).attach(trainer)
    MultiScaleTraining(rates=[1.0]).attach(trainer)
    assert not trainer.has_event_handler(MultiScaleTraining, Events.ITERATION_STARTED)
    assert not any(trainer._event_handlers[Events.ITERATION_STARTED])
    assert MultiScaleTraining(multiple=16).size((40, 64, 24), 1.25) == (
        48,
        80,
        32,
    )  # halves round up, never below the multiple
    with pytest.raises(ValueError, match="rates"):
        MultiScaleTraining(rates=(0.5, -1.0))


def test_resunetplusplus_draws_the_official_offline_augmentation_online():
    from conftest import BUNDLES_DIR
    from monai.bundle import ConfigParser
    from monai.transforms import RandCoarseDropoutd, RandRotated, RandScaleIntensityd, RandZoomd

    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / "resunetplusplus" / "configs" / "train.json"))
    parser["patch_size"] = [50, 50]
    transforms = parser.get_parsed_content("train#random_transforms")
    kinds = {type(t): t for t in transforms}
    # each kind of the official 31 copies, with its share of them as its probability
    assert kinds[RandZoomd].prob == 0.4 and (
        kinds[RandZoomd].rand_zoom.min_zoom,
        kinds[RandZoomd].rand_zoom.max_zoom,
    ) == ((1.0,), (2.0,))
    assert kinds[RandRotated].prob == 0.16 and kinds[RandRotated].rand_rotate.range_x == (-1.5708, 1.5708)
    assert [t.prob for t in transforms if isinstance(t, RandScaleIntensityd)] == [0.5, 0.16]
    # the cutout removes the structure from the label as well as from the image (the official mask is zeroed there)
    cutout = kinds[RandCoarseDropoutd]
    assert cutout.prob == 0.1
    cutout.set_random_state(0)
    cutout.prob = cutout.dropper.prob = 1.0
    item = cutout({"image": torch.ones(1, 50, 50), "label": torch.full((1, 50, 50), 2.0)})
    hole = item["image"][0] == 0
    assert int(hole.sum()) == 22 * 22  # 0.44 of the side
    assert bool((item["label"][0][hole] == 0).all()) and bool((item["label"][0][~hole] == 2).all())
