"""The training plan: nnU-Net's rules for spacing, patch and pooling, augmentation that keeps any patch shape,
and a learning-rate schedule that anneals over a time budget."""

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai_ext.data.plan import augmentation, patch_size, stride_product, target_spacing, unet_strides
from monai_ext.handlers import LrSchedule, TimeBudget
from monai_ext.transforms import SpatialAugmentd


def test_target_spacing_is_the_median_and_the_coarse_axis_of_anisotropic_data_takes_its_10th_percentile():
    assert target_spacing([[1.0, 1.0, 2.5], [1.0, 1.0, 3.5], [0.8, 0.8, 2.5]], [[200, 200, 100]] * 3) == [1.0, 1.0, 2.5]
    # CT at 0.7 mm in plane and 5 mm slices (one case at 1 mm): 5 > 3 x 0.7 and 30 x 3 < 512
    spacings = [[0.7, 0.7, 5.0]] * 9 + [[0.7, 0.7, 1.0]]
    assert target_spacing(spacings, [[512, 512, 30]] * 10) == [0.7, 0.7, round(float(np.percentile([1.0] + [5.0] * 9, 10)), 4)]
    # thick slices but many of them: not anisotropic by nnU-Net's size test, the median stays
    assert target_spacing(spacings, [[128, 128, 300]] * 10) == [0.7, 0.7, 5.0]
    assert target_spacing([[0.5, 0.8], [0.7, 0.8]], [[100, 80]] * 2) == [0.6, 0.8]


def test_patch_is_the_median_shape_in_multiples_of_the_network_then_shortened_where_it_is_longest():
    assert patch_size([92, 110, 92], 16, 128 ** 3) == [96, 112, 96]  # not cubic
    assert patch_size([92, 110, 92], 16, 80 ** 3) == [80, 80, 80]
    assert patch_size([30, 20], 32, 512 ** 2) == [32, 32]
    # CT: the in-plane axes (358 mm) shortened in turn, the 30 slices of 5 mm (150 mm) kept whole
    assert patch_size([512, 512, 30], [16, 16, 4], 128 ** 3, spacing=[0.7, 0.7, 5.0]) == [256, 256, 32]
    assert patch_size([10, 10, 10], 32, 8) == [32, 32, 32]  # never below one multiple


def test_unet_pools_an_axis_only_while_its_spacing_is_within_twice_the_finest_and_it_has_8_voxels():
    strides = unet_strides([0.7, 0.7, 5.0], [256, 256, 32], levels=4)
    assert strides == [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert stride_product(strides, 3) == [16, 16, 4]
    assert unet_strides([2.0, 2.0, 2.0], [80, 96, 80]) == [[2, 2, 2]] * 4
    assert unet_strides([1.0, 1.0], [64, 8]) == [[2, 2], [2, 1], [2, 1], [2, 1]]
    assert stride_product([2, 2, 2, 2], 2) == [16, 16]


def test_augmentation_turns_quarter_turns_only_in_square_planes_of_equal_spacing():
    plan = augmentation([96, 112, 96], [2.0, 2.0, 2.0])
    assert plan["flip_axes"] == [0, 1, 2]
    assert plan["rotate90_planes"] == [[0, 2]] and plan["rotate_planes"] == [[0, 1], [1, 2]] and plan["rotate_degrees"] == 30.0
    assert plan["scale"] == [0.7, 1.4]
    thick = augmentation([160, 160, 32], [0.7, 0.7, 4.6])
    assert thick["rotate90_planes"] == [[0, 1]] and thick["rotate_planes"] == []  # never across the thick axis
    square = augmentation([64, 64])
    assert square["rotate90_planes"] == [[0, 1]] and square["rotate_degrees"] == 0.0


@pytest.mark.parametrize("patch", [(24, 32, 16), (24, 24, 16), (40, 28)])
def test_spatial_augmentation_keeps_any_patch_shape_and_flips_every_axis(patch):
    label = np.zeros((1, *patch), dtype=np.float32)
    label[(0, *[1] * len(patch))] = 1  # one voxel near the origin corner
    data = {"image": torch.arange(math.prod(patch), dtype=torch.float32).reshape(1, *patch), "label": torch.from_numpy(label)}
    transform = SpatialAugmentd(["image", "label"], patch)
    transform.set_random_state(0)
    mirrored = set()
    for _ in range(60):
        out = transform(dict(data))
        assert tuple(out["image"].shape[1:]) == patch and tuple(out["label"].shape[1:]) == patch
        assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 1.0}  # labels interpolated by nearest neighbour
        where = np.argwhere(np.asarray(out["label"])[0] > 0)
        for axis in range(len(patch)):
            if len(where) and where[0][axis] >= patch[axis] // 2:
                mirrored.add(axis)
    assert mirrored == set(range(len(patch)))


def test_a_patch_overridden_after_planning_never_gets_a_quarter_turn_in_an_uneven_plane():
    planned = augmentation([32, 32, 32])
    transform = SpatialAugmentd(["image"], (32, 48, 32), plan=planned)
    assert [t.spatial_axes for t in transform.transforms if type(t).__name__ == "RandRotate90d"] == [(0, 2)]
    transform.set_random_state(1)
    for _ in range(20):
        assert tuple(transform({"image": torch.zeros(1, 32, 48, 32)})["image"].shape) == (1, 32, 48, 32)


def _learning_rates(monkeypatch, minutes, max_epochs=100, iterations=10):
    """The rate of every iteration of a cosine schedule over ``max_epochs``, on a machine where an iteration
    takes a second and a quarter."""
    clock = [0.0]
    monkeypatch.setattr("monai_ext.handlers.lr_schedule.time.perf_counter", lambda: clock[0])
    monkeypatch.setattr("monai_ext.handlers.time_budget.time.perf_counter", lambda: clock[0])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    rates = []

    def step(engine, batch):
        rates.append(optimizer.param_groups[0]["lr"])
        clock[0] += 1.0

    engine = Engine(step)

    @engine.on(Events.GET_BATCH_COMPLETED)
    def loaded(engine):  # loading a batch takes time too, before the rate is set
        clock[0] += 0.25

    LrSchedule(scheduler, minutes=minutes).attach(engine)
    TimeBudget(minutes).attach(engine)
    engine.run(range(iterations), max_epochs=max_epochs)
    return rates, engine.state.epoch


def test_a_budgeted_run_anneals_to_the_final_rate_and_a_run_within_its_budget_is_unchanged(monkeypatch):
    budgeted, epochs = _learning_rates(monkeypatch, minutes=1.0)  # 10 s an epoch: the budget stops it near epoch 6 of 100
    assert 4 <= epochs <= 6
    assert budgeted[0] > 0.999 and budgeted[-1] < 0.02  # cosine's end, where the epoch count alone would still be at 0.99
    assert all(a >= b for a, b in zip(budgeted, budgeted[1:]))  # never climbs back
    free, epochs = _learning_rates(monkeypatch, minutes=None, max_epochs=8)
    fitting, epochs_fitting = _learning_rates(monkeypatch, minutes=10.0, max_epochs=8)  # 80 s of work in 600
    assert epochs == epochs_fitting == 8
    np.testing.assert_allclose(fitting, free, rtol=1e-12)
