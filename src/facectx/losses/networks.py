"""The fixed networks the identity and perceptual terms look through: dlib's face-recognition
ResNet on the aligned face chip (FaceFeatures), on the whole frame (WholeFrameFeatures), an
ImageNet VGG19 (VGG19Features) or LPIPS (LpipsFeatures); `perceptual_network` picks the
perceptual term's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facectx.config import LossConfig
from facectx.models.identity import CHIP_SIZE, extract_chips, load_identity_network
from facectx.models.lpips import LpipsNetwork
from facectx.weights import load_weights_into


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
        self.frame_size, self.padding = frame_size, padding
        self.net = load_identity_network(weights_dir, device=device)

    def chips(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
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
        import torchvision  # lazy: only the vgg19 option needs it, and it is slow to import

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


class WholeFrameFeatures(nn.Module):
    """The dlib ResNet's feature maps of the whole frame resized to its input: every hallucinated
    pixel is in view (its face chip holds 15% of them). Non-standard, labelled as such."""

    def __init__(self, face: FaceFeatures):
        super().__init__()
        self.face = face

    def features(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> list[torch.Tensor]:
        x = F.interpolate(to_unit(images).float(), size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False)
        return self.face.net.features(x)


class LpipsFeatures(nn.Module):
    """LPIPS v0.1 AlexNet (the one implementation, facectx.models.lpips) of the whole frame at
    crop.size_px, as evaluation scores it: AlexNet's 11x11 stride-4 first layer would see a
    32-px output as 7x7. The term is the LPIPS distance itself (unit-normalised activations,
    squared differences weighted by the learned heads), not an L1 of feature maps."""

    def __init__(self, backbone_weights: str, linear_weights: str, frame_size: int, device="cpu"):
        super().__init__()
        self.frame_size = frame_size
        self.net = LpipsNetwork(backbone_weights, linear_weights, device)

    def distance(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) LPIPS of the output against the photo (the photo's side without a graph)."""
        frame = self.frame_size
        output, target = to_full_frame(output, frame).float(), to_full_frame(target, frame).float()
        return self.net.distance(output, target)


def perceptual_network(config: LossConfig, face: FaceFeatures, frame_size: int, device) -> nn.Module | None:
    if not config.perceptual:
        return None
    if config.perceptual_network == "vgg19":
        return VGG19Features(config.vgg19_weights, frame_size, device)
    if config.perceptual_network == "lpips":
        return LpipsFeatures(config.lpips_backbone_weights, config.lpips_linear_weights, frame_size, device)
    # dlib ResNet feature maps: available offline; reports label them non-standard.
    return face if config.perceptual_view == "identity_chip" else WholeFrameFeatures(face)
