"""The ProGAN variant's own method (Karras et al. 2018): equalized learning rate, pixel norm, a
critic with a minibatch-stddev feature, and generator and critic that grow and fade in together
(a grown model at alpha 0 computes what the previous stage's did)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facectx.models.cascade import ModelArgs
from facectx.models.equalized import EqualizedConv2d, PixelNorm
from facectx.models.factory import build_critic, build_generator
from facectx.models.progan import ProgressiveGenerator
from facectx.models.progan_critic import ProgressiveCritic

RESOLUTIONS = (8, 16, 32, 64, 128)
TINY = ModelArgs("progan", RESOLUTIONS, width=4, max_width=16, disc_width=4, disc_max_layers=2)


def _inputs(size: int, batch: int = 4, seed: int = 1) -> tuple[dict, dict]:
    """Masked faces and masks at every pyramid level up to `size` (each level the one above
    area-averaged, as prepare makes them)."""
    torch.manual_seed(seed)
    face = torch.zeros(batch, 1, size, size)
    face[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    masked, mask = {size: torch.rand(batch, 3, size, size) * 2 - 1}, {size: face}
    for r in sorted((r for r in RESOLUTIONS if r < size), reverse=True):
        masked[r], mask[r] = F.avg_pool2d(masked[2 * r], 2), F.avg_pool2d(mask[2 * r], 2)
    return masked, mask


def _grown(model_class, smaller: nn.Module, stage: int) -> nn.Module:
    """The model of `stage` holding `smaller`'s weights, as load_previous_stage grows it."""
    grown = model_class(TINY, stage)
    state = grown.state_dict()
    state.update(smaller.state_dict())
    grown.load_state_dict(state)
    return grown


def test_the_factory_builds_progan_generator_and_critic_and_refuses_an_unknown_kind():
    assert isinstance(build_generator(TINY, 16), ProgressiveGenerator)
    critic = build_critic(TINY, 16)
    assert isinstance(critic, ProgressiveCritic) and critic.inherits_previous_stage
    cascade = build_critic(ModelArgs("cascade", RESOLUTIONS, 4, 8, 4, 2), 16)
    assert not cascade.inherits_previous_stage
    try:
        build_critic(ModelArgs("stylegan", RESOLUTIONS, 4, 8, 4, 2), 16)
    except ValueError as error:
        assert "'stylegan'" in str(error)
    else:
        raise AssertionError("an unknown model kind was accepted")


