"""A training stage's progress: steps done of the stage's total, steps/s and images/s, the latest
losses (set at each loss report) and the time left; on rank 0 only under DDP (the other ranks
train the same steps)."""

from __future__ import annotations

from facectx.progress import LOG_LINES, QUIET, Progress


def stage_progress(trainer) -> Progress:
    """The Progress of `trainer`'s stage (a StageTrainer), counting from the step it resumes at."""
    style = (trainer.progress_style or LOG_LINES) if trainer.dist.main else QUIET
    return Progress(
        trainer.total_steps,
        f"train stage {trainer.stage}px",
        "step",
        style,
        per_unit=("images", trainer.batch_size),
        already=trainer.step,
    )
