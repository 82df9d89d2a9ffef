"""The model factory: the generator of one stage, built from params (training) or from a
checkpoint's recorded arguments (inference, serving, evaluation), and the stage it starts from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from facectx.models.cascade import CascadeGenerator, ModelArgs
from facectx.models.progan import ProgressiveGenerator

if TYPE_CHECKING:
    from facectx.config import Params


def model_args(params: Params) -> ModelArgs:
    m = params.model
    return ModelArgs(
        kind=m.kind,
        resolutions=tuple(params.prepare.resolutions),
        width=m.width,
        max_width=m.max_width,
        disc_width=m.disc_width,
        disc_max_layers=m.disc_max_layers,
    )


def model_args_from_meta(recorded: dict) -> ModelArgs:
    """The ModelArgs a checkpoint's meta.json records (`model_args`; JSON turns tuples into lists)."""
    return ModelArgs(**{**recorded, "resolutions": tuple(recorded["resolutions"])})


GENERATORS = {"cascade": CascadeGenerator, "progan": ProgressiveGenerator}


def build_generator(args: ModelArgs, stage: int) -> CascadeGenerator | ProgressiveGenerator:
    return GENERATORS.get(args.kind, CascadeGenerator)(args, stage)


def previous_stage(stages: tuple[int, ...], stage: int) -> int | None:
    """The stage of train.stages that `stage` starts from; None for the first."""
    stages = list(stages)
    if stage not in stages:
        raise ValueError(f"stage {stage} is not among train.stages {stages}")
    i = stages.index(stage)
    return stages[i - 1] if i > 0 else None
