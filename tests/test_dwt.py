"""DWT / IDWT: equal to PyWavelets, invertible, differentiable, batched, 2D and 3D."""

import numpy as np
import pytest
import pywt
import torch

from monai_ext.networks.blocks import DWT, IDWT, SUPPORTED_MODES, discrete_wavelets, subband_names

WAVELETS = ["haar", "db2", "db4", "sym5", "coif2", "bior2.4", "rbio3.3", "bior1.3"]
ATOL = 1e-6


def _numpy(t):
    return t.detach().cpu().numpy()


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_subband_names_follow_pywt_key_order():
    assert subband_names(2) == ["LL", "LH", "HL", "HH"]
    assert subband_names(3) == ["LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH"]
    pywt_keys = sorted(pywt.dwtn(np.zeros((4, 4, 4)), "haar").keys())
    assert [n.replace("L", "a").replace("H", "d") for n in subband_names(3)] == pywt_keys


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("size", [(16, 16), (17, 13)])
def test_single_level_2d_equals_pywt_dwt2(wavelet, mode, size):
    x = _random((2, 3) + size)
    approx, details = DWT(2, wavelet, 1, mode)(torch.from_numpy(x))
    ca, (ch, cv, cd) = pywt.dwt2(x, wavelet, mode=mode, axes=(2, 3))
    np.testing.assert_allclose(_numpy(approx), ca, atol=ATOL)
    lh, hl, hh = (_numpy(details[0][:, :, i]) for i in range(3))
    # LH: low along H, high along W = pywt's vertical detail; HL = horizontal detail
    np.testing.assert_allclose(lh, cv, atol=ATOL)
    np.testing.assert_allclose(hl, ch, atol=ATOL)
    np.testing.assert_allclose(hh, cd, atol=ATOL)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_multilevel_2d_equals_pywt_wavedec2(wavelet, mode):
    x = _random((1, 2, 40, 37))
    levels = max(1, min(3, pywt.dwtn_max_level((40, 37), wavelet)))
    approx, details = DWT(2, wavelet, levels, mode)(torch.from_numpy(x))
    ref = pywt.wavedec2(x, wavelet, mode=mode, level=levels, axes=(2, 3))
    np.testing.assert_allclose(_numpy(approx), ref[0], atol=ATOL)
    assert len(details) == levels
    for ours, (ch, cv, cd) in zip(details, ref[1:]):
        np.testing.assert_allclose(_numpy(ours), np.stack([cv, ch, cd], axis=2), atol=ATOL)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("wavelet", ["haar", "db3", "sym4", "bior3.5", "coif1"])
def test_3d_equals_pywt_dwtn_and_wavedecn(wavelet, mode):
    x = _random((2, 1, 11, 16, 9))
    keys = [n.replace("L", "a").replace("H", "d") for n in subband_names(3)]
    approx, details = DWT(3, wavelet, 1, mode)(torch.from_numpy(x))
    ref = pywt.dwtn(x, wavelet, mode=mode, axes=(2, 3, 4))
    np.testing.assert_allclose(_numpy(approx), ref[keys[0]], atol=ATOL)
    for i, key in enumerate(keys[1:]):
        np.testing.assert_allclose(_numpy(details[0][:, :, i]), ref[key], atol=ATOL)

    y = _random((1, 2, 24, 20, 18))
    levels = max(1, min(2, pywt.dwtn_max_level(y.shape[2:], wavelet)))
    approx, details = DWT(3, wavelet, levels, mode)(torch.from_numpy(y))
    ref = pywt.wavedecn(y, wavelet, mode=mode, level=levels, axes=(2, 3, 4))
    np.testing.assert_allclose(_numpy(approx), ref[0], atol=ATOL)
    for ours, level in zip(details, ref[1:]):
        np.testing.assert_allclose(_numpy(ours), np.stack([level[k] for k in keys[1:]], axis=2), atol=ATOL)


def test_every_discrete_wavelet_pywavelets_knows():
    x = _random((1, 1, 20, 21))
    for wavelet in discrete_wavelets():
        approx, details = DWT(2, wavelet, 1, "symmetric")(torch.from_numpy(x))
        ca, (ch, cv, cd) = pywt.dwt2(x, wavelet, mode="symmetric", axes=(2, 3))
        np.testing.assert_allclose(_numpy(approx), ca, atol=ATOL, err_msg=wavelet)
        np.testing.assert_allclose(_numpy(details[0][:, :, 2]), cd, atol=ATOL, err_msg=wavelet)
        rec = _numpy(IDWT(2, wavelet, "symmetric")(approx, details, [20, 21]))
        ref = pywt.idwt2((ca, (ch, cv, cd)), wavelet, mode="symmetric", axes=(2, 3))[..., :20, :21]
        np.testing.assert_allclose(rec, ref, atol=ATOL, err_msg=wavelet)
        if wavelet != "dmey":  # dmey is a 62-tap approximation of the Meyer wavelet: not exactly invertible
            np.testing.assert_allclose(rec, x, atol=ATOL, err_msg=wavelet)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("spatial_dims,size", [(2, (61, 46)), (2, (47, 45)), (3, (13, 10, 17))])
def test_idwt_reconstructs_including_odd_sizes(wavelet, mode, spatial_dims, size):
    x = torch.from_numpy(_random((2, 2) + size))
    dwt = DWT(spatial_dims, wavelet, 1 if spatial_dims == 3 else 2, mode)
    approx, details = dwt(x)
    rec = IDWT(spatial_dims, wavelet, mode)(approx, details, list(size))
    assert rec.shape == x.shape
    np.testing.assert_allclose(_numpy(rec), _numpy(x), atol=1e-9)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_idwt_without_output_size_equals_pywt_waverecn(mode):
    x = _random((1, 1, 29, 30))
    approx, details = DWT(2, "db2", 2, mode)(torch.from_numpy(x))
    ref = pywt.waverecn(pywt.wavedecn(x, "db2", mode=mode, level=2, axes=(2, 3)), "db2", mode=mode, axes=(2, 3))
    np.testing.assert_allclose(_numpy(IDWT(2, "db2", mode)(approx, details)), ref, atol=ATOL)


