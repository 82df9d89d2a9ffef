"""L_adv and the critic's loss, in three forms (losses.adversarial_loss), averaged over the
critic's scales; and the lazy R1 penalty on the critic.

- lsgan (Mao et al. 2017, the pix2pix/CycleGAN default and this project's first): least squares;
  its gradients do not vanish when the critic is confident, which matters early in each stage.
- hinge (Lim & Ye 2017; SAGAN, BigGAN, pix2pixHD's successors): the critic stops pushing a
  score once it is past the margin.
- nonsaturating (Goodfellow et al. 2014; StyleGAN2): the logistic loss, the generator
  maximising log D(fake).

A critic returns one list per scale with its score map last (models.cascade.PatchDiscriminator):
the losses read `scores(out)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facectx.losses.registry import GeneratorTerm, TermInputs, register

Scores = list[torch.Tensor]  # one score map per critic scale


def scores(critic_out: list[list[torch.Tensor]]) -> Scores:
    return [scale[-1] for scale in critic_out]


def lsgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean())


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake_scores - 1).pow(2).mean()


def hinge_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def nonsaturating_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()  # -log sig(real) - log(1 - sig(fake))


def nonsaturating_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_scores).mean()  # -log sig(fake)


CRITIC_LOSSES = {"lsgan": lsgan_critic_loss, "hinge": hinge_critic_loss, "nonsaturating": nonsaturating_critic_loss}
GENERATOR_LOSSES = {
    "lsgan": lsgan_generator_loss,
    "hinge": hinge_generator_loss,
    "nonsaturating": nonsaturating_generator_loss,
}


def critic_loss(kind: str, real: Scores, fake: Scores) -> torch.Tensor:
    """The critic's loss of `kind`, averaged over its scales."""
    loss = CRITIC_LOSSES[kind]
    return torch.stack([loss(r, f) for r, f in zip(real, fake)]).mean()


def generator_loss(kind: str, fake: Scores) -> torch.Tensor:
    loss = GENERATOR_LOSSES[kind]
    return torch.stack([loss(f) for f in fake]).mean()


def r1_penalty(real_scores: Scores, real_images: torch.Tensor) -> torch.Tensor:
    """E over images of |d score / d image|^2 at real images (Mescheder et al. 2018), the
    un-halved, unweighted R1. An image's score is what the adversarial losses average: its score
    map's mean, averaged over the critic's scales. Keeps the graph (create_graph): the penalty's
    own gradient reaches the critic's weights."""
    per_image = torch.stack([s.float().flatten(1).mean(1) for s in real_scores]).mean(0)
    (grad,) = torch.autograd.grad(per_image.sum(), real_images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def adversarial_term(x: TermInputs) -> torch.Tensor:
    return generator_loss(x.config.adversarial_loss, scores(x.critic_on_fake()))


register(GeneratorTerm("adv", adversarial_term, weight="lambda_adv", switch="adversarial", uses_critic=True))
