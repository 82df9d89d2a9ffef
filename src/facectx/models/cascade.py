"""The cascaded multi-scale generator of Banerjee et al. (WACV 2020) and its discriminators.

Five blocks, one per resolution (8, 16, 32, 64, 128). Block_8 rebuilds the 8x8 face from the
8x8 masked face; every later block sees the masked face at its own scale plus the previous
block's output, upscaled 2x by a learned pixel-shuffle (sub-pixel convolution) layer, stacked
channel-wise (inferred: the paper does not say how the guide enters). Each block is a U-Net
(encoder-decoder with skip connections, as pix2pix) and pastes the input face back over its
output, so a block only ever invents context. Each resolution has its own PatchGAN critic.

Every learned 2x upsampling starts out as "nearest-neighbour upsampling plus a convolution"
(ICNR, Aitken et al. 2017), so these layers add no checkerboard of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class ModelArgs:
    kind: str  # "cascade" or "progan"
    resolutions: tuple[int, ...]  # e.g. (8, 16, 32, 64, 128)
    width: int  # channels of a generator's first layer; doubles per level up to max_width
    max_width: int
    disc_width: int  # channels of a critic's first layer
    disc_max_layers: int  # strided layers of a critic at the largest resolution
    # Defaults: today's critic (old checkpoints' recorded arguments have neither field).
    disc_blur: bool = False  # [1,2,1] blur before each stride-2 critic conv (anti-aliased downsampling)
    disc_scales: int = 1  # critics on the image at 1x, 1/2x, 1/4x (pix2pixHD); none below MIN_CRITIC_SIZE px


def _level_widths(depth: int, width: int, max_width: int) -> list[int]:
    return [min(width * 2**i, max_width) for i in range(depth)]


@torch.no_grad()
def icnr_(conv: nn.Conv2d, scale: int = 2) -> nn.Conv2d:
    """ICNR init of the conv before a PixelShuffle(scale): one sub-kernel per output channel,
    repeated over the scale**2 sub-pixel positions, so at init conv + shuffle is conv + nearest
    upsampling. With independent sub-kernels (default init) the positions of every scale x scale
    block differ from the start: a checkerboard the training then has to unlearn."""
    subpixels = scale**2
    channels = conv.out_channels // subpixels
    # PixelShuffle sends channel c * scale**2 + k to output channel c, sub-pixel position k.
    conv.weight.copy_(conv.weight[:channels].repeat_interleave(subpixels, dim=0))
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[:channels].repeat_interleave(subpixels, dim=0))
    return conv


@torch.no_grad()
def nearest_conv_init_(deconv: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    """Init a ConvTranspose2d(kernel 4, stride 2, padding 1) as nearest upsampling followed by a
    3x3 convolution: each 4x4 kernel is a 3x3 kernel convolved with the 2x2 box. Its four
    sub-pixel phases (2x2 kernels each) are otherwise independent random draws, and the untrained
    layer prints a checkerboard even though kernel 4 divides evenly by stride 2."""
    assert deconv.kernel_size == (4, 4) and deconv.stride == (2, 2) and deconv.padding == (1, 1)
    inputs, outputs = deconv.weight.shape[:2]
    kernel3 = deconv.weight[:, :, :3, :3].reshape(-1, 1, 3, 3)  # already drawn from the default init
    box = kernel3.new_ones(1, 1, 2, 2)
    deconv.weight.copy_(F.conv2d(F.pad(kernel3, (1, 1, 1, 1)), box).reshape(inputs, outputs, 4, 4))
    return deconv


class UNet(nn.Module):
    """pix2pix-style U-Net for a square input of `size`: strided 4x4 convs down to 2x2, transposed
    convs back up, each decoder level concatenated with the encoder level of the same size."""

    def __init__(
        self, in_channels: int, out_channels: int, size: int, width: int, max_width: int, image_head: bool = True
    ):
        super().__init__()
        self.image_head = image_head  # tanh to [-1, 1]; off when the U-Net maps features to features
        depth = int(math.log2(size)) - 1  # 8 -> 2 levels (8->4->2), 128 -> 6 levels
        widths = _level_widths(depth, width, max_width)
        self.down = nn.ModuleList()
        previous = in_channels
        for i, channels in enumerate(widths):
            layers = [nn.Conv2d(previous, channels, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.down.append(nn.Sequential(*layers))
            previous = channels
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            skip = widths[i] if i < depth - 1 else 0  # the innermost level has no skip partner
            out = widths[i - 1] if i > 0 else width
            self.up.append(
                nn.Sequential(
                    nearest_conv_init_(nn.ConvTranspose2d(previous + skip, out, 4, 2, 1, bias=False)),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                )
            )
            previous = out
        self.head = nn.Conv2d(previous, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()  # innermost output is x itself
        for i, layer in enumerate(self.up):
            if i > 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x)
        x = self.head(x)
        return torch.tanh(x) if self.image_head else x


def paste_face(generated: torch.Tensor, masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the input face where a pixel lies wholly inside the face, the generated pixels elsewhere.

    At 128 px the mask is hard. Below, the masked face is the 128-px masked frame area-averaged:
    at an edge pixel it holds the mean of face * mask over the pixel's footprint, which is neither
    the face colour nor face_r * mask_r. Any blend there is wrong even when the generator is
    perfect: mask * masked + (1 - mask) * generated (mask applied twice) darkens a ring round the
    face, masked + (1 - mask) * generated still mis-colours it (SSIM 0.994 at 16 px for the real
    target pasted over itself). So an edge pixel is the generator's, like the context: it sees the
    masked face and the mask, and pasting the real target over itself gives the target exactly."""
    inside = mask > 1 - 0.5 / 255  # 255 in the uint8 mask, whatever the float rounding
    return torch.where(inside, masked, generated)


