"""The authors' published MADGNet checkpoint converts to our MADGNet and predicts what the official model does.

No published weights can be downloaded here: the checkpoint is built from the official names and shapes
(tests/data/madgnet_official_tensors.json, recorded from the official code as data) with random values, and
its DCT buffers from SciPy's orthonormal inverse DCT. The reference is a functional forward pass written
from the official model's definition, run on the official-keyed tensors; only the ResNeSt encoder is shared
(its renaming has its own test in test_madgnet.py).
"""

import json
import sys
from pathlib import Path

import forkserver
import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from conftest import BUNDLES_DIR

from monai_ext.bundle.trained import read_record
from monai_ext.networks.nets import MADGNet
from monai_ext.networks.nets.madgnet_official import OfficialCheckpointError, convert_official_state_dict

RECORD = json.loads((Path(__file__).parent / "data" / "madgnet_official_tensors.json").read_text())
DCT_GRID = {1: 14, 2: 28, 3: 56, 4: 112}  # by decoder stage (widths 256, 128, 64, 32)


def _dct_image(u: int, v: int, n: int) -> np.ndarray:
    impulse = np.zeros((n, n))
    impulse[u, v] = 1.0
    return scipy.fft.idctn(impulse, norm="ortho")  # the basis image whose inner product is coefficient (u, v)


