"""The model factory: the generator and critic of one stage, built from params (training) or from
a checkpoint's recorded arguments (inference, serving, evaluation), and the stage it starts from."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from facectx.models.cascade import CascadeGenerator, ModelArgs, PatchDiscriminator
from facectx.models.progan import ProgressiveGenerator

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
    return GENERATORS.get(args.kind, CascadeGenerator)(args, stage)


def build_critic(args: ModelArgs, stage: int) -> PatchDiscriminator:
    """The stage's critic: the PatchGAN critic (one per stage, fresh), with args.disc_scales
    scales where the stage is large enough for them."""
    critic = PatchDiscriminator(stage, args)
    built = 1 + len(critic.coarser)
    if built < args.disc_scales:
        log.info("stage %d: %d of model.disc_scales=%d critic scales (none below 8 px)", stage, built, args.disc_scales)
    return critic


def previous_stage(stages: tuple[int, ...], stage: int) -> int | None:
    """The stage of train.stages that `stage` starts from; None for the first."""
    stages = list(stages)
    if stage not in stages:
        raise ValueError(f"stage {stage} is not among train.stages {stages}")
    i = stages.index(stage)
    return stages[i - 1] if i > 0 else None
