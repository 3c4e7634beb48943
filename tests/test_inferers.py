"""The sliding window equals MONAI's; a 2D window on a volume equals 2D inference slice by slice."""

import itertools

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from monai_ext.inferers import StreamingSlidingWindowInferer, scan_interval


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


NET3 = torch.nn.Conv3d(2, 3, 3, padding=1).eval()
NET2 = torch.nn.Conv2d(1, 4, 3, padding=1).eval()
CASES = [  # (input shape, window): larger than, smaller than, and mixed with the window; odd sizes; batches
    ((1, 2, 20, 18, 17), (8, 8, 8)),
    ((2, 2, 6, 30, 9), (8, 8, 8)),
    ((1, 2, 5, 5, 5), (8, 8, 8)),
    ((3, 1, 37, 50), (16, 20)),
]


def _net(shape):
    return NET3 if len(shape) == 5 else NET2


def _assert_argmax_equal(labels, logits, margin=1e-4):
    """Labels equal the logits' arg-max wherever the two best classes differ by more than float noise."""
    top2 = logits.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > margin
    assert torch.equal(labels[:, 0].long()[decided], logits.argmax(1)[decided])
    assert decided.float().mean() > 0.99


@pytest.mark.parametrize("shape,roi", CASES)
@pytest.mark.parametrize(
    "overlap,mode,batch", list(itertools.product([0.0, 0.25, 0.6], ["constant", "gaussian"], [1, 4]))
)
def test_equals_monai(shape, roi, overlap, mode, batch):
    x = torch.randn(shape)
    net = _net(shape)
    ref = sliding_window_inference(x, roi, batch, net, overlap, mode)
    for axis in range(len(roi)):
        out = StreamingSlidingWindowInferer(roi, batch, overlap, mode, buffer_dim=axis)(x, net)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        labels = StreamingSlidingWindowInferer(roi, batch, overlap, mode, output="labels", buffer_dim=axis)(x, net)
        assert labels.dtype == torch.uint8 and labels.shape == (shape[0], 1) + shape[2:]
        _assert_argmax_equal(labels, ref)
        probs = StreamingSlidingWindowInferer(roi, batch, overlap, mode, output="probabilities", buffer_dim=axis)(
            x, net
        )
        assert probs.dtype == torch.float16
        torch.testing.assert_close(probs.float(), ref.softmax(1), atol=2e-3, rtol=0)


def test_sigmoid_outputs_and_padding_modes():
    x = torch.randn(1, 2, 9, 11, 7)
    ref = sliding_window_inference(x, (8, 8, 8), 2, NET3, 0.5, "gaussian", padding_mode="replicate")
    inf = StreamingSlidingWindowInferer(
        (8, 8, 8), 2, 0.5, "gaussian", padding_mode="replicate", output="labels", activation="sigmoid"
    )
    labels = inf(x, NET3)
    decided = ref.abs() > 1e-4
    assert labels.dtype == torch.uint8 and torch.equal(labels[decided], (ref > 0).to(torch.uint8)[decided])
    probs = StreamingSlidingWindowInferer(
        (8, 8, 8), 2, 0.5, "gaussian", padding_mode="replicate", output="probabilities", activation="sigmoid"
    )(x, NET3)
    torch.testing.assert_close(probs.float(), ref.sigmoid(), atol=2e-3, rtol=0)


def test_meta_tensor_in_meta_tensor_out_and_the_grid_is_cached():
    x = MetaTensor(torch.randn(1, 2, 20, 18, 17), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    inf = StreamingSlidingWindowInferer((8, 8, 8), 3, 0.5)
    out = inf(x, NET3)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)
    cached = next(iter(inf._cache.values()))
    inf(x, NET3)
    assert len(inf._cache) == 1 and next(iter(inf._cache.values())) is cached


def test_tuple_outputs_fall_back_to_monai():
    def two_heads(w):
        y = NET3(w)
        return y, y * 2

    x = torch.randn(1, 2, 12, 12, 12)
    out = StreamingSlidingWindowInferer((8, 8, 8), 2, 0.25)(x, two_heads)
    ref = sliding_window_inference(x, (8, 8, 8), 2, two_heads, 0.25)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="one tensor"):
        StreamingSlidingWindowInferer((8, 8, 8), 2, output="labels")(x, two_heads)