def official_checkpoint(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in RECORD["tensors"].items():
        if ".dct_weight_" in key:
            stage, k = int(key[len("decoder_stage")]), int(key.rsplit("_", 1)[1])
            n = DCT_GRID[stage]
            u, v = RECORD["top_x"][k] * (n // 7), RECORD["top_y"][k] * (n // 7)
            state[key] = torch.from_numpy(_dct_image(u, v, n)).float().expand(shape).clone()
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", ".bias")):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.endswith(
            ("alpha_list.0", "alpha_list.1", "alpha_list.2", "beta_list.0", "beta_list.1", "beta_list.2")
        ):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:  # BatchNorm scale
            state[key] = 0.8 + 0.4 * torch.rand(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


# ------------------------------------------------------------------ the official forward pass, functionally
def _bn(w, p, x):
    return F.batch_norm(x, w[p + ".running_mean"], w[p + ".running_var"], w[p + ".weight"], w[p + ".bias"], False)


def _conv(w, p, x, **kw):
    return F.conv2d(x, w[p + ".weight"], w.get(p + ".bias"), **kw)


def _mfca(w, p, x):
    """Average, max and min pooling of x times each DCT buffer, averaged over the 16, one shared 1x1-conv MLP."""
    bases = [w[f"{p}.dct_weight_{k}"] for k in range(16)]
    pooled = F.adaptive_avg_pool2d(x, bases[0].shape[1:]) if x.shape[2:] != bases[0].shape[1:] else x
    stats = [sum(f(pooled * b) for b in bases) / 16 for f in (lambda t: t.mean((2, 3), keepdim=True),
                                                               lambda t: t.amax((2, 3), keepdim=True),
                                                               lambda t: t.amin((2, 3), keepdim=True))]  # fmt: skip
    mlp = [F.conv2d(F.relu(F.conv2d(s, w[p + ".fc.0.weight"])), w[p + ".fc.2.weight"]) for s in stats]
    return x * torch.sigmoid(sum(mlp))


def _mfmsa(w, p, x):
    total = 0
    for s in range(3):
        y = F.avg_pool2d(x, 2**s) if x.shape[2] // 2**s >= 8 else x
        q = f"{p}.multi_scale_branches.{s}"
        y = F.relu(_bn(w, q + ".1", _conv(w, q + ".0", y, padding=1 + s, dilation=1 + s, groups=32)))
        y = F.relu(_bn(w, q + ".4", _conv(w, q + ".3", y)))
        y = _mfca(w, f"{p}.multi_frequency_branches.{s}.0", y)
        a = torch.sigmoid(_conv(w, f"{p}.multi_frequency_branches_conv1.{s}.0", y))
        y = y * (1 - a) * w[f"{p}.alpha_list.{s}"] + y * a * w[f"{p}.beta_list.{s}"]
        q = f"{p}.multi_frequency_branches_conv2.{s}"
        y = F.relu(_bn(w, q + ".1", _conv(w, q + ".0", y, padding=1)))
        total = total + (F.interpolate(y, scale_factor=2**s, mode="bilinear") if y.shape != x.shape else y)
    return total / 3 + x


def official_forward(w, features):
    """The official MFMSNet's test output (the finest map) from encoder features [f1 .. f5]."""
    x = features[4]
    for i in range(1, 5):
        skip = F.relu(_bn(w, f"skip_connection{i}.1", _conv(w, f"skip_connection{i}.0", features[4 - i])))
        x = torch.cat([F.interpolate(x, scale_factor=2, mode="bilinear"), skip], dim=1)
        p = f"decoder_stage{i}"
        x = F.relu(_bn(w, p + ".conv1.1", _conv(w, p + ".conv1.0", x, padding=1)))
        x = _mfmsa(w, p + ".attention_layer", x)
        x = F.relu(_bn(w, p + ".conv2.1", _conv(w, p + ".conv2.0", x, padding=1)))
    p = "sub_decoder_stage4.output"
    up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
    region = _conv(w, p + "_map_conv", x)
    distance = _conv(w, p + "_distance_conv", x) * torch.sigmoid(region)
    boundary = up(_conv(w, p + "_boundary_conv", x) * torch.sigmoid(distance))
    distance = up(distance) + torch.sigmoid(boundary)
    return up(region) + torch.sigmoid(distance)


def run_cli(args, cwd):
    return forkserver.run([sys.executable, "-m", "monai_ext", *args], cwd=cwd, timeout=600)


# ---------------------------------------------------------------------------------------------- the tests
def test_the_recorded_official_model_is_ours_in_size():
    counted = sum(
        int(np.prod(s))
        for k, s in RECORD["tensors"].items()
        if not any(t in k for t in ("running_", "num_batches", "dct_weight"))
    )
    assert counted == sum(p.numel() for p in MADGNet().parameters()) == 33_366_372
    assert sum(".dct_weight_" in k for k in RECORD["tensors"]) == 192


@torch.no_grad()
def test_converted_weights_predict_what_the_official_model_predicts():
    official = official_checkpoint()
    net = MADGNet(out_channels=2).eval()
    net.load_state_dict(convert_official_state_dict(official))
    x = torch.rand(1, 3, 64, 64)  # the deepest stage 2x2; the finest stage's branches pool twice
    ours = net(x)
    reference = official_forward(official, net.encoder(x))
    assert ours.shape == (1, 2, 64, 64)
    # random weights give logits in the thousands: float32's summation order and the official file's float32
    # DCT buffers (ours are computed in float64) leave ~4e-6 of the range; a wrong mapping leaves O(1)
    scale = reference.abs().max().item()
    torch.testing.assert_close(ours[:, 1:], reference, rtol=0, atol=2e-5 * scale)
    assert ours[:, 0].abs().max() < 1e-5  # the added background channel: logit 0
    clear = reference.squeeze(1).abs() > 2e-5 * scale
    decided = (torch.sigmoid(reference) > 0.5).squeeze(1).long()
    assert torch.equal(ours.argmax(1)[clear], decided[clear]) and 0 < decided.float().mean() < 1


def test_a_checkpoint_that_is_not_the_official_model_is_refused_in_one_line():
    official = official_checkpoint()
    broken = dict(official)
    broken["decoder_stage2.attention_layer.multi_frequency_branches.1.0.dct_weight_3"] = official[
        "decoder_stage2.attention_layer.multi_frequency_branches.1.0.dct_weight_4"
    ]
    with pytest.raises(OfficialCheckpointError, match="dct_weight_3: not the DCT basis"):
        convert_official_state_dict(broken)
    partial = {k: v for k, v in official.items() if not k.startswith("skip_connection3")}
    with pytest.raises(OfficialCheckpointError, match="weights missing"):
        convert_official_state_dict(partial)
    two_classes = dict(official, **{"sub_decoder_stage1.output_map_conv.bias": torch.zeros(2)})
    with pytest.raises(OfficialCheckpointError, match="2 classes"):
        convert_official_state_dict(two_classes)


def test_convert_writes_a_checkpoint_the_madgnet_bundle_runs(tmp_path):
    source = tmp_path / "MADGNet_official.pth.tar"
    torch.save({"model_state_dict": official_checkpoint(), "current_epoch": 200}, source)
    before = source.read_bytes()
    out = tmp_path / "model.pt"
    proc = run_cli(["convert", "madgnet-official", str(source), str(out), "--class-name", "polyp"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert source.read_bytes() == before  # the input is never touched
    settings = read_record(out)["settings"]
    assert settings["out_channels"] == 2 and settings["class_names"] == {"0": "background", "1": "polyp"}
    again = run_cli(["convert", "madgnet-official", str(source), str(out)], tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(image)
    seg = run_cli(
        ["segment", "--bundle", str(BUNDLES_DIR / "madgnet"), "--checkpoint", str(out), "--input", str(image)]
        + ["--output", str(tmp_path / "out"), "--device", "cpu"],
        tmp_path,
    )
    assert seg.returncode == 0, seg.stderr
    import nibabel as nib

    mask = np.asarray(nib.load(next((tmp_path / "out").glob("*.nii.gz"))).dataobj).squeeze()
    assert mask.shape == (120, 90) and set(np.unique(mask)) <= {0, 1}  # NIfTI: x along the image's width


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "weights.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    proc = run_cli(["convert", "madgnet-official", str(bad), str(tmp_path / "out.pt")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and str(bad) in proc.stderr
    assert not (tmp_path / "out.pt").exists()
