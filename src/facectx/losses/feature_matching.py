"""L_fm: pix2pixHD's feature matching (Wang et al. 2018) — the L1 distance between the critic's
intermediate activations on the output and on the photo, averaged over layers and then over the
critic's scales. The photo's side is a fixed target (no gradient); the critic's weights get none
either (the generator phase freezes them), so the term trains the generator only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facectx.losses.registry import GeneratorTerm, TermInputs, register


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """fake, real: a critic's output (per scale: activations, score map last); the scores are not matched."""
    per_scale = [
        torch.stack([F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fs[:-1], rs[:-1])]).mean()
        for fs, rs in zip(fake, real)
    ]
    return torch.stack(per_scale).mean()


def feature_matching_term(x: TermInputs) -> torch.Tensor:
    return feature_matching_loss(x.critic_on_fake(), x.critic_on_real())


register(GeneratorTerm("fm", feature_matching_term, weight="lambda_fm", switch="feature_matching", uses_critic=True))
