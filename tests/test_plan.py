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
    assert target_spacing(spacings, [[512, 512, 30]] * 10) == [
        0.7,
        0.7,
        round(float(np.percentile([1.0] + [5.0] * 9, 10)), 4),
    ]
    # thick slices but many of them: not anisotropic by nnU-Net's size test, the median stays
    assert target_spacing(spacings, [[128, 128, 300]] * 10) == [0.7, 0.7, 5.0]
    assert target_spacing([[0.5, 0.8], [0.7, 0.8]], [[100, 80]] * 2) == [0.6, 0.8]


def test_patch_is_the_median_shape_in_multiples_of_the_network_then_shortened_where_it_is_longest():
    assert patch_size([92, 110, 92], 16, 128**3) == [96, 112, 96]  # not cubic
    assert patch_size([92, 110, 92], 16, 80**3) == [80, 80, 80]
    assert patch_size([30, 20], 32, 512**2) == [32, 32]
    # CT: the in-plane axes (358 mm) shortened in turn, the 30 slices of 5 mm (150 mm) kept whole
    assert patch_size([512, 512, 30], [16, 16, 4], 128**3, spacing=[0.7, 0.7, 5.0]) == [256, 256, 32]
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
    assert (
        plan["rotate90_planes"] == [[0, 2]]
        and plan["rotate_planes"] == [[0, 1], [1, 2]]
        and plan["rotate_degrees"] == 30.0
    )
    assert plan["scale"] == [0.7, 1.4]
    thick = augmentation([160, 160, 32], [0.7, 0.7, 4.6])
    assert thick["rotate90_planes"] == [[0, 1]] and thick["rotate_planes"] == []  # never across the thick axis
    square = augmentation([64, 64])
    assert square["rotate90_planes"] == [[0, 1]] and square["rotate_degrees"] == 0.0


@pytest.mark.parametrize("patch", [(24, 32, 16), (24, 24, 16), (40, 28)])
def test_spatial_augmentation_keeps_any_patch_shape_and_flips_every_axis(patch):
    label = np.zeros((1, *patch), dtype=np.float32)
    label[(0, *[1] * len(patch))] = 1  # one voxel near the origin corner
    data = {
        "image": torch.arange(math.prod(patch), dtype=torch.float32).reshape(1, *patch),
        "label": torch.from_numpy(label),
    }
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
    monkeypatch.setattr("monai_ext.handlers.time_budget.time.perf_counter", lambda: clock[0])  # the budget clock
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
    budgeted, epochs = _learning_rates(
        monkeypatch, minutes=1.0
    )  # 10 s an epoch: the budget stops it near epoch 6 of 100
    assert 4 <= epochs <= 6
    assert (
        budgeted[0] > 0.999 and budgeted[-1] < 0.02
    )  # cosine's end, where the epoch count alone would still be at 0.99
    assert all(a >= b for a, b in zip(budgeted, budgeted[1:]))  # never climbs back
    free, epochs = _learning_rates(monkeypatch, minutes=None, max_epochs=8)
    fitting, epochs_fitting = _learning_rates(monkeypatch, minutes=10.0, max_epochs=8)  # 80 s of work in 600
    assert epochs == epochs_fitting == 8
    np.testing.assert_allclose(fitting, free, rtol=1e-12)


# The machine's part of the plan, with the probe replaced by a cost model: a forward and backward pass whose
# seconds and bytes grow with the patch's voxels. The real probe runs in test_real_shapes and test_prepare_folder.
MNI = {"spacings": [[2.0, 2.0, 2.0]] * 22, "shapes": [[91, 109, 91]] * 22, "training_cases": 16}
OVERLAY = {"spatial_dims": 3, "in_channels": 1, "out_channels": 4, "patch_size": [96, 128, 96], "pixdim": None}