def test_batched_equals_one_image_at_a_time():
    x = torch.randn(3, 4, 20, 20)
    dwt = DWT(2, "db2", 2, "reflect")
    approx, details = dwt(x)
    for b in range(3):
        for c in range(4):
            a1, d1 = dwt(x[b : b + 1, c : c + 1])
            torch.testing.assert_close(approx[b : b + 1, c : c + 1], a1)
            for full, one in zip(details, d1):
                torch.testing.assert_close(full[b : b + 1, c : c + 1], one)


@pytest.mark.parametrize("wavelet,mode", [("haar", "zero"), ("db2", "symmetric"), ("bior2.2", "periodization")])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_are_exact(wavelet, mode, spatial_dims):
    size = (7, 6) if spatial_dims == 2 else (5, 4, 6)
    x = torch.randn((1, 2) + size, dtype=torch.float64, requires_grad=True)
    dwt, idwt = DWT(spatial_dims, wavelet, 1, mode), IDWT(spatial_dims, wavelet, mode)
    assert torch.autograd.gradcheck(lambda t: torch.cat([c.flatten() for c in [dwt(t)[0]] + dwt(t)[1]]), (x,))
    approx, details = dwt(x.detach())
    approx.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: idwt(a, details, list(size)), (approx,))


def test_orthogonal_wavelet_preserves_energy_and_gradient_norm():
    # with periodization an orthogonal DWT is an orthogonal matrix: its gradient is its transpose
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    approx, details = DWT(2, "db3", 1, "periodization")(x)
    energy = approx.pow(2).sum() + details[0].pow(2).sum()
    torch.testing.assert_close(energy, x.pow(2).sum())
    energy.backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


def test_torchscript_matches_eager():
    x = torch.randn(2, 3, 21, 22)
    dwt, idwt = DWT(2, "sym3", 2, "symmetric"), IDWT(2, "sym3", "symmetric")
    sdwt, sidwt = torch.jit.script(dwt), torch.jit.script(idwt)
    a, d = dwt(x)
    sa, sd = sdwt(x)
    torch.testing.assert_close(sa, a)
    torch.testing.assert_close(sidwt(sa, sd, [21, 22]), idwt(a, d, [21, 22]))


def test_constant_filters_are_not_in_the_state_dict():
    assert len(DWT(3, "db4").state_dict()) == 0
    assert len(IDWT(3, "db4").state_dict()) == 0


@pytest.mark.parametrize("wavelet", ["haar", "db4"])
def test_cpu_autocast_bfloat16(wavelet):
    x = torch.randn(2, 4, 32, 32)
    dwt, idwt = DWT(2, wavelet, 2), IDWT(2, wavelet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, d = dwt(x)
        rec = idwt(a, d, [32, 32])
    assert a.dtype == torch.bfloat16 and rec.dtype == torch.bfloat16
    torch.testing.assert_close(rec.float(), x, atol=0.1, rtol=0.05)


def test_float16_and_bfloat16_inputs_keep_their_dtype():
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(1, 2, 16, 16).to(dtype)
        a, d = DWT(2, "haar")(x)
        assert a.dtype == dtype and d[0].dtype == dtype


@pytest.mark.gpu
@pytest.mark.parametrize("wavelet,mode", [("haar", "zero"), ("db4", "symmetric"), ("coif1", "periodization")])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cuda_equals_cpu_and_runs_under_autocast(wavelet, mode, spatial_dims):
    size = [24] * spatial_dims
    x = torch.randn([2, 3] + size)
    dwt, idwt = DWT(spatial_dims, wavelet, 2, mode), IDWT(spatial_dims, wavelet, mode)
    a, d = dwt(x)
    ga, gd = dwt.cuda()(x.cuda())
    torch.testing.assert_close(ga.cpu(), a, atol=1e-4, rtol=1e-4)
    xg = x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        ga, gd = dwt(xg)
        rec = idwt.cuda()(ga, gd, size)
    assert rec.dtype == torch.float16
    rec.float().sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    torch.testing.assert_close(rec.float().cpu(), x, atol=0.05, rtol=0.05)


def test_bad_arguments_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="wavelet"):
        DWT(2, "db99")
    with pytest.raises(ValueError, match="wavelet"):
        IDWT(2, "morl")  # continuous wavelet
    with pytest.raises(ValueError, match="mode"):
        DWT(2, "haar", mode="smooth")
    with pytest.raises(ValueError, match="levels"):
        DWT(2, "haar", levels=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        DWT(4, "haar")


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="4 dimensions"):
        DWT(2)(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="levels=4 is too many"):
        DWT(2, "db4", levels=4)(torch.randn(1, 1, 64, 64))  # pywt.dwt_max_level(64, 8) == 3
    with pytest.raises(ValueError, match="too many"):
        DWT(2, "haar")(torch.randn(1, 1, 1, 8))
    approx, details = DWT(2, "haar", 2)(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="do not fit"):
        IDWT(2, "haar")(approx, details[::-1])
    with pytest.raises(ValueError, match="details"):
        IDWT(2, "haar")(approx, [details[0][:, :, :2]])
    with pytest.raises(ValueError, match="output_size"):
        IDWT(2, "haar")(approx, details, [40, 40])
