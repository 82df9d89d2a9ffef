"""The model factory: the generator and critic of one stage, built from params (training) or from
a checkpoint's recorded arguments (inference, serving, evaluation), and the stage it starts from.
The one place that picks the classes by model kind."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from facectx.models.cascade import CascadeGenerator, ModelArgs, PatchDiscriminator
from facectx.models.progan import ProgressiveGenerator
from facectx.models.progan_critic import ProgressiveCritic

if TYPE_CHECKING:
    from facectx.config import Params

log = logging.getLogger(__name__)


def model_args(params: Params) -> ModelArgs:
    m = params.model
    return ModelArgs(
        kind=m.kind,
        resolutions=tuple(params.prepare.resolutions),
        width=m.width,
        max_width=m.max_width,
        disc_width=m.disc_width,
        disc_max_layers=m.disc_max_layers,
        disc_blur=m.disc_blur,
        disc_scales=m.disc_scales,
    )


def model_args_from_meta(recorded: dict) -> ModelArgs:
    """The ModelArgs a checkpoint's meta.json records (`model_args`; JSON turns tuples into lists)."""
    return ModelArgs(**{**recorded, "resolutions": tuple(recorded["resolutions"])})


GENERATORS = {"cascade": CascadeGenerator, "progan": ProgressiveGenerator}


def build_generator(args: ModelArgs, stage: int) -> CascadeGenerator | ProgressiveGenerator:
    return GENERATORS[_known_kind(args)](args, stage)


def build_critic(args: ModelArgs, stage: int) -> nn.Module:
    """The stage's critic: `critic(masked, image)` -> one list per scale of its activations, the
    score map last; `inherits_previous_stage` (the cascade's is fresh per stage, ProGAN's grows
    from the previous stage's) and `set_step` (ProGAN's fades its new level in with the generator).
    The cascade's is the PatchGAN critic, with args.disc_scales scales where the stage is large
    enough for them."""
    if _known_kind(args) == "progan":
        return ProgressiveCritic(args, stage)
    critic = PatchDiscriminator(stage, args)
    built = 1 + len(critic.coarser)
    if built < args.disc_scales:
        log.info("stage %d: %d of model.disc_scales=%d critic scales (none below 8 px)", stage, built, args.disc_scales)
    return critic


def _known_kind(args: ModelArgs) -> str:
    if args.kind not in GENERATORS:
        raise ValueError(f"model kind {args.kind!r} is not one of {sorted(GENERATORS)}")
    return args.kind


def previous_stage(stages: tuple[int, ...], stage: int) -> int | None:
    """The stage of train.stages that `stage` starts from; None for the first."""
    stages = list(stages)
    if stage not in stages:
        raise ValueError(f"stage {stage} is not among train.stages {stages}")
    i = stages.index(stage)
    return stages[i - 1] if i > 0 else None
