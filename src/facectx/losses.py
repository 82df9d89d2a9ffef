"""The four losses of the paper as small pure functions, and the object that combines them for
one stage's two phases (critic, generator).

Adversarial loss: least squares (LSGAN, Mao et al. 2017), the pix2pix/CycleGAN default: its
gradients do not vanish when the critic is confident, which matters early in each stage when
the new block's output is easy to tell from real photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from facectx.config import LossConfig

# --------------------------------------------------------------------------- pure functions


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


def within_photo(output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The output where the frame lies inside the photo, the target (its black padding) where the
    crop ran past the photo's edge (valid 0): no loss term and no critic sees, or pulls on, pixels
    that were never in the photo (28% of LFW frames have some)."""
    return valid * output + (1 - valid) * target


def lsgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean())


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake_scores - 1).pow(2).mean()


def identity_distance(output_embedding: torch.Tensor, target_embedding: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per example."""
    return 1 - F.cosine_similarity(output_embedding, target_embedding, dim=1)


def feature_distance(output_features: list[torch.Tensor], target_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance of feature maps, averaged over layers."""
    return torch.stack([F.l1_loss(o, t) for o, t in zip(output_features, target_features)]).mean()


# --------------------------------------------------------------------------- fixed networks


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (image + 1) * 0.5


def to_full_frame(image: torch.Tensor, size: int) -> torch.Tensor:
    """Upsample a low-resolution output to the frame size (crop.size_px) the landmarks are given in."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


class FaceFeatures(nn.Module):
    """dlib's face-recognition ResNet on the aligned face chip: embedding and feature maps.

    frame_size: side of the frame the landmarks are given in (crop.size_px); weights_dir: the
    network's weights folder, None for the cache (facectx.models.identity.load_identity_network);
    padding: the chip's padding (0.25 is dlib's face chip; more shows more of the context).
    """

    def __init__(
        self, frame_size: int, device: str | torch.device = "cpu", weights_dir: str | None = None, padding: float = 0.25
    ):
        super().__init__()
        from facectx.models.identity import load_identity_network

        self.frame_size, self.padding = frame_size, padding
        self.net = load_identity_network(weights_dir, device=device)

    def chips(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        from facectx.models.identity import extract_chips

        return extract_chips(to_unit(to_full_frame(images, self.frame_size)).float(), landmarks, padding=self.padding)

    def embedding(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.net(self.chips(images, landmarks))

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(self.chips(images, landmarks))

    def embedding_and_features(
        self, images: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Both from one chip and one pass of the network (the trunk up to conv256 is shared)."""
        return self.net.forward_with_features(self.chips(images, landmarks))


class VGG19Features(nn.Module):
    """Standard perceptual features (relu1_2, relu2_2, relu3_4, relu4_4) of an ImageNet VGG19
    loaded from a configured file; the whole frame, not just the face."""

    LAYERS = (3, 8, 17, 26)

    def __init__(self, weights_path: str, frame_size: int, device: str | torch.device = "cpu"):
        super().__init__()
        import torchvision

        from facectx.weights import load_weights_into

        vgg = torchvision.models.vgg19()
        # Only the convolutional part is used: a file with just `features.*` is enough.
        load_weights_into(vgg.features, weights_path, "a torchvision VGG19 state dict", prefix="features.")
        self.frame_size = frame_size
        self.body = vgg.features[: self.LAYERS[-1] + 1].to(device).eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1))

    def features(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> list[torch.Tensor]:
        x = (to_unit(to_full_frame(images, self.frame_size)).float() - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.LAYERS:
                out.append(x)
        return out


# --------------------------------------------------------------------------- per-stage object


@dataclass
class LossParts:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]  # detached, on the device: read them only when logging (a sync)
    # Each term times its weight, graph attached: the trainer measures each term's own gradient.
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)


def stage_weights(config: LossConfig, stages: tuple[int, ...], stage: int) -> dict[str, float]:
    """The weight of every term that is on at this stage: switched on (the ablations switch one
    off) and with a weight above 0 there (L_id is off at 8-16 px by default)."""
    i = list(stages).index(stage)
    weights = {"rec": config.lambda_rec}
    for name, enabled, per_stage in (
        ("adv", config.adversarial, config.lambda_adv),
        ("id", config.identity, config.lambda_id),
        ("pc", config.perceptual, config.lambda_pc),
    ):
        if enabled and per_stage[i] > 0:
            weights[name] = per_stage[i]
    return weights


class StageLoss:
    """Owns the critic and the fixed networks of one stage; computes each phase's loss.

    weights: stage_weights(...) — the terms on at this stage and their weights. The identity and
    perceptual terms see the output upsampled to the full frame, so the same view (from the
    frame's landmarks) serves every resolution. When the dlib ResNet serves both terms through
    the same view, one pass per image gives both (`share_face_pass`; False runs the two passes
    separately, for benchmarks and tests that compare the two: the losses are the same).
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

    def critic_loss(self, masked: torch.Tensor, target: torch.Tensor, fake: torch.Tensor) -> LossParts:
        loss = lsgan_critic_loss(self.critic(masked, target), self.critic(masked, fake.detach()))
        return LossParts(loss, {"critic": loss.detach()})

    def generator_loss(
        self, masked: torch.Tensor, target: torch.Tensor, fake: torch.Tensor, landmarks: torch.Tensor
    ) -> LossParts:
        w = self.weights
        values = {"rec": reconstruction_loss(fake, target, self.config.reconstruction)}
        if "adv" in w:
            values["adv"] = lsgan_generator_loss(self.critic(masked, fake))
        if "id" in w and "pc" in w and self.perceptual is self.face and self.share_face_pass:
            # The dlib ResNet's embedding and feature maps from one view and one pass per image:
            # the view's cut and the trunk (nearly all of the network's cost) are not computed twice.
            with torch.no_grad():
                target_embedding, target_features = self.face.embedding_and_features(target, landmarks)
            embedding, features = self.face.embedding_and_features(fake, landmarks)
            values["id"] = identity_distance(embedding, target_embedding).mean()
            values["pc"] = feature_distance(features, target_features)
        else:
            if "id" in w:
                with torch.no_grad():
                    target_embedding = self.face.embedding(target, landmarks)
                values["id"] = identity_distance(self.face.embedding(fake, landmarks), target_embedding).mean()
            if "pc" in w:
                with torch.no_grad():
                    target_features = self.perceptual.features(target, landmarks)
                values["pc"] = feature_distance(self.perceptual.features(fake, landmarks), target_features)
        weighted = {name: w[name] * value for name, value in values.items()}
        total = sum(weighted.values())
        parts = {name: value.detach() for name, value in values.items()}
        parts["total"] = total.detach()
        return LossParts(total, parts, weighted)


class WholeFrameFeatures(nn.Module):
    """The dlib ResNet's feature maps of the whole frame resized to its input: every hallucinated
    pixel is in view (its face chip holds 15% of them). Non-standard, labelled as such."""

    def __init__(self, face: FaceFeatures):
        super().__init__()
        self.face = face

    def features(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> list[torch.Tensor]:
        from facectx.models.identity import CHIP_SIZE

        x = F.interpolate(to_unit(images).float(), size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False)
        return self.face.net.features(x)


def perceptual_network(config: LossConfig, face: FaceFeatures, frame_size: int, device) -> nn.Module | None:
    if not config.perceptual:
        return None
    if config.perceptual_network == "vgg19":
        return VGG19Features(config.vgg19_weights, frame_size, device)
    # dlib ResNet feature maps: available offline; reports label them non-standard.
    return face if config.perceptual_view == "identity_chip" else WholeFrameFeatures(face)
