"""ResUNet, ResUNet++ and UNet++: the official topologies (parameter counts), 2D and 3D, one scriptable tensor."""

import pytest
import torch
from monai.losses import DiceCELoss

from monai_ext.losses import DeepSupervisionLoss
from monai_ext.networks.nets import ResUNet, ResUNetPlusPlus, UNetPlusPlus


def _count(net):
    return sum(p.numel() for p in net.parameters())


def test_published_parameter_counts():
    # architectures.md 4.1-4.3: the official models (1 output channel; RGB input except UNet++'s 1 channel)
    assert _count(ResUNet(2, in_channels=3, out_channels=1)) == 8_223_809
    assert _count(ResUNetPlusPlus(2, in_channels=3, out_channels=1)) == 4_062_993
    # Keras counts only the layers connected to the outputs: one head without deep supervision, four with it
    assert _count(UNetPlusPlus(2, in_channels=1, out_channels=1, deep_supervision=False, dropout=0.5)) == 9_041_601
    assert _count(UNetPlusPlus(2, in_channels=1, out_channels=1, deep_supervision=True, dropout=0.5)) == 9_041_700


SMALL = {
    "resunet": lambda d: ResUNet(d, 1, 3, channels=(8, 16, 32)),
    "resunetplusplus": lambda d: ResUNetPlusPlus(d, 1, 3, channels=(8, 16, 32, 64)),
    "unetplusplus": lambda d: UNetPlusPlus(d, 1, 3, features=(4, 8, 16, 32, 64), deep_supervision=False, norm="batch"),
}


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_shape_and_torchscript(name, spatial_dims):
    net = SMALL[name](spatial_dims)
    x = torch.randn([2, 1] + [16] * spatial_dims, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3) + (16,) * spatial_dims
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_unetplusplus_deep_supervision_stacks_heads_in_training_and_returns_one_map_in_eval():
    net = UNetPlusPlus(2, 1, 2, features=(4, 8, 16, 32, 64), deep_supervision=True)
    x = torch.randn(2, 1, 32, 32)
    assert net(x).shape == (2, 4, 2, 32, 32)
    net.eval()
    heads = net.net(x)
    torch.testing.assert_close(net(x), heads[-1])


@pytest.mark.parametrize("ensemble", ["softmax", "sigmoid"])
def test_unetplusplus_accurate_mode_averages_head_probabilities(ensemble):
    net = UNetPlusPlus(2, 1, 2, features=(4, 8, 16, 32, 64), deep_supervision=True, ensemble=ensemble).eval()
    x = torch.randn(1, 1, 16, 16)
    heads = net.net(x)
    if ensemble == "softmax":
        expected = torch.stack([h.softmax(1) for h in heads]).mean(0)
        torch.testing.assert_close(net(x).softmax(1), expected)
    else:
        expected = torch.stack([h.sigmoid() for h in heads]).mean(0)
        torch.testing.assert_close(net(x).sigmoid(), expected)


def test_deep_supervision_loss_takes_stacked_heads():
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True), weight_mode="same")
    heads = torch.randn(2, 4, 3, 8, 8)
    target = torch.randint(0, 3, (2, 1, 8, 8)).float()
    single = DiceCELoss(to_onehot_y=True, softmax=True)
    expected = sum(single(heads[:, i], target) for i in range(4))
    torch.testing.assert_close(loss(heads, target), expected)
    torch.testing.assert_close(loss(list(heads.unbind(1)), target), expected)
    torch.testing.assert_close(loss(heads[:, 0], target), single(heads[:, 0], target))  # one head


def test_bad_configurations():
    with pytest.raises(ValueError, match="double"):
        UNetPlusPlus(features=(32, 64, 128, 256, 256))
    with pytest.raises(ValueError, match="deep_supervision"):
        UNetPlusPlus(deep_supervision=False, ensemble="softmax")
    with pytest.raises(ValueError, match="ensemble"):
        UNetPlusPlus(ensemble="mean")
    with pytest.raises(ValueError, match="channels"):
        ResUNet(channels=(64,))
    with pytest.raises(ValueError, match="upsample"):
        ResUNet(upsample="pixelshuffle")
    with pytest.raises(ValueError, match="se_ratio"):
        ResUNetPlusPlus(channels=(4, 8, 16), se_ratio=8)
