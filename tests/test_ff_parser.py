"""FF-Parser: identity at initialisation, equal to numpy.fft filtering for any weight map."""

import numpy as np
import pytest
import torch

from monai_ext.networks.blocks import FFParser


@pytest.mark.parametrize("spatial_dims,size", [(2, (16, 16)), (2, (15, 12)), (3, (6, 7, 9))])
def test_identity_at_initialisation_exactly(spatial_dims, size):
    layer = FFParser(spatial_dims, channels=3, spatial_size=size)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn((2, 3) + size, dtype=dtype)
        assert torch.equal(layer(x), x)


def _half_spectrum_frequencies(size):
    """Frequency of every half-spectrum bin, per axis, as numpy names them."""
    axes = [np.fft.fftfreq(n) for n in size[:-1]] + [np.fft.rfftfreq(size[-1])]
    return np.meshgrid(*axes, indexing="ij")


@pytest.mark.parametrize("spatial_dims,size", [(2, (32, 32)), (2, (20, 27)), (3, (12, 10, 9))])
def test_low_frequency_weights_equal_a_numpy_fft_low_pass(spatial_dims, size):
    cutoff = 0.15
    layer = FFParser(spatial_dims, channels=2, spatial_size=size).double()
    keep = np.all([np.abs(f) <= cutoff for f in _half_spectrum_frequencies(size)], axis=0)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[..., 0] = torch.from_numpy(keep.astype(np.float64))
    x = np.random.default_rng(0).standard_normal((2, 2) + size)

    axes = tuple(range(2, 2 + spatial_dims))
    full = np.meshgrid(*[np.fft.fftfreq(n) for n in size], indexing="ij")
    full_keep = np.all([np.abs(f) <= cutoff for f in full], axis=0)
    expected = np.fft.ifftn(np.fft.fftn(x, axes=axes) * full_keep, axes=axes).real

    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-10)


def test_any_complex_weight_map_equals_numpy_rfft_filtering():
    size = (8, 11)
    layer = FFParser(2, channels=3, spatial_size=size).double()
    with torch.no_grad():
        layer.weight.normal_()
    weight = layer.weight.detach().numpy()
    a = weight[..., 0] + 1j * weight[..., 1]
    x = np.random.default_rng(1).standard_normal((2, 3) + size)
    expected = np.fft.irfftn(a * np.fft.rfftn(x, axes=(2, 3), norm="ortho"), s=size, axes=(2, 3), norm="ortho")
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-10)


def test_weight_is_one_per_channel_and_half_spectrum_bin():
    layer = FFParser(3, channels=4, spatial_size=(8, 6, 10))
    assert layer.weight.shape == (4, 8, 6, 6, 2)  # 10 // 2 + 1 bins along the last axis, (re, im)
    assert layer.weight.dtype == torch.float32  # real storage: every optimiser and DDP handle it


def test_gradients_reach_the_weight_map_and_the_input_and_an_optimiser_updates_it():
    layer = FFParser(2, channels=2, spatial_size=(6, 5)).double()
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    with torch.no_grad():
        layer.weight.normal_()
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(layer, {"weight": w}, (x,)), (layer.weight.detach().requires_grad_(),)
    )
    before = layer.weight.detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(x).square().sum().backward()
    opt.step()
    assert not torch.equal(before, layer.weight)


def test_half_precision_inputs_and_autocast_keep_the_input_dtype():
    layer = FFParser(2, channels=2, spatial_size=(8, 8))
    x = torch.randn(1, 2, 8, 8)
    for dtype in (torch.float16, torch.bfloat16):
        y = layer(x.to(dtype))
        assert y.dtype == dtype
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(conv(x))
    assert y.dtype == torch.bfloat16


def test_torchscript_matches_eager():
    layer = FFParser(3, channels=2, spatial_size=(4, 6, 5))
    with torch.no_grad():
        layer.weight.normal_()
    x = torch.randn(2, 2, 4, 6, 5)
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))


@pytest.mark.gpu
def test_cuda_equals_cpu_and_runs_under_autocast():
    layer = FFParser(2, channels=4, spatial_size=(24, 20))
    with torch.no_grad():
        layer.weight.normal_()
    x = torch.randn(2, 4, 24, 20)
    ref = layer(x)
    layer = layer.cuda()
    torch.testing.assert_close(layer(x.cuda()).cpu(), ref, atol=1e-5, rtol=1e-4)
    xg = x.cuda().requires_grad_()
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        y = layer(conv(xg))
    assert y.dtype == torch.float16
    y.float().sum().backward()
    assert torch.isfinite(xg.grad).all() and layer.weight.grad is not None


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="spatial_dims"):
        FFParser(1, 2, 8)
    with pytest.raises(ValueError, match="channels"):
        FFParser(2, 0, 8)
    with pytest.raises(ValueError, match="spatial_size"):
        FFParser(2, 2, (8, 0))
    layer = FFParser(2, 2, (8, 8))
    with pytest.raises(ValueError, match=r"expects input \(B, 2, 8, 8\)"):
        layer(torch.randn(1, 2, 8, 9))
    with pytest.raises(ValueError, match="expects input"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="expects input"):
        layer(torch.randn(2, 8, 8))
