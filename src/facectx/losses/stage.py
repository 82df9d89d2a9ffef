"""The object that combines the registered loss terms for one stage's two phases (critic,
generator)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from facectx.config import LossConfig
from facectx.losses.adversarial import critic_loss, r1_penalty, scores
from facectx.losses.networks import FaceFeatures
from facectx.losses.registry import TERMS, TermInputs


def within_photo(output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The output where the frame lies inside the photo, the target (its black padding) where the
    crop ran past the photo's edge (valid 0): no loss term and no critic sees, or pulls on, pixels
    that were never in the photo (28% of LFW frames have some)."""
    return valid * output + (1 - valid) * target


@dataclass
class LossParts:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]  # detached, on the device: read them only when logging (a sync)
    # Each term times its weight, graph attached: the trainer measures each term's own gradient.
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)


class StageLoss:
    """Owns the critic and the fixed networks of one stage; computes each phase's loss.

    weights: stage_weights(...) — the terms on at this stage and their weights, in registration
    order (the order they are computed and summed in). The identity and perceptual terms see the
    output upsampled to the full frame, so the same view (from the frame's landmarks) serves every
    resolution. When the dlib ResNet serves both terms through the same view, one pass per image
    gives both (`share_face_pass`; False runs the two passes separately, for benchmarks and tests
    that compare the two: the losses are the same).
    """

    def __init__(
        self,
        config: LossConfig,
        weights: dict[str, float],
        critic: nn.Module,
        face: FaceFeatures | None,
        perceptual: nn.Module | None,
        share_face_pass: bool = True,
    ):
        self.config, self.weights, self.critic, self.face, self.perceptual = config, weights, critic, face, perceptual
        self.share_face_pass = share_face_pass

    @property
    def uses_critic(self) -> bool:
        """Whether a term on at this stage trains against the critic (else the critic phase is skipped)."""
        return any(TERMS[name].uses_critic for name in self.weights)

    def r1_due(self, step: int) -> bool:
        """Whether step `step` (0-based) adds the lazy R1 penalty: every losses.r1_every-th step."""
        return self.config.r1_gamma > 0 and step % self.config.r1_every == 0

    def critic_loss(
        self, masked: torch.Tensor, target: torch.Tensor, fake: torch.Tensor, r1: bool = False
    ) -> LossParts:
        """The critic's loss (losses.adversarial_loss); r1: plus the lazy R1 penalty, r1_gamma / 2
        * E|d score / d real image|^2 * r1_every (StyleGAN2's lazy regularisation: applied every
        r1_every steps at r1_every times the weight), on the photo only — the masked conditioning
        is the same for real and fake, so its gradient says nothing of what the critic tells apart."""
        kind = self.config.adversarial_loss
        real = target.detach().requires_grad_(True) if r1 else target
        # R1 back-propagates through a gradient, which torch.compile's aot_autograd cannot
        # (RuntimeError: "does not currently support double backward"): on R1 steps the critic
        # runs uncompiled (what train.compile wrapped; a DDP wrapper stays, it syncs the gradient).
        critic = getattr(self.critic, "_orig_mod", self.critic) if r1 else self.critic
        real_scores = scores(critic(masked, real))
        loss = critic_loss(kind, real_scores, scores(critic(masked, fake.detach())))
        parts = {"critic": loss.detach()}  # without R1: the curve's per-step means stay the adversarial loss
        if r1:
            loss = loss + 0.5 * self.config.r1_gamma * self.config.r1_every * r1_penalty(real_scores, real)
        return LossParts(loss, parts)

    def generator_loss(
        self, masked: torch.Tensor, target: torch.Tensor, fake: torch.Tensor, landmarks: torch.Tensor
    ) -> LossParts:
        w = self.weights
        inputs = TermInputs(
            masked,
            target,
            fake,
            landmarks,
            self.config,
            self.critic,
            self.face,
            self.perceptual,
            share_face_pass="id" in w and "pc" in w and self.perceptual is self.face and self.share_face_pass,
        )
        values = {name: TERMS[name].compute(inputs) for name in w}
        weighted = {name: w[name] * value for name, value in values.items()}
        total = sum(weighted.values())
        parts = {name: value.detach() for name, value in values.items()}
        parts["total"] = total.detach()
        return LossParts(total, parts, weighted)
