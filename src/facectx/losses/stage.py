"""The object that combines the registered loss terms for one stage's two phases (critic,
generator)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from facectx.config import LossConfig
from facectx.losses.adversarial import lsgan_critic_loss
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

    def critic_loss(self, masked: torch.Tensor, target: torch.Tensor, fake: torch.Tensor) -> LossParts:
        loss = lsgan_critic_loss(self.critic(masked, target), self.critic(masked, fake.detach()))
        return LossParts(loss, {"critic": loss.detach()})

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
