"""The registry of generator loss terms: each term is one module of this package that registers
its name, its LossConfig fields (on/off switch, weight) and a pure function of the step's tensors.

Registration order is evaluation order, summation order and losses.csv's column order: the
package's __init__ imports the term modules in that order (rec, adv, id, pc, fm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from facectx.config import LossConfig


@dataclass
class TermInputs:
    """What a generator loss term may look at in one step (the generator phase)."""

    masked: torch.Tensor
    target: torch.Tensor
    fake: torch.Tensor  # the generator's output (graph attached)
    landmarks: torch.Tensor  # pixels of the full frame (crop.size_px)
    config: LossConfig
    critic: nn.Module
    face: nn.Module | None  # FaceFeatures: the dlib ResNet on the aligned face chip
    perceptual: nn.Module | None  # the perceptual term's feature network (perceptual_network)
    share_face_pass: bool  # L_id and L_pc from one pass of the dlib ResNet through the same view
    _face_pass: tuple | None = field(default=None, repr=False)
    _critic_fake: list | None = field(default=None, repr=False)

    def critic_on_fake(self) -> list[list[torch.Tensor]]:
        """The critic's output on the generator's output, computed once for the terms that read it
        (adv: the scores; fm: the activations)."""
        if self._critic_fake is None:
            self._critic_fake = self.critic(self.masked, self.fake)
        return self._critic_fake

    def critic_on_real(self) -> list[list[torch.Tensor]]:
        """The critic's output on the photo: a fixed target (no graph), by the same weights as its
        pass on the output. In training mode each pass of a spectrally normalised critic takes a
        power-iteration step first, so a second training-mode pass would compare the two images
        through slightly different weights (fm 1e-5 for fake == real); in eval mode it uses the
        vectors the pass on the output left."""
        self.critic_on_fake()
        training = self.critic.training
        try:
            with torch.no_grad():
                return self.critic.eval()(self.masked, self.target)
        finally:
            self.critic.train(training)

    def shared_face_pass(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(embedding, target embedding, features, target features) from one view and one pass per
        image, computed once for the terms that share it: the view's cut and the trunk (nearly all
        of the network's cost) are not computed twice."""
        if self._face_pass is None:
            with torch.no_grad():
                target_embedding, target_features = self.face.embedding_and_features(self.target, self.landmarks)
            embedding, features = self.face.embedding_and_features(self.fake, self.landmarks)
            self._face_pass = (embedding, target_embedding, features, target_features)
        return self._face_pass


@dataclass(frozen=True)
class GeneratorTerm:
    name: str  # the key in losses.csv (loss_<name>, grad_<name>, share_<name>) and in the tracker
    compute: Callable[[TermInputs], torch.Tensor]  # the unweighted term, a scalar
    weight: str  # LossConfig field: one float, or one per train.stages entry (0 = off at that stage)
    switch: str | None = None  # LossConfig bool field that switches the term off (the ablations)
    reference: bool = False  # always on; every other term's gradient share is measured against it
    uses_critic: bool = False  # trains a critic (the critic phase runs only when such a term is on)


TERMS: dict[str, GeneratorTerm] = {}


def register(term: GeneratorTerm) -> GeneratorTerm:
    if term.name in TERMS:
        raise ValueError(f"loss term {term.name!r} is registered twice")
    TERMS[term.name] = term
    return term


def reference_term() -> str:
    return next(name for name, term in TERMS.items() if term.reference)


def stage_weights(config: LossConfig, stages: tuple[int, ...], stage: int) -> dict[str, float]:
    """The weight of every term that is on at this stage, in registration order: the reference
    term always, the others when switched on (the ablations switch one off) and with a weight
    above 0 there (L_id is off at 8-16 px by default)."""
    i = list(stages).index(stage)
    weights = {}
    for term in TERMS.values():
        switched_on = term.switch is None or getattr(config, term.switch)
        if not (term.reference or switched_on):
            continue  # (its weights need not be given: settings recorded before the term existed)
        weight = getattr(config, term.weight)
        if isinstance(weight, (tuple, list)):  # one weight per train.stages entry
            weight = weight[i]
        if term.reference or weight > 0:
            weights[term.name] = weight
    return weights