def test_mirror_tta_averages_every_flip_combination():
    x = torch.randn(1, 2, 12, 10, 9)
    flips = [(), (2,), (4,), (2, 4)]  # tensor dims of spatial axes 0 and 2, every combination

    def averaged(w):
        return sum(torch.flip(NET3(torch.flip(w, f)), f) if f else NET3(w) for f in flips) / len(flips)

    ref = sliding_window_inference(x, (8, 8, 8), 2, averaged, 0.5, "gaussian")
    out = StreamingSlidingWindowInferer((8, 8, 8), 2, 0.5, "gaussian", tta_axes=[0, 2])(x, NET3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_on_cpu():
    x = torch.randn(1, 2, 16, 16, 16)
    ref = sliding_window_inference(x, (8, 8, 8), 2, NET3, 0.5)
    out = StreamingSlidingWindowInferer((8, 8, 8), 2, 0.5, amp_dtype="bfloat16")(x, NET3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)


def test_a_2d_window_on_a_volume_equals_2d_inference_slice_by_slice():
    volume = torch.randn(2, 1, 10, 12, 7)
    for axis in range(3):
        out = StreamingSlidingWindowInferer((8, 8), sw_batch_size=16, overlap=0.5, spatial_dim=axis)(volume, NET2)
        assert out.shape == (2, 4, 10, 12, 7)
        for b in range(2):
            for s in range(volume.shape[axis + 2]):
                image = volume[b : b + 1].select(axis + 2, s)
                ref = sliding_window_inference(image, (8, 8), 1, NET2, 0.5)
                torch.testing.assert_close(out[b : b + 1].select(axis + 2, s), ref, atol=1e-5, rtol=1e-5)


def test_scan_interval_is_the_window_stride_of_monais_grid():
    # covered axis: the window itself; otherwise floor(roi * (1 - overlap)), at least 1
    assert scan_interval((20, 8, 30), (8, 8, 8), (0.25, 0.5, 0.99)) == (6, 8, 1)
    assert scan_interval((64, 64), (32, 32), (0.0, 0.5)) == (32, 16)


def test_a_2d_window_on_a_volume_keeps_metadata_and_reduces_to_labels():
    volume = torch.randn(2, 1, 10, 12, 7)
    labels = StreamingSlidingWindowInferer((8, 8), 4, output="labels")(
        MetaTensor(volume, affine=torch.eye(4) * 2), NET2
    )
    assert (
        labels.shape == (2, 1, 10, 12, 7)
        and labels.dtype == torch.uint8
        and torch.equal(labels.affine, torch.eye(4, dtype=torch.float64) * 2)
    )


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="overlap"):
        StreamingSlidingWindowInferer(8, overlap=1.0)
    with pytest.raises(ValueError, match="mode"):
        StreamingSlidingWindowInferer(8, mode="linear")
    with pytest.raises(ValueError, match="output"):
        StreamingSlidingWindowInferer(8, output="argmax")
    with pytest.raises(ValueError, match="amp_dtype"):
        StreamingSlidingWindowInferer(8, amp_dtype="int8")
    with pytest.raises(ValueError, match="5 dimensions"):
        StreamingSlidingWindowInferer((8, 8, 8))(torch.randn(1, 2, 8, 8), NET2)
    with pytest.raises(ValueError, match="buffer_dim"):
        StreamingSlidingWindowInferer((8, 8), buffer_dim=3)(torch.randn(1, 1, 8, 8), NET2)
    with pytest.raises(ValueError, match="spatial_dim"):
        StreamingSlidingWindowInferer((8, 8), spatial_dim=3)


@pytest.mark.gpu
@pytest.mark.parametrize("output", ["logits", "labels", "probabilities"])
def test_cuda_gpu_resident_and_cpu_resident_equal_monai(output):
    net = NET3.cuda()
    x = torch.randn(1, 2, 40, 36, 30)
    ref = sliding_window_inference(x.cuda(), (16, 16, 16), 4, net, 0.5, "gaussian").cpu()
    expected = {"logits": ref, "labels": ref, "probabilities": ref.softmax(1)}[output]
    for inputs, kwargs in ((x.cuda(), {}), (x, {"sw_device": "cuda", "device": "cpu"})):
        out = StreamingSlidingWindowInferer((16, 16, 16), 4, 0.5, "gaussian", output=output, **kwargs)(
            inputs, net
        ).cpu()
        if output == "labels":
            _assert_argmax_equal(out, expected)
        else:
            torch.testing.assert_close(out.float(), expected, atol=2e-3, rtol=1e-3)