def _plan(
    monkeypatch, device, seconds_per_voxel=0.0, bytes_per_voxel=0.0, fits=None, memory=80 * 2**30, step_seconds=2.0
):
    from conftest import BUNDLES_DIR

    from monai_ext.bundle import plan as bundle_plan

    probed = []

    def probe(parser, patch, device):
        voxels = math.prod(patch)
        probed.append(list(patch))
        if fits is not None and voxels > fits:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"seconds_per_patch": voxels * seconds_per_voxel, "bytes_per_patch": voxels * bytes_per_voxel}

    class Properties:
        total_memory = memory

    monkeypatch.setattr(bundle_plan, "_probe", probe)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    values = bundle_plan.plan_training(BUNDLES_DIR / "unet", OVERLAY, MNI, device=device, step_seconds=step_seconds)
    return values, probed


def test_on_a_cpu_a_fast_network_keeps_the_whole_median_volume_and_fills_the_step(monkeypatch):
    values, probed = _plan(monkeypatch, "cpu", seconds_per_voxel=1e-8)  # 0.01 s a patch of 1e6 voxels
    assert values["patch_size"] == [96, 112, 96] and len(probed) == 1  # 91x109x91 in multiples of the strides
    assert values["batch_size"] * values["num_samples"] >= 32 and values["num_samples"] == 4  # the step's cap
    assert values["plan"]["machine"]["device"] == "cpu" and values["plan"]["machine"]["target_seconds_per_step"] == 2.0


def test_on_a_cpu_a_slow_network_gets_a_shorter_patch_until_a_step_holds_two(monkeypatch):
    values, probed = _plan(monkeypatch, "cpu", seconds_per_voxel=2.0 / 96**3)  # 2 s for a 96^3 patch
    patch = values["patch_size"]
    assert len(probed) > 1 and math.prod(patch) * 2.0 / 96**3 <= 1.0  # a patch costs at most half the 2 s step
    assert math.prod(patch) > 0.5 * 96**3 / 2  # shortened to the step, not far below it
    assert all(p % m == 0 for p, m in zip(patch, values["plan"]["patch_multiple"]))
    assert values["batch_size"] * values["num_samples"] == 2


def test_on_a_gpu_the_batch_fills_half_its_memory_as_nnunet_sizes_it(monkeypatch):
    gb = 2**30
    values, _ = _plan(
        monkeypatch, "cuda", bytes_per_voxel=1.0 * gb / 1e6, memory=24 * gb
    )  # ~1 GB a patch of 1e6 voxels
    per_patch = math.prod(values["patch_size"]) / 1e6
    patches = values["batch_size"] * values["num_samples"]
    assert values["patch_size"] == [96, 112, 96]  # a GPU plan is not shortened for time
    assert (
        patches <= 0.5 * 24 / per_patch < patches + 4
    )  # 12 GB of 24 for the step, never more; whole volumes of 4 patches
    machine = values["plan"]["machine"]
    assert machine["device"] == "Fake GPU" and machine["memory_gb"] == 24.0 and machine["target_memory_fraction"] == 0.5


def test_on_a_gpu_a_patch_that_runs_out_of_memory_is_halved_until_it_fits(monkeypatch):
    values, probed = _plan(monkeypatch, "cuda", bytes_per_voxel=1000.0, fits=300_000)
    assert math.prod(probed[0]) > 300_000 and math.prod(values["patch_size"]) <= 300_000
    assert probed[-1] == values["patch_size"] and len(probed) >= 3


def test_on_a_gpu_that_no_patch_fits_the_plan_says_so(monkeypatch):
    with pytest.raises(ValueError, match="does not fit in the memory of cuda"):
        _plan(monkeypatch, "cuda", bytes_per_voxel=1000.0, fits=10)


def test_on_a_cpu_a_very_slow_network_keeps_an_eighth_of_the_median_volume_and_takes_longer_steps(monkeypatch):
    values, _ = _plan(monkeypatch, "cpu", seconds_per_voxel=30.0 / 64**3)  # Hi-gMISnet-like: 30 s for a 64^3 patch
    patch, median = values["patch_size"], values["plan"]["median_shape_at_target"]
    assert math.prod(median) / 16 < math.prod(patch) <= math.prod(median) / 8  # shortened to the floor, no further
    machine = values["plan"]["machine"]
    assert (
        values["batch_size"] * values["num_samples"] == 2
        and machine["seconds_per_step"] > machine["target_seconds_per_step"]
    )
