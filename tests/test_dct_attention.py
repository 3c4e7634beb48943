"""DCT channel attention: the basis is scipy's DCT-II, the pooled values are DCT coefficients."""

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from monai_ext.networks.blocks import (
    FCANET_TOP_FREQUENCIES,
    MultiFrequencyChannelAttention,
    MultiSpectralChannelAttention,
    dct_basis,
    dct_frequencies,
)

# MADGNet's 16 frequencies (architectures.md 1.5): FcaNet's "top16"
MADGNET_TOP16 = [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
                 (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2)]  # fmt: skip


def _scipy_basis_image(size, freq):
    """The basis image of one frequency = the inverse orthonormal DCT of a one-hot coefficient array."""
    coeffs = np.zeros(size)
    coeffs[tuple(freq)] = 1.0
    return scipy.fft.idctn(coeffs, norm="ortho")


@pytest.mark.parametrize(
    "size,freqs",
    [((7, 7), MADGNET_TOP16), ((5, 9), [(0, 0), (4, 8), (2, 3)]), ((4, 6, 5), [(0, 0, 0), (3, 5, 4), (1, 2, 0)])],
)
def test_basis_equals_scipy_inverse_dct_of_one_hot(size, freqs):
    basis = dct_basis(size, freqs).double().numpy()
    for image, freq in zip(basis, freqs):
        np.testing.assert_allclose(image, _scipy_basis_image(size, freq), atol=1e-6)


def test_named_selections():
    assert dct_frequencies("top16", 2, (7, 7)) == MADGNET_TOP16
    assert list(FCANET_TOP_FREQUENCIES[:16]) == MADGNET_TOP16
    # scaled to the grid as FcaNet does: (u, v) on 7x7 is (2u, 2v) on 14x14
    assert dct_frequencies("top4", 2, (14, 14)) == [(0, 0), (0, 2), (12, 0), (0, 10)]
    assert dct_frequencies("low4", 2, (7, 7)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert dct_frequencies("low5", 3, (4, 4, 4)) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1)]
    assert dct_frequencies([(1, 2), (3, 0)], 2, (4, 4)) == [(1, 2), (3, 0)]


@pytest.mark.parametrize(
    "selection,dims,size,message",
    [
        ("top16", 3, (7, 7, 7), "2D only"),
        ("top33", 2, (7, 7), "K must be"),
        ("best4", 2, (7, 7), "topK"),
        ("top16", 2, (5, 5), "inside the DCT grid"),
        ([(0, 7)], 2, (7, 7), "inside the DCT grid"),
        ([(0, 1, 2)], 2, (7, 7), "2-tuple"),
        ([], 2, (7, 7), "empty"),
    ],
)
def test_bad_frequency_selections(selection, dims, size, message):
    with pytest.raises(ValueError, match=message):
        dct_frequencies(selection, dims, size)


