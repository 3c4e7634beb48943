"""MADGNet: the official model's size and shapes, the blocks' equations, the loss, 2D and 3D, overfitting."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from monai_ext.data import synthetic_case
from monai_ext.losses import MADGNetLoss, madgnet_targets, structure_loss
from monai_ext.networks.blocks.mfmsa import ESDM, MFMSABlock
from monai_ext.networks.nets import MADGNet, ResNeSt
from monai_ext.networks.nets.madgnet import convert_resnest_state_dict


def _count(net):
    return sum(p.numel() for p in net.parameters())


def test_official_parameter_counts_and_no_constant_bases_in_checkpoints():
    # architectures.md 1.8: the official model, 352x352, S = 3, min_channel = 32, 1 class
    net = MADGNet(2, 3, 1, backbone="resnest50")
    assert _count(net) == 33_366_372
    assert _count(MADGNet(2, 3, 1, backbone="resnet50")) == 31_440_164
    assert _count(ResNeSt(2, 3)) == 25_434_240  # ResNeSt-50 (27,483,240) without its 2048 x 1000 classifier
    assert not any("basis" in k for k in net.state_dict())  # the official checkpoint carries ~120 MB of them


def test_output_shapes_at_the_paper_size():
    net = MADGNet(2, 3, 1).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 352, 352)).shape == (1, 1, 352, 352)
        features = net.encoder(torch.randn(1, 3, 352, 352))
    assert [tuple(f.shape[1:]) for f in features] == [
        (64, 176, 176),
        (256, 88, 88),
        (512, 44, 44),
        (1024, 22, 22),
        (2048, 11, 11),
    ]
    net.train()
    out = net(torch.randn(2, 1, 64, 96))  # a grey image is repeated to 3 channels, as officially
    assert out.shape == (2, 4, 3, 1, 64, 96)  # stages x (region, distance, boundary)


def test_3d_forward_backward():
    net = MADGNet(3, 1, 2, backbone_layers=(1, 1, 1, 1))
    out = net(torch.randn(2, 1, 64, 64, 64))
    assert out.shape == (2, 4, 3, 2, 64, 64, 64)
    MADGNetLoss()(out, torch.randint(0, 2, (2, 1, 64, 64, 64))).backward()
    assert all(p.grad is not None for p in net.decoder.parameters())
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


def test_sizes_the_official_model_crashes_on_work_and_bad_sizes_are_named():
    net = MADGNet(2, 3, 1).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 544, 544)).shape == (1, 1, 544, 544)
    with pytest.raises(ValueError, match=r"divisible by 32.*\[336, 352\].*\[320, 352\]"):
        net(torch.randn(1, 3, 336, 352))
    with pytest.raises(ValueError, match="backbone"):
        MADGNet(backbone="resnest101")


def test_torchscript_returns_the_one_final_map():
    net = MADGNet(2, 3, 2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x), atol=1e-5, rtol=1e-4)


def test_esdm_is_the_paper_cascade():
    head = ESDM(2, 8, 2, scale_factor=2)
    x = torch.randn(1, 8, 5, 6)
    region, distance, boundary = head(x)
    up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=True)  # noqa: E731
    c = head.region(x)
    d = head.distance(x) * torch.sigmoid(c)
    b = head.boundary(x) * torch.sigmoid(d)
    torch.testing.assert_close(boundary, up(b))
    torch.testing.assert_close(distance, up(d) + torch.sigmoid(up(b)))
    torch.testing.assert_close(region, up(c) + torch.sigmoid(up(d) + torch.sigmoid(up(b))))


def test_mfmsa_branches_widths_and_residual():
    block = MFMSABlock(2, 64, scale_branches=3, dct_size=56, min_channel=32, min_resolution=8)
    assert [b.features[3].out_channels for b in block.branches] == [64, 32, 32]  # max(C / 2^s, min_channel)
    assert [b.features[0].dilation for b in block.branches] == [(1, 1), (2, 2), (3, 3)]
    assert all(b.alpha.item() == 1 and b.beta.item() == 1 for b in block.branches)
    x = torch.randn(2, 64, 16, 24)
    y = block(x)
    expected = x + sum(b(x) for b in block.branches) / 3
    torch.testing.assert_close(y, expected)
    # a branch whose pooled map would be smaller than min_resolution runs at full resolution
    assert block.branches[2].features(x).shape[2:] == x.shape[2:]
    assert MFMSABlock(3, 32, dct_size=7, frequencies="low16")(torch.randn(2, 32, 8, 8, 8)).shape == (2, 32, 8, 8, 8)


def test_targets_by_hand():
    mask = torch.zeros(1, 1, 12, 12)
    mask[0, 0, 3:9, 2:10] = 1
    distance, boundary = madgnet_targets(mask, boundary_width=1)
    edt = ndimage.distance_transform_edt(mask[0, 0].numpy())
    np.testing.assert_allclose(distance[0, 0].numpy(), edt / edt.max(), atol=1e-6)
    dilated = ndimage.binary_dilation(mask[0, 0].numpy() > 0, np.ones((3, 3)))
    eroded = ndimage.binary_erosion(mask[0, 0].numpy() > 0, np.ones((3, 3)))
    np.testing.assert_array_equal(boundary[0, 0].numpy() > 0, dilated ^ eroded)


def test_structure_loss_is_pranets_formula():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 40, 40), (torch.rand(2, 1, 40, 40) > 0.7).float()
    w = 1 + 5 * (ndimage.uniform_filter(target.numpy(), (1, 1, 31, 31), mode="constant") - target.numpy()).__abs__()
    # avg_pool2d with zero padding counts the padding: the same as a constant-mode uniform filter
    p = torch.sigmoid(logits).numpy()
    t = target.numpy()
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    wbce = (w * bce).sum((2, 3)) / w.sum((2, 3))
    inter = (p * t * w).sum((2, 3))
    union = ((p + t) * w).sum((2, 3))
    expected = (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()
    assert structure_loss(logits, target).item() == pytest.approx(expected, rel=1e-4)


def test_loss_is_the_documented_weighted_sum():
    torch.manual_seed(0)
    pred = torch.randn(2, 4, 3, 2, 16, 16)
    label = torch.randint(0, 2, (2, 1, 16, 16))
    stage_w, task_w = (0.1, 0.2, 0.3, 0.4), (1.0, 2.0, 3.0)
    loss = MADGNetLoss(stage_weights=stage_w, task_weights=task_w)(pred, label)
    mask = F.one_hot(label[:, 0], 2).movedim(-1, 1).float()
    distance, boundary = madgnet_targets(mask)
    expected = sum(
        sw
        * (
            task_w[0] * structure_loss(pred[:, i, 0], mask)
            + task_w[1] * F.mse_loss(torch.sigmoid(pred[:, i, 1]), distance)
            + task_w[2] * F.binary_cross_entropy_with_logits(pred[:, i, 2], boundary)
        )
        for i, sw in enumerate(stage_w)
    )
    torch.testing.assert_close(loss, expected)
    # one output channel: the foreground of the label map; a single map gets the region term only
    single = MADGNetLoss()(pred[:, 3, 0, 1:], label)
    torch.testing.assert_close(single, structure_loss(pred[:, 3, 0, 1:], (label > 0).float()))


def test_pretrained_backbone_from_a_local_file_with_official_names(tmp_path):
    source = ResNeSt(2, 3)
    official = {}
    for key, value in source.state_dict().items():  # rename ours to the official / timm names
        key = key.replace("stem.7.", "bn1.").replace("stem.", "conv1.")
        if key.startswith("stages."):
            stage, rest = key[len("stages.") :].split(".", 1)
            key = f"layer{int(stage) + 1}.{rest}"
        official[key] = value
    official["fc.weight"] = torch.zeros(1000, 2048)
    torch.save({"state_dict": official}, tmp_path / "resnest50.pth")
    assert convert_resnest_state_dict(official).keys() == source.state_dict().keys()
    net = MADGNet(2, 3, 1, pretrained_backbone=tmp_path / "resnest50.pth")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(net.encoder.state_dict()[key], value)
    torch.save({"something": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not weights of this encoder"):
        MADGNet(2, 3, 1, pretrained_backbone=tmp_path / "bad.pth")


def test_overfits_one_synthetic_image():
    torch.manual_seed(0)
    image, label = synthetic_case((64, 64), np.random.default_rng(1))
    x = torch.from_numpy(image)[None, None].repeat(2, 1, 1, 1)
    y = torch.from_numpy(label.astype(np.int64))[None, None].repeat(2, 1, 1, 1)
    x[1], y[1] = x[1].flip(-1), y[1].flip(-1)  # two views: BatchNorm needs a batch
    net = MADGNet(2, 1, 3, backbone_layers=(1, 1, 1, 1))  # the same blocks, one bottleneck per stage: 2x faster
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    loss = MADGNetLoss()
    for _ in range(30):
        optimizer.zero_grad()
        loss(net(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        pred = net(x)[:, -1, 0].argmax(1)  # the finest region map, as inference returns it
    dice = [2 * ((pred == c) & (y[:, 0] == c)).sum() / ((pred == c).sum() + (y[:, 0] == c).sum()) for c in (1, 2)]
    assert min(float(d) for d in dice) >= 0.9, dice


def test_compute_at_the_paper_size_is_the_official_models():
    from torch.utils.flop_counter import FlopCounterMode

    net = MADGNet(2, 3, 1).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.randn(1, 3, 352, 352))
    macs = (
        sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op) or "mm" in str(op))
        / 2
    )
    assert macs / 1e9 == pytest.approx(21.5, abs=0.1)  # architectures.md 1.8: about 21.5 GMACs
