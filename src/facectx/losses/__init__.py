"""The generator's loss terms, one module each, registered by name (`registry.TERMS`), and the
object that combines them for one stage's two phases (`StageLoss`).

A new term is one module here that calls `register(GeneratorTerm(...))` with its name, its
LossConfig switch and weight fields and a pure function of the step's tensors (`TermInputs`),
imported below in its place in the order, plus its fields in LossConfig and params.yaml. The
trainer's losses.csv columns and gradient shares follow the registry.
"""

from __future__ import annotations

# The import order is the registry's order: the order terms are computed, summed and logged.
# isort: off
from facectx.losses.reconstruction import reconstruction_loss
from facectx.losses.adversarial import (
    critic_loss,
    generator_loss,
    lsgan_critic_loss,
    lsgan_generator_loss,
    r1_penalty,
    scores,
)
from facectx.losses.identity import identity_distance
from facectx.losses.perceptual import feature_distance
from facectx.losses.feature_matching import feature_matching_loss

# isort: on
from facectx.losses.networks import (
    FaceFeatures,
    LpipsFeatures,
    VGG19Features,
    WholeFrameFeatures,
    perceptual_network,
    to_full_frame,
    to_unit,
)
from facectx.losses.registry import TERMS, GeneratorTerm, TermInputs, reference_term, register, stage_weights
from facectx.losses.stage import LossParts, StageLoss, within_photo

__all__ = [
    "TERMS",
    "FaceFeatures",
    "GeneratorTerm",
    "LossParts",
    "StageLoss",
    "TermInputs",
    "LpipsFeatures",
    "VGG19Features",
    "WholeFrameFeatures",
    "critic_loss",
    "feature_distance",
    "feature_matching_loss",
    "generator_loss",
    "identity_distance",
    "lsgan_critic_loss",
    "lsgan_generator_loss",
    "perceptual_network",
    "r1_penalty",
    "reconstruction_loss",
    "reference_term",
    "register",
    "scores",
    "stage_weights",
    "to_full_frame",
    "to_unit",
    "within_photo",
]
