"""ProGAN's critic (Karras et al. 2018), conditioned as the cascade's: it sees the masked face
beside a full image (6 channels) and grows and fades with the generator.

At stage S: from-RGB at S (1x1), then per resolution from S down to 8 ProGAN's block (two 3x3
convs, 2x average pooling), then the final block at 4x4: the minibatch-stddev feature, a 3x3
conv, a 4x4 conv to 1x1 and a linear layer to one score per image. Equalized learning rate in
every layer, leaky ReLU 0.2, no normalisation (ProGAN's critic has none). While the newest level
fades in, its path is blended with the previous from-RGB on the inputs average-pooled to S/2, so
at alpha 0 the grown critic scores what the previous stage's critic scored on the pooled inputs.
Its weights grow from the previous stage's checkpoint (`inherits_previous_stage`).

It returns the critic interface's list of scales (one here), each the block outputs in order
with the score map (B, 1, 1, 1) last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facectx.models.cascade import ModelArgs
from facectx.models.equalized import EqualizedConv2d, FadesIn, conv_lrelu, minibatch_stddev
from facectx.models.progan import from_rgb, level_channels

FINAL_SIZE = 4  # ProGAN's last critic block works at 4x4


class ProgressiveCritic(FadesIn):
    def __init__(self, args: ModelArgs, stage: int):
        super().__init__()
        self.stage = stage
        self.sizes = [r for r in args.resolutions if r <= stage]

        def ch(r: int) -> int:
            return level_channels(r, args.disc_width, args)

        self.from_rgb = nn.ModuleDict({str(r): from_rgb(6, ch(r)) for r in self.sizes})
        # A block per resolution from the stage's down to 8 px, each pooling to the next.
        base = self.sizes[0]
        below = {base >> k for k in range(base.bit_length())}
        self.levels = sorted(r for r in {*self.sizes, *below} if r > FINAL_SIZE)
        self.blocks = nn.ModuleDict(
            {
                str(r): nn.Sequential(conv_lrelu(ch(r), ch(r)), conv_lrelu(ch(r), ch(r // 2)), nn.AvgPool2d(2))
                for r in self.levels
            }
        )
        c = ch(FINAL_SIZE)
        self.final = nn.Sequential(
            conv_lrelu(c + 1, c),  # + the minibatch-stddev channel
            EqualizedConv2d(c, c, FINAL_SIZE),  # unpadded, 4x4 -> 1x1: ProGAN's dense layer on the flattened 4x4 map
            nn.LeakyReLU(0.2),
        )
        self.score = EqualizedConv2d(c, 1, 1, gain=1.0)  # ProGAN's linear output layer, on the 1x1 map

    def forward(self, masked: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        top = self.stage
        fading = self.is_fading(top != self.sizes[0])
        pair = torch.cat([masked, image], dim=1)
        x = self.from_rgb[str(top)](pair)
        features = []
        for r in reversed(self.levels):
            x = self.blocks[str(r)](x)
            if fading and r == top:
                x = self.blend(x, self.from_rgb[str(r // 2)](F.avg_pool2d(pair, 2)))
            features.append(x)
        x = self.final(minibatch_stddev(x))
        features.append(x)
        return [[*features, self.score(x)]]
