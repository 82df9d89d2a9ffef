"""L_rec: L1 (the paper) or L2 (ablation) distance of the output to the photo; the reference term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facectx.losses.registry import GeneratorTerm, TermInputs, register


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


def reconstruction_term(x: TermInputs) -> torch.Tensor:
    return reconstruction_loss(x.fake, x.target, x.config.reconstruction)


register(GeneratorTerm("rec", reconstruction_term, weight="lambda_rec", reference=True))