def test_every_layer_has_an_equalized_learning_rate():
    """Stored weights N(0, 1); the layer multiplies them by He's constant sqrt(2 / fan_in) at run
    time (gain 1 for the linear output layers: to-RGB and the score), and nothing else learns."""
    torch.manual_seed(0)
    args = ModelArgs("progan", RESOLUTIONS, width=32, max_width=64, disc_width=32, disc_max_layers=2)
    models = [ProgressiveGenerator(args, 128), ProgressiveCritic(args, 128)]
    for model in models:
        assert not [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        layers = dict((n, m) for n, m in model.named_modules() if isinstance(m, EqualizedConv2d))
        assert {f"{n}.{p}" for n in layers for p in ("weight", "bias")} == dict(model.named_parameters()).keys()
        for name, layer in layers.items():
            out_channels, in_channels, k, _ = layer.weight.shape
            output_layer = name.startswith(("to_rgb.", "score"))
            gain = 1.0 if output_layer else math.sqrt(2)
            assert layer.scale == gain / math.sqrt(in_channels * k * k), name
            x = torch.randn(2, in_channels, 6, 6)
            expected = F.conv2d(
                x, layer.weight * gain / math.sqrt(in_channels * k * k), layer.bias, padding=layer.padding
            )
            assert torch.allclose(layer(x), expected, atol=1e-5), name
            assert not layer.bias.any(), name
        weights = torch.cat([layer.weight.detach().flatten() for layer in layers.values()])
        assert weights.numel() > 100_000
        assert abs(float(weights.mean())) < 0.01 and abs(float(weights.std()) - 1) < 0.01


def test_pixel_norm_normalises_each_pixels_feature_vector_and_the_generator_has_no_batch_statistics():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 5, 5) * torch.rand(3, 1, 5, 5) * 10  # each pixel its own scale
    y = PixelNorm()(x)
    assert torch.allclose(y.pow(2).mean(dim=1), torch.ones(3, 5, 5), atol=1e-4)
    assert torch.allclose(y * x.pow(2).mean(dim=1, keepdim=True).sqrt(), x, atol=1e-4)  # a rescaling only

    generator = ProgressiveGenerator(TINY, 32).train()
    assert not [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    normalised = []
    for module in generator.modules():
        if isinstance(module, PixelNorm):
            module.register_forward_hook(lambda m, args, out: normalised.append(out.pow(2).mean(dim=1)))
    masked, mask = _inputs(32)
    with torch.no_grad():
        batch = generator.image(masked, mask)
        assert normalised and all(torch.allclose(n, torch.ones_like(n), atol=1e-3) for n in normalised)
        alone = generator.image({r: m[:1] for r, m in masked.items()}, {r: m[:1] for r, m in mask.items()})
    # In training mode too, an image's output does not depend on the rest of its batch.
    assert torch.allclose(batch[:1], alone, atol=1e-5)


def test_at_alpha_0_the_grown_models_compute_what_the_previous_stage_did():
    """The newest level fades in from nothing: at alpha 0 the stage-16 generator paints stage 8's
    image, upsampled, and the stage-16 critic scores the pooled pair as stage 8's critic does; at
    alpha 0.5 both differ (the new level counts)."""
    torch.manual_seed(0)
    generator_8, critic_8 = ProgressiveGenerator(TINY, 8), ProgressiveCritic(TINY, 8)
    generator_16, critic_16 = _grown(ProgressiveGenerator, generator_8, 16), _grown(ProgressiveCritic, critic_8, 16)
    masked, mask = _inputs(16)
    image = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        previous_image = F.interpolate(generator_8.image(masked, mask), scale_factor=2, mode="nearest")
        previous_score = critic_8(F.avg_pool2d(masked[16], 2), F.avg_pool2d(image, 2))[0][-1]
        for model in (generator_16, critic_16):
            model.set_step(0, 10, 0.5, grows=True)
            assert float(model.alpha) == 0.0 and model.fading
        assert torch.allclose(generator_16.image(masked, mask), previous_image, atol=1e-6)
        assert torch.allclose(critic_16(masked[16], image)[0][-1], previous_score, atol=1e-5)
        for model in (generator_16, critic_16):
            model.set_step(2, 10, 0.5, grows=True)
            assert float(model.alpha) == pytest.approx(0.4)
        assert not torch.allclose(generator_16.image(masked, mask), previous_image, atol=1e-3)
        assert not torch.allclose(critic_16(masked[16], image)[0][-1], previous_score, atol=1e-3)


def test_the_minibatch_stddev_feature_lets_one_image_change_anothers_score():
    """ProGAN's critic has no normalisation: without the minibatch-stddev feature an image's score
    would be a function of that image alone. With it, the critic sees the variety of the image's
    group: 4 consecutive images of the batch (so a DDP rank's contiguous share holds whole groups)."""
    torch.manual_seed(0)
    critic = ProgressiveCritic(TINY, 32)
    masked, _ = _inputs(32, batch=8)
    image = torch.rand(8, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = critic(masked[32], image)
        assert len(out) == 1 and out[0][-1].shape == (8, 1, 1, 1)  # one scale, the score map last
        changed = image.clone()
        changed[1] = 10 * image[1]  # a far more varied image in the batch
        moved = (critic(masked[32], changed)[0][-1] - out[0][-1]).abs().flatten()
        # image 0's own path is the same until the minibatch-stddev feature joins it
        assert torch.allclose(critic(masked[32][:1], image[:1])[0][0], out[0][0][:1], atol=1e-6)
    assert (moved[[0, 2, 3]] > 1e-3).all()  # image 1's group
    assert (moved[4:] < 1e-6).all()  # the other group
