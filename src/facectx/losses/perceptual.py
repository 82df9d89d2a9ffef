"""L_pc: feature maps of the output against the photo's (perceptual_network picks the network)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facectx.losses.networks import LpipsFeatures
from facectx.losses.registry import GeneratorTerm, TermInputs, register


def feature_distance(output_features: list[torch.Tensor], target_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance of feature maps, averaged over layers."""
    return torch.stack([F.l1_loss(o, t) for o, t in zip(output_features, target_features)]).mean()


def perceptual_term(x: TermInputs) -> torch.Tensor:
    if isinstance(x.perceptual, LpipsFeatures):  # a learned distance of its own
        return x.perceptual.distance(x.fake, x.target).mean()
    if x.share_face_pass:
        _, _, features, target_features = x.shared_face_pass()
    else:
        with torch.no_grad():
            target_features = x.perceptual.features(x.target, x.landmarks)
        features = x.perceptual.features(x.fake, x.landmarks)
    return feature_distance(features, target_features)


register(GeneratorTerm("pc", perceptual_term, weight="lambda_pc", switch="perceptual"))
