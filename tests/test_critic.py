"""The critic levers (issue 27): blur before downsampling, the multi-scale critic, the three
adversarial losses, lazy R1, feature matching, the critic's own optimizer settings, no critic
gradient in the generator phase, and LPIPS as the perceptual term. Each off by default."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_models import nyquist_share
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.nn.utils.parametrize import remove_parametrizations

from conftest import fast_tiny_params, with_critic_levers
from facectx.losses import StageLoss, critic_loss, feature_matching_loss, generator_loss, r1_penalty, scores
from facectx.models.cascade import ModelArgs, PatchDiscriminator
from facectx.steps.train import stage_trainer
from facectx.training.data import ResidentShards
from facectx.training.step import frozen

TINY = ModelArgs("cascade", (8, 16, 32, 64, 128), width=4, max_width=8, disc_width=4, disc_max_layers=2)


def _levers(params, **model):
    """fast_tiny_params with every critic lever on: blur, 2 scales, hinge, R1 every 2 steps, fm."""
    return with_critic_levers(fast_tiny_params(params), r1_every=2, **model)


# ------------------------------------------------------------------ the critic's shape


def test_default_critic_has_the_old_state_dict_and_computes_what_it_did():
    """Defaults keep today's critic: an old checkpoint's critic loads strictly and scores the same."""
    torch.manual_seed(0)
    old = nn.Sequential(  # the critic as it was (stage 32, width 4, 2 strided layers)
        spectral_norm(nn.Conv2d(6, 4, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(4, 8, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(8, 8, 3, 1, 1)),
        nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(8, 1, 3, 1, 1)),
    ).eval()
    critic = PatchDiscriminator(32, TINY).eval()
    state = {f"net.{k}": v for k, v in old.state_dict().items()}
    assert critic.state_dict().keys() == state.keys()
    critic.load_state_dict(state, strict=True)
    masked, image = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = critic(masked, image)
        assert len(out) == 1 and len(out[0]) == 4  # three activations, then the score map
        assert torch.equal(out[0][-1], old(torch.cat([masked, image], 1)))
    assert PatchDiscriminator.inherits_previous_stage is False
    critic.set_step(3, 10, 0.5, True)  # a no-op the loop may call


@pytest.mark.parametrize(
    "stage, scales, layers, maps",
    [
        (32, 3, 2, [8, 4, 4]),  # 32 px: two strided layers; 16 px: two; 8 px: one (log2(8) - 2)
        (32, 2, 3, [4, 4]),
        (16, 3, 2, [4, 4]),  # the third scale's input would be 4 px: not built
        (8, 2, 2, [4]),  # stage 8: one critic whatever disc_scales says
    ],
)
def test_the_multi_scale_critic_returns_one_list_per_scale_built(stage, scales, layers, maps):
    args = dataclasses.replace(TINY, disc_scales=scales, disc_max_layers=layers, disc_blur=True)
    critic = PatchDiscriminator(stage, args)
    out = critic(torch.rand(3, 3, stage, stage), torch.rand(3, 3, stage, stage))
    assert [scale[-1].shape for scale in out] == [(3, 1, m, m) for m in maps]
    for size, scale in zip([stage // 2**k for k in range(len(maps))], out):
        strided = max(1, min(layers, int(math.log2(size)) - 2))
        assert len(scale) == strided + 2  # one activation per strided layer, one of the 3x3 conv, the scores
        assert scale[0].shape[1] == 4 and scale[0].shape[-1] == size // 2
    # Each scale is a critic of its own, seeing a coarser copy: its score depends on the image.
    image = torch.rand(1, 3, stage, stage, requires_grad=True)
    last = critic(torch.zeros(1, 3, stage, stage), image)[-1][-1]
    last.sum().backward()
    assert image.grad.abs().sum() > 0


def test_blur_takes_the_checkerboard_out_of_the_critics_input_gradient(prepared_data):
    """The share of the input gradient's spectral energy at the Nyquist frequencies, at init,
    on real photos, quick-profile critic (width 16, 3 strided layers), 5 seeds."""
    data = ResidentShards(prepared_data, "train", (8, 16, 32), torch.device("cpu"))
    batch = data.batch(torch.arange(min(8, data.rows)))
    shares = {}
    for blur in (False, True):
        shares[blur] = []
        for seed in range(5):
            torch.manual_seed(seed)
            args = dataclasses.replace(TINY, disc_width=16, disc_max_layers=3, disc_blur=blur)
            image = batch.target[32].clone().requires_grad_(True)
            scores(PatchDiscriminator(32, args)(batch.masked[32], image))[0].mean().backward()
            shares[blur].append(nyquist_share(image.grad))
    print("checkerboard share of the critic's input gradient, without / with blur:", shares)
    # measured (2026-12, this fixture): without 0.002-0.02 per seed, mean ~0.01; with blur < 1e-6
    assert sum(shares[False]) / 5 > 0.003 and min(shares[False]) > 0.0005
    assert max(shares[True]) < 1e-4


# ------------------------------------------------------------------ the losses


def test_the_adversarial_losses_on_known_scores():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    one = lambda kind: critic_loss(kind, [real], [fake])  # noqa: E731
    assert one("lsgan") == pytest.approx(0.5 * ((1 + 0.25) / 2 + (4 + 0) / 2))
    assert one("hinge") == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus
    assert one("nonsaturating") == pytest.approx((sp(-2) + sp(-0.5)) / 2 + (sp(-2) + sp(0)) / 2)
    assert generator_loss("lsgan", [fake]) == pytest.approx(0.5 * (9 + 1) / 2)
    assert generator_loss("hinge", [fake]) == pytest.approx(1.0)
    assert generator_loss("nonsaturating", [fake]) == pytest.approx((sp(2) + sp(0)) / 2)
    # Averaged over the critic's scales (score maps of different sizes weigh the same).
    small = torch.tensor([1.0])
    assert critic_loss("hinge", [real, small], [fake, -small]) == pytest.approx((0.75 + 0) / 2)
    assert generator_loss("hinge", [fake, small]) == pytest.approx((1.0 - 1.0) / 2)


class LinearCritic(nn.Module):
    """score map = w . image + v . masked + b at every pixel: d(mean score)/d image = w / (H W)."""

    def __init__(self, w, v, scales: int = 1):
        super().__init__()
        self.w, self.v, self.scales = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(v)), scales

    def forward(self, masked, image):
        score = (image * self.w.view(1, 3, 1, 1)).sum(1, keepdim=True) + (masked * self.v.view(1, 3, 1, 1)).sum(1)
        return [[score]] * self.scales


def _loss(config, critic):
    return StageLoss(config, {"rec": 1.0, "adv": 1.0}, critic, None, None)


def test_r1_is_zero_on_a_constant_critic_and_the_analytic_value_on_a_linear_one(params):
    masked, target, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    # A constant critic: the real PatchGAN critic whose last layer ignores its input.
    torch.manual_seed(0)
    constant = PatchDiscriminator(16, dataclasses.replace(TINY, disc_scales=2))
    with torch.no_grad():
        for last in (constant.net[-1], constant.coarser[0][-1]):
            remove_parametrizations(last, "weight")  # (spectral norm of a zero weight is 0 / 0)
            last.weight.zero_()
            last.bias.fill_(0.7)
    real = target.clone().requires_grad_(True)
    assert float(r1_penalty(scores(constant(masked, real)), real)) == 0.0
    assert float(scores(constant(masked, real))[1].mean()) == pytest.approx(0.7)

    # A linear critic, two scales: R1 = |w|^2 / (H W), whatever the masked input's weights v.
    w, v = [0.5, -1.0, 2.0], [0.3, 0.3, 0.3]
    linear = LinearCritic(w, v, scales=2)
    real = target.clone().requires_grad_(True)
    expected = sum(x * x for x in w) / (16 * 16)
    assert float(r1_penalty(scores(linear(masked, real)), real)) == pytest.approx(expected, rel=1e-6)

    # In the critic's loss: gamma / 2 * R1 * r1_every on R1 steps, on top of the adversarial loss.
    config = dataclasses.replace(params.losses, r1_gamma=0.4, r1_every=4)
    loss = _loss(config, linear)
    plain = loss.critic_loss(masked, target, fake).total
    with_r1 = loss.critic_loss(masked, target, fake, r1=True).total
    assert float(with_r1 - plain) == pytest.approx(0.5 * 0.4 * 4 * expected, rel=1e-4)
    # ... and its gradient reaches the critic's weights: d/dw of gamma/2 * every * |w|^2/(HW) = gamma * every * w/(HW)
    grad_plain = torch.autograd.grad(plain, linear.w)[0]
    grad_r1 = torch.autograd.grad(loss.critic_loss(masked, target, fake, r1=True).total, linear.w)[0]
    torch.testing.assert_close(grad_r1 - grad_plain, 0.4 * 4 * torch.tensor(w) / 256, rtol=1e-4, atol=1e-7)
    assert [loss.r1_due(s) for s in range(5)] == [True, False, False, False, True]
    assert not _loss(params.losses, linear).r1_due(0)  # r1_gamma 0: off


def test_feature_matching_is_zero_for_the_photo_and_trains_the_generator_only(params):
    torch.manual_seed(0)
    critic = PatchDiscriminator(32, dataclasses.replace(TINY, disc_scales=2, disc_blur=True))
    config = dataclasses.replace(params.losses, feature_matching=True)
    loss = StageLoss(config, {"rec": 1.0, "fm": 1.0}, critic, None, None)
    masked, target = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    target.requires_grad_(True)
    lm = torch.zeros(2, 68, 2)
    with frozen(critic):
        same = loss.generator_loss(masked, target, target.detach().clone(), lm).parts["fm"]
        fake = (target.detach() + 0.2 * torch.randn_like(target)).requires_grad_(True)
        gen = loss.generator_loss(masked, target, fake, lm)
    assert float(same) == 0.0 and float(gen.parts["fm"]) > 0
    gen.weighted["fm"].backward()
    assert fake.grad.abs().sum() > 0  # the generator's output is pulled
    assert target.grad is None  # the photo's activations are a fixed target
    assert all(p.grad is None for p in critic.parameters())  # the critic's weights get nothing
    # Averaged over layers, then scales, of the critic's activations (scores left out).
    real, fake_out = critic(masked, target.detach()), critic(masked, fake.detach())
    by_hand = sum(
        sum(float((f - r).abs().mean()) for f, r in zip(fs[:-1], rs[:-1])) / (len(fs) - 1)
        for fs, rs in zip(fake_out, real)
    ) / len(real)
    assert float(feature_matching_loss(fake_out, real)) == pytest.approx(by_hand, rel=1e-5)


# ------------------------------------------------------------------ the step and the optimizers


def test_the_critic_gets_no_gradient_in_the_generator_phase_and_still_trains(prepared_data, tmp_path, params):
    tiny = _levers(params)
    trainer = stage_trainer(
        tiny, 16, prepared_data, tmp_path / "out", None, tmp_path / "resume", require_previous=False
    )
    accumulated = []  # (phase, parameter) each time a gradient lands in a critic weight
    phase = ["critic"]
    for p in trainer.critic.parameters():
        p.register_post_accumulate_grad_hook(lambda p: accumulated.append((phase[0], id(p))))
    original_generator_loss = trainer.loss.generator_loss

    def generator_phase(*args, **kwargs):
        phase[0] = "generator"
        return original_generator_loss(*args, **kwargs)

    trainer.loss.generator_loss = generator_phase  # marks where the generator phase begins
    before = {k: v.detach().clone() for k, v in trainer.critic.named_parameters()}
    batch = trainer.train_data.batch(torch.arange(4))
    with trainer.torch_scope():
        trainer._set_train_mode()
        parts = trainer._train_step(batch, r1=True)
    assert {"critic", "adv", "fm"} <= set(parts)
    critic_params = list(trainer.critic.parameters())
    assert sorted(i for _, i in accumulated) == sorted(id(p) for p in critic_params)  # each once...
    assert {ph for ph, _ in accumulated} == {"critic"}  # ...in the critic phase
    assert all(p.grad is None for p in critic_params)
    assert all(p.requires_grad for p in critic_params)  # trainable again for the next step
    # The critic phase trained every weight (the score layers' biases get a zero hinge gradient at
    # init, where as many fake as real scores lie inside the margin).
    weights = [k for k in before if k.endswith("weight.original")]
    assert len(weights) == 7 and all(not torch.equal(trainer.critic.get_parameter(k), before[k]) for k in weights)


def test_critic_lr_and_betas_reach_the_critics_optimizer(prepared_data, tmp_path, params):
    tiny = fast_tiny_params(params)

    def optimizers(**train):
        changed = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, **train))
        trainer = stage_trainer(
            changed, 8, prepared_data, tmp_path / "out", None, tmp_path / "resume", require_previous=False
        )
        return trainer.opt_g.param_groups[0], trainer.opt_d.param_groups[0]

    g, d = optimizers()
    assert (d["lr"], d["betas"]) == (g["lr"], g["betas"]) == (tiny.train.lr, (tiny.train.beta1, tiny.train.beta2))
    g, d = optimizers(critic_lr=8e-4, critic_beta1=0.0, critic_beta2=0.99)
    assert (d["lr"], d["betas"]) == (8e-4, (0.0, 0.99))
    assert (g["lr"], g["betas"]) == (tiny.train.lr, (tiny.train.beta1, tiny.train.beta2))


def test_a_stage_with_every_critic_lever_on_trains_and_checkpoints(prepared_data, tmp_path, params, monkeypatch):
    from facectx.losses import stage as stage_module

    r1_calls = []
    real_r1 = stage_module.r1_penalty
    monkeypatch.setattr(stage_module, "r1_penalty", lambda *a: r1_calls.append(1) or real_r1(*a))
    tiny = _levers(params)
    tiny = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=(2, 1, 1, 1, 1)))
    models = tmp_path / "models"
    results = {}
    for stage, init in ((8, None), (16, models / "stage_8" / "checkpoint")):
        out = models / f"stage_{stage}"
        results[stage] = stage_trainer(tiny, stage, prepared_data, out, init, models / "resume").run()
    assert results[8].steps == 2 and results[16].steps == 1
    assert len(r1_calls) == 2  # steps 0 of stage 8 and of stage 16 (every 2nd step, from the first)
    header, *rows = (models / "stage_16" / "losses.csv").read_text().splitlines()
    assert header.split(",")[:5] == ["step", "loss_critic", "loss_rec", "loss_adv", "loss_fm"]
    assert all(math.isfinite(float(v)) for v in rows[-1].split(",")[1:5])
    weights = load_file(models / "stage_16" / "checkpoint" / "model.safetensors")
    assert any(k.startswith("critic.coarser.0.") for k in weights)  # the 8-px critic of stage 16
    assert not any(
        k.startswith("critic.coarser.") for k in load_file(models / "stage_8" / "checkpoint" / "model.safetensors")
    )
    meta = json.loads((models / "stage_16" / "checkpoint" / "meta.json").read_text())
    assert meta["model_args"]["disc_scales"] == 2 and meta["model_args"]["disc_blur"] is True


# ------------------------------------------------------------------ LPIPS as the perceptual term


def test_lpips_perceptual_term_loads_configured_files_and_matches_evaluations_lpips(tmp_path, params):
    import lpips
    import torchvision

    from facectx.evaluation.lpips import LpipsDistance
    from facectx.losses import perceptual_network
    from facectx.losses.perceptual import perceptual_term
    from facectx.losses.registry import TermInputs
    from facectx.weights import WeightsError

    torch.manual_seed(0)
    torch.save(
        torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth"
    )  # random: exercises loading
    heads = str(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")  # the real human-calibrated heads
    config = dataclasses.replace(
        params.losses,
        perceptual_network="lpips",
        lpips_backbone_weights=str(tmp_path / "alexnet.pth"),
        lpips_linear_weights=heads,
    )
    network = perceptual_network(config, None, 128, "cpu")
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (target + 0.3 * torch.randn_like(target)).clamp(-1, 1).requires_grad_(True)
    term = lambda out: perceptual_term(TermInputs(None, target, out, None, config, None, None, network, False))  # noqa: E731
    assert float(term(target)) == pytest.approx(0.0, abs=1e-6)
    value = term(fake)
    value.backward()
    assert value > 0 and fake.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in network.parameters())
    # The same LPIPS as evaluation's (one implementation), at the full frame.
    upsample = lambda x: torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)  # noqa: E731
    evaluation = LpipsDistance(str(tmp_path / "alexnet.pth"), heads)
    with torch.no_grad():
        expected = evaluation.distance(upsample(fake.detach()), upsample(target)).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(WeightsError, match="alexnet.pth is not LPIPS v0.1 AlexNet linear weights"):
        perceptual_network(
            dataclasses.replace(config, lpips_linear_weights=str(tmp_path / "alexnet.pth")), None, 128, "cpu"
        )


def test_a_compiled_critic_trains_with_r1(prepared_data, tmp_path, params):
    """torch.compile's autograd has no double backward: R1 steps run the critic uncompiled
    (RuntimeError "does not currently support double backward" otherwise), the others compiled."""
    tiny = _levers(params)
    tiny = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, compile=True, epochs=(1, 1, 1, 1, 1)))
    trainer = stage_trainer(tiny, 8, prepared_data, tmp_path / "out", None, tmp_path / "resume", require_previous=False)
    assert hasattr(trainer.loss.critic, "_orig_mod")  # compiled
    with trainer.torch_scope():
        trainer._set_train_mode()
        for step in range(2):  # an R1 step, then a plain one
            trainer.step = step
            parts = trainer.train_step(torch.arange(4))
            assert all(torch.isfinite(v) for v in parts.values()) and {"critic", "fm"} <= set(parts)
    assert all(p.grad is None and p.requires_grad for p in trainer.critic.parameters())
