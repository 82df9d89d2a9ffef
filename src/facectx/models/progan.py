"""The paper's comparison variant: one generator grown progressively 8 -> 128 (Karras et al. 2018).

At stage S the generator holds a level per resolution up to S around a U-Net core at 8x8:
from-RGB at S, strided convolutions down to 8, the core, transposed convolutions back up (each
merged with the encoder features of the same size), to-RGB at S. The newest level fades in: for
alpha < 1 its from-RGB/to-RGB paths are blended with the previous stage's, as in ProGAN.
Same inputs, outputs, critics and losses as the cascade, so the comparison isolates the design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facectx.models.cascade import ModelArgs, UNet, nearest_conv_init_, paste_face


def level_channels(size: int, args: ModelArgs) -> int:
    return min(args.max_width, args.width * (max(args.resolutions) // size))


class ProgressiveGenerator(nn.Module):
    def __init__(self, args: ModelArgs, stage: int):
        super().__init__()
        self.args, self.stage = args, stage
        self.sizes = [r for r in args.resolutions if r <= stage]
        base = self.sizes[0]
        self.from_rgb = nn.ModuleDict({str(r): nn.Conv2d(4, level_channels(r, args), 1) for r in self.sizes})
        self.to_rgb = nn.ModuleDict({str(r): nn.Conv2d(level_channels(r, args), 3, 1) for r in self.sizes})
        self.core = UNet(
            level_channels(base, args), level_channels(base, args), base, args.width, args.max_width, image_head=False
        )
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        self.merge = nn.ModuleDict()
        for r in self.sizes[1:]:
            high, low = level_channels(r, args), level_channels(r // 2, args)
            self.down[str(r)] = nn.Sequential(
                nn.Conv2d(high, low, 4, 2, 1, bias=False), nn.BatchNorm2d(low), nn.LeakyReLU(0.2, True)
            )
            # Starts as nearest upsampling + conv, as in the cascade: no checkerboard at init.
            self.up[str(r)] = nn.Sequential(
                nearest_conv_init_(nn.ConvTranspose2d(low, high, 4, 2, 1, bias=False)),
                nn.BatchNorm2d(high),
                nn.ReLU(True),
            )
            self.merge[str(r)] = nn.Sequential(
                nn.Conv2d(2 * high, high, 3, 1, 1, bias=False), nn.BatchNorm2d(high), nn.ReLU(True)
            )
        self.register_buffer("alpha", torch.ones(()))  # fade-in of the newest level, set by the trainer
        # Whether alpha < 1, told by the trainer with alpha (`set_alpha`), so that a training step never
        # reads the tensor back (a sync, which a CUDA graph cannot record); None: read it.
        self.fading: bool | None = None

    # The previous level's RGB paths are computed once the new level has faded in, but unused:
    # DDP must look for unused parameters.
    find_unused_parameters = True

    def set_alpha(self, value: float) -> None:
        self.alpha.fill_(value)
        self.fading = value < 1.0

    def optimizer_groups(self, lr: float, earlier_blocks: str, finetune_lr_scale: float, grows: bool) -> list[dict]:
        """One generator, one group at lr: its levels are not trained separately (earlier_blocks
        and finetune_lr_scale concern the cascade's blocks)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def frozen_modules(self, earlier_blocks: str) -> list[nn.Module]:
        """Nothing is frozen: every level trains at every stage."""
        return []

    def set_step(self, step: int, total_steps: int, fade_in_fraction: float, grows: bool) -> None:
        """The fade-in of the newest level at this step: alpha rises linearly from 0 to 1 over the
        first fade_in_fraction of the stage's steps; 1 throughout when the stage does not grow
        from a previous one."""
        if not grows:
            self.set_alpha(1.0)
            return
        fade_steps = max(1, int(fade_in_fraction * total_steps))
        self.set_alpha(min(1.0, step / fade_steps))

    @property
    def step_variant(self) -> bool | None:
        """What tells one recorded CUDA graph of the step from another: fading or not."""
        return self.fading

    def forward(self, masked: dict[int, torch.Tensor], mask: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        top = self.stage
        inputs = {r: torch.cat([masked[r], mask[r]], dim=1) for r in self.sizes}
        fading = top != self.sizes[0] and (float(self.alpha) < 1.0 if self.fading is None else self.fading)
        x = self.from_rgb[str(top)](inputs[top])
        skips = {}
        for r in reversed(self.sizes[1:]):
            skips[r] = x
            x = self.down[str(r)](x)
            if fading and r == top:
                x = self.alpha * x + (1 - self.alpha) * self.from_rgb[str(r // 2)](inputs[r // 2])
        y = self.core(x)
        previous_rgb = None
        for r in self.sizes[1:]:
            if r == top:
                previous_rgb = torch.tanh(self.to_rgb[str(r // 2)](y))
            y = self.merge[str(r)](torch.cat([self.up[str(r)](y), skips[r]], dim=1))
        rgb = torch.tanh(self.to_rgb[str(top)](y))
        if fading:
            rgb = self.alpha * rgb + (1 - self.alpha) * F.interpolate(previous_rgb, scale_factor=2, mode="nearest")
        return {top: paste_face(rgb, masked[top], mask[top])}
