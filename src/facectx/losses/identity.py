"""L_id: the dlib face-recognition ResNet's embedding of the output against the photo's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facectx.losses.registry import GeneratorTerm, TermInputs, register


def identity_distance(output_embedding: torch.Tensor, target_embedding: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per example."""
    return 1 - F.cosine_similarity(output_embedding, target_embedding, dim=1)


def identity_term(x: TermInputs) -> torch.Tensor:
    if x.share_face_pass:
        embedding, target_embedding, _, _ = x.shared_face_pass()
    else:
        with torch.no_grad():
            target_embedding = x.face.embedding(x.target, x.landmarks)
        embedding = x.face.embedding(x.fake, x.landmarks)
    return identity_distance(embedding, target_embedding).mean()


register(GeneratorTerm("id", identity_term, weight="lambda_id", switch="identity"))
