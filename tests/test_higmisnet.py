"""Hi-gMISnet: the generator's DWT fusion and attention, the reciprocal loss, and the pGAN engine."""

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.losses import DiceCELoss

from monai_ext.engines import ParallelGANTrainer
from monai_ext.losses import ReciprocalLoss
from monai_ext.networks.blocks.higmis import DualModeAttentionGate, MultiResBlock
from monai_ext.networks.nets import HiGMISGenerator, HiGMISnet, PairedPatchDiscriminator


def _small(**kw):
    return HiGMISnet(2, spatial_dims=2, in_channels=1, out_channels=3, filters=8, **kw)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_generator_shapes_2d_3d_and_the_fused_pair(spatial_dims):
    size = [32] * spatial_dims if spatial_dims == 2 else [16] * 3
    g = HiGMISGenerator(spatial_dims, 2, 3, filters=4, levels=4 if spatial_dims == 2 else 3)
    x = torch.randn([2, 2] + size)
    assert g(x).shape == tuple([2, 3] + size)
    net = HiGMISnet(2, spatial_dims=spatial_dims, in_channels=2, out_channels=3, filters=4, levels=3)
    assert net(x).shape == tuple([2, 2, 3] + size)  # training: both generators
    net.eval()
    with torch.no_grad():
        fused = net(x)
        probabilities = torch.stack([torch.softmax(gen(x), 1) for gen in net.generators]).mean(0)
    torch.testing.assert_close(fused.exp(), probabilities)  # the fusion averages the generators' probabilities


def test_torchscript_and_size_check():
    net = _small().eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 40, 40))


def test_the_fusion_really_uses_the_dwt_subbands():
    torch.manual_seed(0)
    g = HiGMISGenerator(2, 1, 2, filters=8).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        reference = g(x)
        pyramid = g.image_pyramid(x)
        # the image's level-l subbands are the input's multi-level DWT
        approx, details = g.dwt(x)
        torch.testing.assert_close(pyramid[0], torch.cat([approx.unsqueeze(2), details[0]], 2).flatten(1, 2))
        # zeroing the image's subbands changes the output
        g.image_pyramid = lambda image: [torch.zeros_like(p) for p in pyramid]
        assert not torch.allclose(g(x), reference, atol=1e-4)
        del g.image_pyramid
        # and so does zeroing the detail subbands of the encoder features (the DWT pooling keeps them)
        original = g.encoder[0].down.subbands

        def approximation_only(feature):
            bands = original(feature)
            b, c = bands.shape[:2]
            kept = bands.reshape(b, c // 4, 4, *bands.shape[2:]).clone()
            kept[:, :, 1:] = 0
            return kept.flatten(1, 2)

        g.encoder[0].down.subbands = approximation_only
        assert not torch.allclose(g(x), reference, atol=1e-4)


def test_without_image_subbands_the_encoder_fuses_only_its_own_subbands():
    with_image, without = (
        HiGMISGenerator(2, 1, 2, filters=8),
        HiGMISGenerator(2, 1, 2, filters=8, use_image_subbands=False),
    )
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_image.parameters())
    without.image_pyramid = None  # never called
    x = torch.randn(1, 1, 32, 32)
    assert without(x).shape == (1, 2, 32, 32)
    assert torch.jit.script(HiGMISGenerator(2, 1, 2, filters=4, levels=3, use_image_subbands=False).eval())(
        x
    ).shape == (1, 2, 32, 32)


def test_multires_block_widths_follow_multiresunet():
    assert MultiResBlock(2, 3, 32).out_channels == 8 + 17 + 26  # int(1.67 * 32 * [0.167, 0.333, 0.5])
    assert MultiResBlock(2, 3, 512).out_channels == 142 + 284 + 427


def test_dual_mode_gate_is_spatial_times_channel_attention():
    gate = DualModeAttentionGate(2, skip_channels=16, gate_channels=8, inter_channels=4).eval()
    x, g = torch.randn(2, 16, 12, 12), torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        spatially_gated = gate.spatial(g=g, x=x)
        torch.testing.assert_close(gate(x, g), gate.channel(spatially_gated))
        psi = spatially_gated / x  # the spatial map: one value per voxel, shared by the channels
        torch.testing.assert_close(psi, psi[:, :1].expand_as(psi), atol=1e-4, rtol=1e-3)


