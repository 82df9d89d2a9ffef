"""The paper's comparison variant: one generator grown progressively 8 -> 128 (ProGAN, Karras
et al. 2018), made image-to-image for this task.

ProGAN's generator grows from a latent vector; here it grows around the masked face instead, as
an encoder-decoder with a skip at every level (the only way the task's input reaches each
resolution, as it does the cascade's blocks). At stage S it holds a level per resolution up to S:
  from-RGB at S (masked face + mask, 4 channels) -> per level, ProGAN's critic-style block (two
  3x3 convs, 2x average pooling) down to the base resolution -> a core at the base (a 3x3 block,
  pooled to half, ProGAN's 4x4 block, upsampled back) -> per level, ProGAN's generator block
  (nearest 2x upsampling, the encoder's features of that size beside it, two 3x3 convs) -> to-RGB
  at S.
ProGAN's own choices throughout: equalized learning rate in every conv, pixel norm after every
hidden conv of the generator (no batch norm), leaky ReLU 0.2, nearest upsampling and average
pooling, 1x1 from-/to-RGB, and the newest level faded in (`FadesIn`): while alpha < 1 the new
from-RGB path is blended with the previous from-RGB on the input at S/2, and the new to-RGB with
the previous to-RGB upsampled, so at alpha 0 the grown generator computes what the previous
stage's did, upsampled. One deviation: the blended image goes through tanh (ProGAN's output is
linear, clipped for display), so the output lies in [-1, 1] like the cascade's; nearest
upsampling commutes with tanh, so the alpha-0 identity holds exactly.

The critic grows and fades the same way (`progan_critic`). Same inputs, outputs, losses, data and
schedule as the cascade, so the comparison isolates the design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facectx.models.cascade import ModelArgs, paste_face
from facectx.models.equalized import EqualizedConv2d, FadesIn, conv_lrelu


def level_channels(size: int, width: int, args: ModelArgs) -> int:
    """Channels at resolution `size`: `width` at the largest resolution, doubling per level down,
    capped at max_width (ProGAN's 512 at 8-32 px, 256 at 64, 128 at 128 with width 128)."""
    return min(args.max_width, width * (max(args.resolutions) // size))


def from_rgb(in_channels: int, channels: int) -> nn.Sequential:
    return nn.Sequential(EqualizedConv2d(in_channels, channels, 1), nn.LeakyReLU(0.2))


class ProgressiveGenerator(FadesIn):
    def __init__(self, args: ModelArgs, stage: int):
        super().__init__()
        self.args, self.stage = args, stage
        self.sizes = [r for r in args.resolutions if r <= stage]
        base = self.sizes[0]

        def ch(r: int) -> int:
            return level_channels(r, args.width, args)

        self.from_rgb = nn.ModuleDict({str(r): from_rgb(4, ch(r)) for r in self.sizes})
        # Linear output layers: gain 1, as ProGAN's to-RGB.
        self.to_rgb = nn.ModuleDict({str(r): EqualizedConv2d(ch(r), 3, 1, gain=1.0) for r in self.sizes})
        c = ch(base)
        self.core_down = nn.Sequential(conv_lrelu(c, c, pixel_norm=True), nn.AvgPool2d(2))
        self.core = nn.Sequential(conv_lrelu(c, c, pixel_norm=True), conv_lrelu(c, c, pixel_norm=True))
        self.core_up = self._up_block(c, c, c)
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        for r in self.sizes[1:]:
            high, low = ch(r), ch(r // 2)
            self.down[str(r)] = nn.Sequential(
                conv_lrelu(high, high, pixel_norm=True), conv_lrelu(high, low, pixel_norm=True), nn.AvgPool2d(2)
            )
            self.up[str(r)] = self._up_block(low, high, high)

    @staticmethod
    def _up_block(low: int, skip: int, out: int) -> nn.Sequential:
        """Two 3x3 convs on the nearest-upsampled features beside the encoder's of the same size."""
        return nn.Sequential(conv_lrelu(low + skip, out, pixel_norm=True), conv_lrelu(out, out, pixel_norm=True))

    def optimizer_groups(self, lr: float, earlier_blocks: str, finetune_lr_scale: float, grows: bool) -> list[dict]:
        """One generator, one group at lr: ProGAN trains every level at every stage
        (earlier_blocks and finetune_lr_scale concern the cascade's blocks)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def frozen_modules(self, earlier_blocks: str) -> list[nn.Module]:
        """Nothing is frozen: every level trains at every stage."""
        return []

    def image(self, masked: dict[int, torch.Tensor], mask: dict[int, torch.Tensor]) -> torch.Tensor:
        """The generated image at the stage's resolution, before the face is pasted back."""
        top = self.stage
        fading = self.is_fading(top != self.sizes[0])
        x = self.from_rgb[str(top)](torch.cat([masked[top], mask[top]], dim=1))
        skips = {}
        for r in reversed(self.sizes[1:]):
            skips[r] = x
            x = self.down[str(r)](x)
            if fading and r == top:
                x = self.blend(x, self.from_rgb[str(r // 2)](torch.cat([masked[r // 2], mask[r // 2]], dim=1)))
        y = self.core_up(torch.cat([_upsample(self.core(self.core_down(x))), x], dim=1))
        previous_rgb = None
        for r in self.sizes[1:]:
            if fading and r == top:
                previous_rgb = _upsample(self.to_rgb[str(r // 2)](y))
            y = self.up[str(r)](torch.cat([_upsample(y), skips[r]], dim=1))
        rgb = self.to_rgb[str(top)](y)
        return torch.tanh(self.blend(rgb, previous_rgb) if fading else rgb)

    def forward(self, masked: dict[int, torch.Tensor], mask: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        top = self.stage
        return {top: paste_face(self.image(masked, mask), masked[top], mask[top])}


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")