def test_fcanet_pooled_value_is_the_scipy_dct_coefficient_of_each_channel():
    layer = MultiSpectralChannelAttention(2, channels=32, dct_size=14, frequencies="top16")
    x = torch.randn(3, 32, 14, 14, dtype=torch.float64)
    pooled = layer.double().pool(x).numpy()
    coeffs = scipy.fft.dctn(x.numpy(), axes=(2, 3), norm="ortho")
    for c in range(32):
        u, v = layer.frequencies[c // 2]  # 16 frequencies over 32 channels: groups of 2
        np.testing.assert_allclose(pooled[:, c], coeffs[:, c, u, v], atol=1e-10)


@pytest.mark.parametrize("spatial_dims,size,selection", [(2, (14, 14), "top16"), (3, (6, 5, 7), "low8")])
def test_mfca_statistics_are_dct_coefficients_and_extremes_of_every_frequency(spatial_dims, size, selection):
    layer = MultiFrequencyChannelAttention(spatial_dims, channels=16, dct_size=size, frequencies=selection).double()
    x = torch.randn((2, 16) + size, dtype=torch.float64)
    avg, high, low = (t.numpy() for t in layer.frequency_pooling(x))
    axes = tuple(range(2, 2 + spatial_dims))
    coeffs = scipy.fft.dctn(x.numpy(), axes=axes, norm="ortho")
    assert avg.shape == (2, 16, len(layer.frequencies))
    for k, freq in enumerate(layer.frequencies):
        # every frequency on every channel: the average of x * B_k is its DCT coefficient / number of voxels
        np.testing.assert_allclose(avg[:, :, k] * np.prod(size), coeffs[(slice(None), slice(None)) + freq], atol=1e-10)
        product = x.numpy() * _scipy_basis_image(size, freq)
        np.testing.assert_allclose(high[:, :, k], product.max(axis=axes), atol=1e-10)
        np.testing.assert_allclose(low[:, :, k], product.min(axis=axes), atol=1e-10)


def test_mfca_output_is_the_input_scaled_by_the_shared_mlp_of_three_statistics():
    layer = MultiFrequencyChannelAttention(2, channels=32, dct_size=7).double()
    x = torch.randn(2, 32, 7, 7, dtype=torch.float64)
    avg, high, low = (t.mean(-1) for t in layer.frequency_pooling(x))
    w1, w2 = layer.mlp[0].weight, layer.mlp[2].weight

    def mlp(v):
        return F.relu(v @ w1.T) @ w2.T

    expected = x * torch.sigmoid(mlp(avg) + mlp(high) + mlp(low))[:, :, None, None]
    torch.testing.assert_close(layer(x), expected)
    assert w1.shape == (2, 32)  # reduction 16


def test_inputs_of_another_size_are_average_pooled_to_the_grid():
    layer = MultiFrequencyChannelAttention(2, channels=16, dct_size=14).double()
    x = torch.randn(1, 16, 22, 22, dtype=torch.float64)
    pooled = F.adaptive_avg_pool2d(x, 14)
    for ours, ref in zip(layer.frequency_pooling(x), layer.frequency_pooling(pooled)):
        torch.testing.assert_close(ours, ref)
    assert layer(x).shape == x.shape
    # smaller than the grid: enlarged, as MADGNet does for its 11x11 branch on a 14x14 grid
    assert layer(torch.randn(1, 16, 11, 11, dtype=torch.float64)).shape == (1, 16, 11, 11)


@pytest.mark.parametrize("cls", [MultiFrequencyChannelAttention, MultiSpectralChannelAttention])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_2d_3d_and_constant_bases_out_of_the_state_dict(cls, spatial_dims):
    frequencies = "top16" if spatial_dims == 2 else "low16"
    layer = cls(spatial_dims, channels=32, dct_size=7, frequencies=frequencies)
    x = torch.randn([2, 32] + [9] * spatial_dims, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())
    assert all("basis" not in key for key in layer.state_dict())
    assert len(layer.state_dict()) == 2  # the two MLP weights only


@pytest.mark.parametrize("cls", [MultiFrequencyChannelAttention, MultiSpectralChannelAttention])
def test_torchscript_and_cpu_autocast(cls):
    layer = cls(2, channels=32, dct_size=7)
    x = torch.randn(2, 32, 10, 10)
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    torch.testing.assert_close(y.float(), layer(x), atol=0.05, rtol=0.05)


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [MultiFrequencyChannelAttention, MultiSpectralChannelAttention])
def test_cuda_equals_cpu_and_runs_under_autocast(cls):
    layer = cls(3, channels=32, dct_size=6, frequencies="low16")
    x = torch.randn(2, 32, 8, 8, 8)
    ref = layer(x)
    layer = layer.cuda()
    torch.testing.assert_close(layer(x.cuda()).cpu(), ref, atol=1e-5, rtol=1e-4)
    xg = x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        y = layer(xg)
    y.float().sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="divisible by the number of frequencies"):
        MultiSpectralChannelAttention(2, channels=24, frequencies="top16")
    with pytest.raises(ValueError, match="reduction"):
        MultiFrequencyChannelAttention(2, channels=8, reduction=16)
    with pytest.raises(ValueError, match="spatial_dims"):
        MultiFrequencyChannelAttention(1, channels=32)
    layer = MultiFrequencyChannelAttention(2, channels=32)
    with pytest.raises(ValueError, match=r"expects input \(B, 32, \*, \*\)"):
        layer(torch.randn(1, 16, 7, 7))
    with pytest.raises(ValueError, match="expects input"):
        layer(torch.randn(1, 32, 7, 7, 7))