def test_reciprocal_loss_is_zero_on_agreement_symmetric_and_trains_both():
    loss = ReciprocalLoss()
    a = torch.randn(2, 3, 8, 8, requires_grad=True)
    b = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert loss([a, a.detach().clone()]).item() == 0.0
    torch.testing.assert_close(loss([a, b]), loss([b, a]))
    torch.testing.assert_close(loss(torch.stack([a, b], 1)), (a.softmax(1) - b.softmax(1)).abs().mean())
    loss([a, b]).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="two generators"):
        loss([a])


def _trainer(net, disc, data, epochs, handlers=()):
    return ParallelGANTrainer(
        "cpu",
        epochs,
        data,
        net,
        disc,
        torch.optim.Adam(net.parameters(), 1e-3),
        torch.optim.Adam(disc.parameters(), 1e-3),
        DiceCELoss(to_onehot_y=True, softmax=True),
        num_classes=3,
        train_handlers=list(handlers),
    )


def _data(n=2):
    torch.manual_seed(0)
    return [{"image": torch.randn(2, 1, 32, 32), "label": torch.randint(0, 3, (2, 1, 32, 32))} for _ in range(n)]


def test_gradient_clipping_acts_before_the_generators_step():
    """Handlers on BACKWARD_COMPLETED see the generators' gradients before their optimiser steps (as in MONAI's
    trainers): with plain SGD at lr 1, a step moves the generators by exactly the clipped gradient."""
    from monai_ext.handlers import GradientClipping

    net, disc = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    before = [p.detach().clone() for p in net.parameters()]
    trainer = ParallelGANTrainer(
        "cpu",
        1,
        _data(1),
        net,
        disc,
        torch.optim.SGD(net.parameters(), 1.0),
        torch.optim.SGD(disc.parameters(), 1e-3),
        DiceCELoss(to_onehot_y=True, softmax=True),
        num_classes=3,
    )
    GradientClipping(net.parameters(), max_norm=1e-3).attach(trainer)
    trainer.run()
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(net.parameters(), before)))
    assert float(moved) == pytest.approx(1e-3, rel=1e-3)


def test_one_iteration_updates_both_generators_and_both_discriminators():
    net, disc = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    before = {
        k: v.clone() for k, v in list(net.state_dict().items()) + [("d." + k, v) for k, v in disc.state_dict().items()]
    }
    trainer = _trainer(net, disc, _data(1), 1)
    trainer.run()
    for i in range(2):
        changed = [
            k for k, v in net.generators[i].named_parameters() if not torch.equal(v, before[f"generators.{i}.{k}"])
        ]
        assert len(changed) > 0.9 * len(list(net.generators[i].parameters()))
        changed = [
            k
            for k, v in disc.discriminators[i].named_parameters()
            if not torch.equal(v, before[f"d.discriminators.{i}.{k}"])
        ]
        assert len(changed) == len(list(disc.discriminators[i].parameters()))
    out = (
        trainer.state.output
    )  # decollated per image, as MONAI's trainers, so that the bundle's handlers work unchanged
    assert len(out) == 2 and out[0]["pred"].shape == (3, 32, 32)
    assert out[0]["g_loss"] == pytest.approx(
        out[0]["segmentation"] + out[0]["adversarial"] + out[0]["reciprocal"], rel=1e-5
    )


