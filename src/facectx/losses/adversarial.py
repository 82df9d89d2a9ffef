"""L_adv: least squares (LSGAN, Mao et al. 2017), the pix2pix/CycleGAN default: its gradients do
not vanish when the critic is confident, which matters early in each stage when the new block's
output is easy to tell from real photos."""

from __future__ import annotations

import torch

from facectx.losses.registry import GeneratorTerm, TermInputs, register


def lsgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean())


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake_scores - 1).pow(2).mean()


def adversarial_term(x: TermInputs) -> torch.Tensor:
    return lsgan_generator_loss(x.critic(x.masked, x.fake))


register(GeneratorTerm("adv", adversarial_term, weight="lambda_adv", switch="adversarial", uses_critic=True))