class CascadeBlock(nn.Module):
    def __init__(self, size: int, args: ModelArgs, has_guide: bool):
        super().__init__()
        self.size = size
        # Sub-pixel convolution: 3 -> 12 channels at r/2, shuffled into 3 channels at r.
        self.guide_upsampler = (
            nn.Sequential(icnr_(nn.Conv2d(3, 12, 3, 1, 1)), nn.PixelShuffle(2)) if has_guide else None
        )
        in_channels = 3 + 1 + (3 if has_guide else 0)  # masked face, mask, guide
        self.unet = UNet(in_channels, 3, size, args.width, args.max_width)

    def forward(self, masked: torch.Tensor, mask: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        parts = [masked, mask]
        if self.guide_upsampler is not None:
            parts.append(self.guide_upsampler(previous))
        return paste_face(self.unet(torch.cat(parts, dim=1)), masked, mask)


class CascadeGenerator(nn.Module):
    """Blocks for every resolution up to `stage`; forward returns every block's output."""

    def __init__(self, args: ModelArgs, stage: int):
        super().__init__()
        self.args, self.stage = args, stage
        sizes = [r for r in args.resolutions if r <= stage]
        self.blocks = nn.ModuleDict({str(r): CascadeBlock(r, args, has_guide=i > 0) for i, r in enumerate(sizes)})

    # Every parameter takes part in every forward pass: DDP need not look for unused ones.
    find_unused_parameters = False
    # The earlier blocks come from the previous stage's checkpoint (training.state.load_previous_stage).
    inherits_previous_stage = True

    def earlier_blocks(self) -> list[nn.Module]:
        """The blocks of the stages before this one (trained already)."""
        return [block for key, block in self.blocks.items() if int(key) < self.stage]

    def optimizer_groups(self, lr: float, earlier_blocks: str, finetune_lr_scale: float, grows: bool) -> list[dict]:
        """The parameter groups to train: the new block at lr, the earlier ones frozen
        (earlier_blocks "frozen": their requires_grad turned off here) or fine-tuned at
        lr * finetune_lr_scale. grows: the stage starts from a previous stage's checkpoint (else
        every block is new and trains at lr)."""
        if not grows:
            return [{"params": list(self.parameters()), "lr": lr}]
        groups = [{"params": list(self.blocks[str(self.stage)].parameters()), "lr": lr}]
        if earlier_blocks == "frozen":
            for block in self.earlier_blocks():
                block.requires_grad_(False)
        else:
            earlier = [p for block in self.earlier_blocks() for p in block.parameters()]
            groups.append({"params": earlier, "lr": lr * finetune_lr_scale})
        return groups

    def frozen_modules(self, earlier_blocks: str) -> list[nn.Module]:
        """The modules kept in eval mode while training: frozen blocks keep their batch-norm
        statistics too."""
        return self.earlier_blocks() if earlier_blocks == "frozen" else []

    def set_step(self, step: int, total_steps: int, fade_in_fraction: float, grows: bool) -> None:
        """Told before each training step; the cascade has nothing that depends on it."""

    @property
    def step_variant(self) -> None:
        """What tells one recorded CUDA graph of the step from another: one graph serves all."""
        return None

    def forward(self, masked: dict[int, torch.Tensor], mask: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        outputs, previous = {}, None
        for key, block in self.blocks.items():
            r = int(key)
            previous = outputs[r] = block(masked[r], mask[r], previous)
        return outputs


MIN_CRITIC_SIZE = 8  # a coarser critic scale whose input would be smaller is not built


class Blur(nn.Module):
    """The normalised [1,2,1] x [1,2,1] low-pass before a stride-2 conv (ProGAN/StyleGAN2's
    anti-aliased downsampling): a strided conv alone aliases the input's highest frequencies, so
    its input gradient — what the generator is pushed along — carries a checkerboard.
    Reflect padding, not StyleGAN2's zeros: the blur then maps a flat image to the same flat
    image up to its border, so it adds no edge of its own for the critic to key on (zeros would
    pull every border pixel toward 0, mid-grey, a frame the photos do not have)."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 16
        # Not persistent: a constant, not a weight (checkpoints with and without blur hold the same tensors).
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype), groups=x.shape[1])


def _patch_critic(size: int, width: int, max_layers: int, blur: bool) -> nn.Sequential:
    """One PatchGAN critic for a `size`-px input: strided 4x4 convs, two 3x3 convs, a score map."""
    layers_n = max(1, min(max_layers, int(math.log2(size)) - 2))
    layers, previous, channels = [], 6, width
    for i in range(layers_n):
        channels = width * 2**i
        if blur:
            layers.append(Blur(previous))
        layers += [spectral_norm(nn.Conv2d(previous, channels, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        previous = channels
    layers += [
        spectral_norm(nn.Conv2d(channels, channels, 3, 1, 1)),
        nn.LeakyReLU(0.2, inplace=True),
        spectral_norm(nn.Conv2d(channels, 1, 3, 1, 1)),
    ]
    return nn.Sequential(*layers)


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN critic: sees the masked input beside a full image and scores patches.
    Spectral normalisation instead of batch norm: real and fake batches are scored separately,
    and batch statistics would leak one into the other.

    args.disc_scales > 1: pix2pixHD's multi-scale critic, one more critic per scale on the image
    and the masked input average-pooled 2x (a wider view of the same picture); a scale whose
    input would be below MIN_CRITIC_SIZE px is not built (so stage 8 has one critic, stage 16 two).
    forward returns one list per scale: the activations after each LeakyReLU, the score map last
    (the adversarial losses read the scores, feature matching the activations).

    A fresh critic per stage (`inherits_previous_stage`), with nothing that follows the step."""

    inherits_previous_stage = False
    find_unused_parameters = False  # every layer scores every image: DDP need not look for unused ones

    def __init__(self, size: int, args: ModelArgs):
        super().__init__()
        sizes = [size // 2**k for k in range(args.disc_scales) if size // 2**k >= MIN_CRITIC_SIZE] or [size]
        width, layers, blur = args.disc_width, args.disc_max_layers, args.disc_blur
        # The first scale keeps the name `net`: a one-scale critic's state dict is the old one.
        self.net = _patch_critic(sizes[0], width, layers, blur)
        self.coarser = nn.ModuleList([_patch_critic(s, width, layers, blur) for s in sizes[1:]])

    def set_step(self, step: int, total_steps: int, fade_in_fraction: float, grows: bool) -> None:
        """Told before each training step; this critic has nothing that depends on it."""

    @property
    def step_variant(self) -> None:
        """One recorded CUDA graph of the step serves every step (nothing fades in)."""
        return None

    def forward(self, masked: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([masked, image], dim=1)
        out = [_activations(self.net, x)]
        for critic in self.coarser:
            x = F.avg_pool2d(x, 2)
            out.append(_activations(critic, x))
        return out


def _activations(net: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of each LeakyReLU, then the score map."""
    out = []
    for layer in net:
        x = layer(x)
        if isinstance(layer, nn.LeakyReLU):
            out.append(x)
    return [*out, x]
