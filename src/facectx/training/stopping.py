"""When a stage's training stops early: a loss that became NaN or infinite (an error), or the
wall-clock cap (a clean stop). Over several processes every rank decides the same, so no rank is
left waiting in a collective the others never reach."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from facectx.training import distributed
from facectx.training.state import resume_step


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


def past_deadline(main: bool, deadline: float | None, step: int, total_steps: int, clock: Callable[[], float]) -> bool:
    """Checked on the host clock after each step, without a sync: the host runs ahead of the GPU
    by about a step (its launch queue is bounded), so the cap overshoots by that much. Over
    several processes rank 0's clock decides for all (a host-side broadcast each step), so
    every rank stops after the same step. `clock`: the trainer's time.monotonic, read only when
    the other conditions hold."""
    past = main and deadline is not None and step < total_steps and clock() > deadline
    return distributed.decided_by_main(past)


def check_finite(finite: torch.Tensor, stage: int, step: int, resume_dir: Path, resume_checkpoints: bool) -> None:
    """Raise NonFiniteLoss, naming the last good checkpoint, unless every loss so far was finite."""
    # Every rank raises or none does (a rank left alone would wait in its next collective).
    if not distributed.all_true(bool(finite)):
        kept = resume_step(resume_dir) if resume_checkpoints else None
        last = f"Last good checkpoint: {resume_dir} (step {kept})." if kept is not None else None
        raise NonFiniteLoss(
            f"stage {stage}: a loss became NaN or infinite by step {step}; training stopped. "
            f"{last or 'No checkpoint was written yet.'} Lower train.lr or the loss weights."
        )
