"""MedSegDiff and the diffusion sampler: shapes, caching, determinism, uncertainty, overfitting."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_ext.data import synthetic_case
from monai_ext.inferers import DiffusionSegmentationInferer, SegmentationDiffusionPrepareBatch, mask_to_diffusion
from monai_ext.inferers.diffusion import staple
from monai_ext.networks.blocks import FFParser
from monai_ext.networks.nets import MedSegDiff
from monai_ext.transforms import SplitDiffusionMapsd


def _net(**kw):
    return MedSegDiff(2, 1, 1, 32, channels=(16, 32, 64), norm_num_groups=8, **kw)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_and_the_cached_image_encoding(spatial_dims):
    size = 32 if spatial_dims == 2 else 16
    net = MedSegDiff(spatial_dims, 2, 3, size, channels=(8, 16, 32), norm_num_groups=4)
    image = torch.randn([2, 2] + [size] * spatial_dims)
    x_t = torch.randn([2, 3] + [size] * spatial_dims)
    t = torch.tensor([3, 700])
    out = net(torch.cat([x_t, image], 1), t)
    assert out.shape == x_t.shape
    # forward = denoise with the image encoded once; ensemble members share one encoding
    torch.testing.assert_close(out, net.denoise(x_t, t, net.encode_image(image)))
    members = x_t.repeat_interleave(4, dim=0)
    shared = net.denoise(members, t.repeat_interleave(4), net.encode_image(image))
    torch.testing.assert_close(shared[::4], out, atol=1e-5, rtol=1e-5)
    out.sum().backward()


def test_paper_components_ff_parser_at_every_scale_and_ablations():
    net = _net()
    parsers = [m for m in net.modules() if isinstance(m, FFParser)]
    assert [p.spatial_size for p in parsers] == [[32, 32], [16, 16], [8, 8]]
    assert not any(isinstance(m, FFParser) for m in _net(ff_parser=False).modules())
    x, t = torch.randn(1, 2, 32, 32), torch.tensor([5])
    assert _net(dynamic_encoding=False)(x, t).shape == (1, 1, 32, 32)
    # the output layer starts at zero, so an untrained denoiser predicts 0
    assert torch.count_nonzero(net(x, t)) == 0


def test_torchscript_and_bad_inputs():
    net = _net().eval()
    x, t = torch.randn(2, 2, 32, 32), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x, t), net(x, t))
    with pytest.raises(ValueError, match="windows of"):
        net(torch.randn(1, 2, 48, 48), torch.tensor([1]))
    with pytest.raises(ValueError, match="noisy-mask"):
        net(torch.randn(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="divisible"):
        MedSegDiff(2, 1, 1, 34, channels=(8, 16, 32))


def test_masks_to_the_diffused_variable_and_training_batches():
    label = torch.tensor([[[[0, 1, 2]]]])
    assert mask_to_diffusion(label, 1).tolist() == [[[[-1.0, 1.0, 1.0]]]]
    assert mask_to_diffusion(label, 2).tolist() == [[[[-1.0, 1.0, -1.0]], [[-1.0, -1.0, 1.0]]]]
    batch = {"image": torch.randn(2, 1, 32, 32), "label": torch.randint(0, 2, (2, 1, 32, 32))}
    for kind in ("epsilon", "sample"):
        mask, target, args, kwargs = SegmentationDiffusionPrepareBatch(1000, 1, kind)(batch)
        assert set(mask.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(target, kwargs["noise"] if kind == "epsilon" else mask)
        assert kwargs["mode"] == "concat" and torch.equal(kwargs["condition"], batch["image"])
        out = DiffusionInferer(DDPMScheduler(1000, prediction_type=kind))(mask, _net(), **kwargs)
        assert out.shape == mask.shape


class _Oracle(torch.nn.Module):
    """Predicts the clean mask ``2 * (image > 0) - 1`` whatever it is given: every sample is the same."""

    mask_channels = 1

    def encode_image(self, image):
        return [image]

    def denoise(self, x_t, t, features):
        image = features[0].repeat_interleave(x_t.shape[0] // features[0].shape[0], 0)
        return (image > 0).float() * 2 - 1


def test_uncertainty_is_zero_where_all_samples_agree():
    image = torch.randn(2, 1, 16, 16)
    sampler = DiffusionSegmentationInferer(
        DDIMScheduler(1000, prediction_type="sample"),
        10,
        ensemble=4,
        seed=0,
        maps=("probability", "variance", "entropy", "staple"),
    )
    out = sampler(image, _Oracle())
    probability, variance, entropy, consensus = out.unbind(1)
    assert torch.equal(probability, (image[:, 0] > 0).float())
    assert torch.count_nonzero(variance) == 0 and torch.count_nonzero(entropy) == 0
    assert torch.equal(consensus, probability)


def test_variance_and_entropy_of_disagreeing_members():
    members = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1, 1, 1).expand(1, 4, 1, 2, 2).clone()
    members[:, :, :, 0, 0] = 1.0  # everybody agrees on one voxel
    maps = DiffusionSegmentationInferer(DDPMScheduler(10), ensemble=4).summarise(members)
    assert maps.shape == (1, 3, 2, 2)
    assert maps[0, 1, 0, 0] == 0 and maps[0, 2, 0, 0] == 0
    assert maps[0, 0, 1, 1] == pytest.approx(0.5) and maps[0, 1, 1, 1] == pytest.approx(0.25)
    assert maps[0, 2, 1, 1] == pytest.approx(np.log(2), rel=1e-4)


def test_staple_weighs_the_raters():
    a = torch.zeros(8, 8, dtype=torch.bool)
    a[2:6, 2:6] = True
    b = torch.zeros(8, 8, dtype=torch.bool)
    b[2:6, 3:7] = True
    result = staple(torch.stack([a, a, a, b])[None, :, None])[0, 0]
    assert result[3, 2] > 0.5 and result[3, 6] < 0.5 and result[4, 4] > 0.99  # the majority's area wins


def test_ddim_with_eta_0_is_deterministic_for_a_seed_and_the_ensemble_runs_in_one_call_per_step():
    torch.manual_seed(0)
    net = _net().eval()
    with torch.no_grad():
        for p in net.out.parameters():  # a non-zero output layer, so that the samples depend on the noise
            p.normal_(0, 0.1)
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append(a))
    image = torch.randn(1, 1, 32, 32)

    def run(seed):
        return DiffusionSegmentationInferer(DDIMScheduler(1000), 8, ensemble=5, eta=0.0, seed=seed).sample(image, net)

    a, b, c = run(7), run(7), run(8)
    assert a.shape == (1, 5, 1, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # denoise is called directly with all five members (no forward per member)
    assert not calls


def test_sliding_window_sampling_of_a_larger_image_is_reproducible():
    torch.manual_seed(0)
    net = _net().eval()
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.1)
    image = torch.randn(1, 1, 48, 40)
    sampler = DiffusionSegmentationInferer(DDIMScheduler(1000), 3, ensemble=2, seed=1, roi_size=32, overlap=0.5)
    out = sampler(image, net)
    assert out.shape == (1, 3, 48, 40)  # probability, variance, entropy
    assert torch.equal(out, sampler(image, net))  # the seed covers every window
    other = DiffusionSegmentationInferer(DDIMScheduler(1000), 3, ensemble=2, seed=2, roi_size=32, overlap=0.5)(
        image, net
    )
    assert not torch.equal(out, other)


def test_a_2d_sampler_on_a_volume_samples_each_slice_with_its_own_image():
    net = _net().eval()
    with torch.no_grad():
        for p in net.out.parameters():  # the output layer starts at zero: make the prediction depend on the image
            p.normal_(0, 0.1)
    volume = torch.randn(1, 1, 32, 32, 3)
    sampler = DiffusionSegmentationInferer(
        DDIMScheduler(1000), 2, ensemble=2, seed=1, roi_size=[32, 32], sw_batch_size=2
    )
    out = sampler(volume, net)
    assert out.shape == (1, 3, 32, 32, 3)
    assert torch.equal(out, sampler(volume, net))
    # a slice's maps depend on that slice's image: changing one slice changes only its own output
    changed = volume.clone()
    changed[..., 1] = torch.randn(1, 1, 32, 32)
    other = sampler(changed, net)
    assert not torch.equal(other[..., 1], out[..., 1])
    assert torch.equal(other[..., 0], out[..., 0]) and torch.equal(other[..., 2], out[..., 2])


def test_split_maps_to_label_probability_and_uncertainty():
    stacked = torch.zeros(6, 2, 2)  # 3 maps x 2 classes
    stacked[0, 0, 0] = 0.9  # class 1 probable
    stacked[1, 1, 1] = 0.7  # class 2 probable
    stacked[1, 0, 1] = 0.4  # below threshold
    out = SplitDiffusionMapsd("pred")({"pred": stacked})
    assert out["pred"][0].tolist() == [[1.0, 0.0], [0.0, 2.0]]
    assert torch.equal(out["pred_variance"], stacked[2:4]) and torch.equal(out["pred_entropy"], stacked[4:6])


def test_a_tiny_model_overfits_one_image_so_that_sampling_returns_its_mask():
    """With the bundle's prediction target: the paper's noise target reaches only Dice 0.77 in these 120 steps."""
    import json

    from conftest import BUNDLES_DIR

    target_kind = json.loads((BUNDLES_DIR / "medsegdiff" / "configs" / "train.json").read_text())["prediction_type"]
    torch.manual_seed(0)
    image, label = synthetic_case((32, 32), np.random.default_rng(2))
    batch = {
        "image": torch.from_numpy(image)[None, None].repeat(4, 1, 1, 1),
        "label": torch.from_numpy((label > 0).astype(np.int64))[None, None].repeat(4, 1, 1, 1),
    }
    net = _net()
    prepare = SegmentationDiffusionPrepareBatch(1000, 1, target_kind)
    inferer = DiffusionInferer(DDPMScheduler(1000, prediction_type=target_kind))
    optimizer = torch.optim.AdamW(net.parameters(), 2e-3)
    for _ in range(120):
        inputs, target, _, kwargs = prepare(batch)
        optimizer.zero_grad()
        F.mse_loss(inferer(inputs, net, **kwargs), target).backward()
        optimizer.step()
    net.eval()
    sampler = DiffusionSegmentationInferer(DDIMScheduler(1000, prediction_type=target_kind), 20, ensemble=3, seed=0)
    probability = sampler(batch["image"][:1], net)[0, 0]
    pred, truth = probability > 0.5, batch["label"][0, 0] > 0
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice >= 0.9, float(dice)


def test_the_denoiser_exports_to_onnx_with_the_timestep_as_an_input(tmp_path):
    """The two-input export the bundle's README gives: ONNX Runtime equals eager for any batch and timesteps."""
    import onnxruntime

    torch.manual_seed(0)
    net = MedSegDiff(
        spatial_dims=2,
        image_channels=1,
        mask_channels=2,
        spatial_size=[32, 32],
        channels=[8, 16],
        num_res_blocks=1,
        norm_num_groups=4,
    ).eval()
    with torch.no_grad():
        for p in net.parameters():  # move the zero-initialised output layers off zero
            p.add_(0.01 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([500, 20])
    torch.onnx.export(
        net,
        (x, t),
        str(tmp_path / "denoiser.onnx"),
        input_names=["x", "timesteps"],
        output_names=["pred"],
        dynamo=True,
        dynamic_axes={"x": {0: "batch"}, "timesteps": {0: "batch"}, "pred": {0: "batch"}},
    )
    session = onnxruntime.InferenceSession(str(tmp_path / "denoiser.onnx"), providers=["CPUExecutionProvider"])
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([999, 0, 321])
    with torch.no_grad():
        expected = net(x, t).numpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(
        session.run(None, {"x": x.numpy(), "timesteps": t.numpy()})[0], expected, atol=1e-5, rtol=1e-4
    )
