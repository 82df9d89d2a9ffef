"""The networks evaluation measures with: a face matcher for identity, features for the
Fréchet distance, and a perceptual distance.

Standard choices (InceptionV3 for FID) need ImageNet weights no package ships; when
`evaluate.inception_weights` names a file they are used. Otherwise the Fréchet distance is taken
in the feature space of a network we do have and every report labels it non-standard.
The identity matcher must not be the network of the identity loss: the default is `faceres`
(an independent MobileNet face identifier); `dlib` (the L_id network) is the marked fallback.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facectx.data.masks import crop_to_frame, face_frame
from facectx.evaluation.matcher import FACERES_DESCRIPTOR, FACERES_INPUT, FaceResMatcher, faceres_input
from facectx.evaluation.metrics import unit_images
from facectx.models.identity import CHIP_SIZE, extract_chips, load_identity_network
from facectx.weights import load_weights_into, weights_label


class DlibNetworks:
    """dlib's face-recognition ResNet (our PyTorch port): NOT independent of the identity loss."""

    name = "dlib ResNet (the L_id network: not independent)"
    fd_name = f"{name}: mean activations at four depths (non-standard FD)"
    perceptual_name = f"LPIPS-style distance of {name} activations, no learned weights (non-standard)"
    independent = False

    def __init__(self, device="cpu", weights_dir=None):
        self.net = load_identity_network(weights_dir, device=device)
        self.device = device

    @torch.no_grad()
    def embed(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        chips = extract_chips(
            unit_images(images).to(self.device), torch.as_tensor(landmarks, dtype=torch.float32, device=self.device)
        )
        return F.normalize(self.net(chips), dim=1).cpu().numpy()

    @torch.no_grad()
    def _maps(self, images: np.ndarray) -> list[torch.Tensor]:
        x = F.interpolate(
            unit_images(images).to(self.device), size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False
        )
        return self.net.features(x)

    def frame_features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Spatially pooled activations of four depths over the whole frame (context included),
        for both identity and the Fréchet distance."""
        pooled = torch.cat([m.mean(dim=(2, 3)) for m in self._maps(images)], dim=1).cpu().numpy()
        return {"identity": pooled, "fd": pooled}

    def perceptual_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return unweighted_lpips(self._maps(a), self._maps(b), channel_dim=1)


def unweighted_lpips(maps_a: list[torch.Tensor], maps_b: list[torch.Tensor], channel_dim: int) -> np.ndarray:
    """LPIPS without learned weights (the labelled substitute): activations unit-normalised along
    channels, squared differences summed over channels, averaged over space, then over layers."""
    total = 0
    for fa, fb in zip(maps_a, maps_b):
        diff = (F.normalize(fa, dim=channel_dim) - F.normalize(fb, dim=channel_dim)) ** 2
        total = total + diff.sum(channel_dim).mean(dim=(1, 2))
    return total.cpu().numpy() / len(maps_a)


def make_networks(name: str, device="cpu", assets=None):
    """assets: params' AssetsConfig naming the weight folders (None: the cache)."""
    if name == "dlib":
        return DlibNetworks(device, assets.identity_weights if assets else None)
    if name == "faceres":
        return FaceResNetworks(device, assets.matcher_weights if assets else None)
    raise ValueError(f"evaluate.matcher must be faceres or dlib, got {name!r}")


class FaceResNetworks:
    """faceres (independent of the identity loss): identity on the aligned, zoomed-out face;
    Fréchet features and perceptual distance over the whole frame (resized to its 224 input).

    The Fréchet features are the spatially averaged activations of `conv_pw_5` (256-d, a 28x28
    map), not the 1024-d identity descriptor: that descriptor is trained to ignore everything but
    who the person is, so it barely tells a smeared background from a real one. Measured with 400
    LFW photos a side (benchmarks/fd_features.py), validation vs test photos against each of the
    four baselines: conv_pw_5 0.20 vs 27.6-37.6; conv_pw_11 0.51 vs 8.4-11.5; the identity
    descriptor 36.5 vs 52-62. conv_pw_5 still separates them with 20 a side (2.6 vs >31)."""

    PERCEPTUAL_NODES = (
        "conv_pw_3_relu/clip_by_value",
        "conv_pw_5_relu/clip_by_value",
        "conv_pw_11_relu/clip_by_value",
        "conv_pw_13_relu/clip_by_value",
    )
    FD_NODE = "conv_pw_5_relu/clip_by_value"
    independent = True

    def __init__(self, device="cpu", weights_dir=None):
        self.matcher = FaceResMatcher(weights_dir, device=device)
        self.name = self.matcher.name
        self.fd_name = f"{self.name}: mean {self.FD_NODE.split('_relu')[0]} activations (non-standard FD)"
        self.perceptual_name = f"LPIPS-style distance of {self.name} activations, no learned weights (non-standard)"

    def embed(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.matcher.embed(images, landmarks)

    def _frames(self, images: np.ndarray) -> torch.Tensor:
        resized = np.stack([cv2.resize(im, (224, 224), interpolation=cv2.INTER_CUBIC) for im in images])
        return faceres_input(resized).to(self.matcher.device)

    @torch.no_grad()
    def frame_features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Over the whole frame, in one pass: the identity descriptor and the Fréchet features."""
        maps = self.matcher.graph({FACERES_INPUT: self._frames(images)}, FACERES_DESCRIPTOR, also=(self.FD_NODE,))
        return {
            "identity": maps[FACERES_DESCRIPTOR].cpu().numpy(),
            "fd": maps[self.FD_NODE].mean(dim=(1, 2)).cpu().numpy(),
        }  # NHWC

    @torch.no_grad()
    def perceptual_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """LPIPS-style without learned weights: channel-normalised activations at four depths."""
        deepest, *others = reversed(self.PERCEPTUAL_NODES)
        maps_a = self.matcher.graph({FACERES_INPUT: self._frames(a)}, deepest, also=tuple(others))
        maps_b = self.matcher.graph({FACERES_INPUT: self._frames(b)}, deepest, also=tuple(others))
        return unweighted_lpips(
            [maps_a[n] for n in self.PERCEPTUAL_NODES], [maps_b[n] for n in self.PERCEPTUAL_NODES], channel_dim=-1
        )  # NHWC activations


class WholeFrameIdentity:
    """Identity over the whole 128 frame (crop around the face as `prepare` makes it, with its
    context): what evaluation scores, so the verification threshold is calibrated on LFW pairs
    with exactly this view. Has the `embed(images, landmarks)` of a matcher."""

    def __init__(self, nets, crop):
        self.nets, self.crop = nets, crop
        self.name = f"{nets.name}, whole frame"

    def embed(self, images, landmarks) -> np.ndarray:
        frames = np.stack(
            [
                crop_to_frame(im, face_frame(np.asarray(pts, np.float32), self.crop), self.crop.size_px)
                for im, pts in zip(images, landmarks)
            ]
        )
        features = self.nets.frame_features(frames)["identity"]
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)


class InceptionFeatures:
    """Standard FID features: InceptionV3's 2048-d pool output, from a configured weights file
    (torchvision's InceptionV3 state dict; pytorch-fid's weights differ slightly — name the file
    in reports)."""

    def __init__(self, weights_path: str, device="cpu"):
        import torchvision  # lazy: only with evaluate.inception_weights set, and slow to import

        model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        load_weights_into(model, weights_path, "a torchvision InceptionV3 state dict")
        model.fc = torch.nn.Identity()
        self.model = model.to(device).eval()
        self.device = device
        self.name = self.fd_name = f"InceptionV3 ({weights_label(weights_path)})"
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def frame_features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = F.interpolate(unit_images(images), size=(299, 299), mode="bilinear", align_corners=False)
        return {"fd": self.model(((x - self.mean) / self.std).to(self.device)).cpu().numpy()}
