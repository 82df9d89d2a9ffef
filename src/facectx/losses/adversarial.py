"""L_adv: least squares (LSGAN, Mao et al. 2017), the pix2pix/CycleGAN default: its gradients do
not vanish when the critic is confident, which matters early in each stage when the new block's
output is easy to tell from real photos."""

from __future__ import annotations

import torch

from facectx.losses.registry import GeneratorTerm, TermInputs, register


def scores(critic_output: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The score maps of a critic's output (one list per scale, the score map last)."""
    return [scale[-1] for scale in critic_output]


def lsgan_critic_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Averaged over the critic's scales."""
    pairs = list(zip(scores(real), scores(fake)))
    return sum(0.5 * ((r - 1).pow(2).mean() + f.pow(2).mean()) for r, f in pairs) / len(pairs)


def lsgan_generator_loss(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    maps = scores(fake)
    return sum(0.5 * (f - 1).pow(2).mean() for f in maps) / len(maps)


def adversarial_term(x: TermInputs) -> torch.Tensor:
    return lsgan_generator_loss(x.critic(x.masked, x.fake))


register(GeneratorTerm("adv", adversarial_term, weight="lambda_adv", switch="adversarial", uses_critic=True))