def test_a_resumed_training_continues_from_the_saved_iteration(tmp_path):
    data = _data(3)
    net, disc = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    trainer = _trainer(net, disc, data, 2)
    objects = {
        "network": net,
        "discriminator": disc,
        "g_optimizer": trainer.optimizer,
        "d_optimizer": trainer.d_optimizer,
        "trainer": trainer,
    }
    CheckpointSaver(str(tmp_path), objects, save_final=True, final_filename="last.pt").attach(trainer)
    trainer.run()
    assert trainer.state.iteration == 6

    net2, disc2 = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    resumed = _trainer(net2, disc2, data, 3)
    objects2 = {
        "network": net2,
        "discriminator": disc2,
        "g_optimizer": resumed.optimizer,
        "d_optimizer": resumed.d_optimizer,
        "trainer": resumed,
    }
    CheckpointLoader(str(tmp_path / "last.pt"), objects2).attach(resumed)
    restored = {}
    resumed.add_event_handler(
        Events.STARTED, lambda e: restored.update({k: v.clone() for k, v in net2.state_dict().items()})
    )
    seen = []
    resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    resumed.run()
    assert seen == [7, 8, 9] and resumed.state.epoch == 3  # epoch 3 only, from the saved iteration on
    for k, v in net.state_dict().items():  # the weights it resumed from are the saved ones
        torch.testing.assert_close(restored[k], v)


def test_d_steps_updates_the_discriminators_that_many_times_per_generator_update():
    net, disc = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    g_opt, d_opt = torch.optim.Adam(net.parameters()), torch.optim.Adam(disc.parameters())
    ParallelGANTrainer(
        "cpu",
        1,
        _data(1),
        net,
        disc,
        g_opt,
        d_opt,
        DiceCELoss(to_onehot_y=True, softmax=True),
        num_classes=3,
        d_steps=3,
    ).run()
    assert {int(s["step"]) for s in d_opt.state.values()} == {3} and {int(s["step"]) for s in g_opt.state.values()} == {
        1
    }


def test_adversarial_and_reciprocal_terms_can_be_switched_off():
    net, disc = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    trainer = ParallelGANTrainer(
        "cpu",
        1,
        _data(1),
        net,
        disc,
        torch.optim.Adam(net.parameters()),
        torch.optim.Adam(disc.parameters()),
        DiceCELoss(to_onehot_y=True, softmax=True),
        num_classes=3,
        adversarial_weight=0.0,
        reciprocal_weight=0.0,
    )
    trainer.run()
    out = trainer.state.output[0]
    assert out["g_loss"] == pytest.approx(out["segmentation"], rel=1e-5)


def test_partial_hybrid_transfer_learning_from_a_local_checkpoint(tmp_path):
    source = HiGMISGenerator(2, 1, 3, filters=8)
    torch.save(source.state_dict(), tmp_path / "pretrained.pt")
    net = _small(pretrained=tmp_path / "pretrained.pt", pretrained_levels=2, freeze_levels=2)
    for generator in net.generators:
        for k, v in source.state_dict().items():
            if k.startswith(("first.", "encoder.0.")):
                torch.testing.assert_close(generator.state_dict()[k], v)
        assert not any(p.requires_grad for p in generator.first.parameters())
        assert not any(p.requires_grad for p in generator.encoder[0].parameters())
        assert all(p.requires_grad for p in generator.encoder[1].parameters())
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no encoder weights"):
        _small(pretrained=tmp_path / "bad.pt")


def test_bad_configuration():
    with pytest.raises(ValueError, match="activation"):
        HiGMISnet(activation="tanh")
    with pytest.raises(ValueError, match="one discriminator per generator"):
        _trainer(_small(), PairedPatchDiscriminator(3, 2, 1, 3, channels=16), _data(1), 1)
    with pytest.raises(ValueError, match=r"too small for num_layers_d=3 \(each side needs >= 32\)"):
        PairedPatchDiscriminator(2, 2, 1, 3, channels=8, num_layers_d=3)(
            torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 3, 16, 16)
        )


def test_monai_early_stopping_stops_the_adversarial_training():
    from monai.handlers import EarlyStopHandler

    net, disc = _small(), PairedPatchDiscriminator(2, 2, 1, 3, channels=16)
    trainer = _trainer(net, disc, _data(1), 10)
    EarlyStopHandler(patience=2, score_function=lambda engine: 0.0, trainer=trainer, epoch_level=True).attach(trainer)
    trainer.run()
    assert trainer.state.epoch == 3  # the score never improves after epoch 1: two more epochs, then stop
