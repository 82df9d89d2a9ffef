"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) as a PyTorch module.

The architecture follows face-api's FaceRecognitionNet (src/faceRecognitionNet/*.ts), which
mirrors dlib's C++ network:

    150x150 RGB chip -> conv 7x7/2 'valid' (32) -> max-pool 3x3/2 'valid'
    -> 3 x residual(32) -> residual-down(64) + 3 x residual(64)
    -> residual-down(128) + 2 x residual(128) -> residual-down(256) + 2 x residual(256)
    -> residual-down(256) -> global mean -> fc 256->128 (no bias)

Every conv is conv + per-channel affine ("scale layer", dlib's frozen batch norm) + optional relu.
The 128-d descriptor has dlib's scale (not re-normalised): dlib calls two faces the same person
when the Euclidean distance of their descriptors is below 0.6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facectx.models.identity.chip import CHIP_SIZE

DESCRIPTOR_DIM = 128
# dlib's same-person threshold on the Euclidean distance of two descriptors.
DLIB_SAME_PERSON_DISTANCE = 0.6

# dlib's input layer (input_rgb_image_sized<150>): (pixel - mean) / 256 with pixel in 0..255.
# face-api's JavaScript divides by 255 instead; the two agree with dlib's descriptors to ~1e-7 in
# cosine on LFW, and we follow dlib's C++ (dlib/dnn/input.h), where the weights were trained.
_MEAN_RGB = (122.782, 117.001, 104.298)
_INPUT_DIVISOR = 256.0

STAGES = (  # (name, in_channels, out_channels, downsample) in forward order, after conv32_down
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
FEATURE_TAPS = ("conv32_3", "conv64_3", "conv128_2", "conv256_2")


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
        self.blocks = nn.ModuleDict({name: _Residual(cin, cout, down) for name, cin, cout, down in STAGES})
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
            if name in FEATURE_TAPS:
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
