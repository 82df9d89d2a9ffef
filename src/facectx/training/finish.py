"""The end of a stage: rank 0 settles the weight choices (standing statistics for the live and
averaged weights, their validation and eval/train gaps: training/standing.py), writes the
checkpoint with every choice and metrics.json, and clears the resume state; every rank returns
rank 0's numbers."""

from __future__ import annotations

import math
import shutil

import torch

from facectx.checkpoint import EMA_CHOICE, RUNNING_CHOICE
from facectx.training import distributed
from facectx.training.averaging import plain_copy
from facectx.training.report import StageResult
from facectx.training.standing import SettledWeights, settle_weights, standing_rows


def finish_stage(trainer, val: dict[str, float], train_seconds: float, images: int, capped: bool) -> StageResult:
    """`trainer`: the StageTrainer that has trained (loop.py); val: its last validation."""
    rate = images / train_seconds if train_seconds > 0 else math.nan
    if trainer.dist.main:
        val = {**val, **_write_results(trainer, val, train_seconds, rate, capped)}
    # Rank 0's numbers on every rank; a collective, so no rank returns (and starts the next
    # stage from this one's checkpoint) before rank 0 has written it.
    val, train_seconds, rate = distributed.from_main((val, train_seconds, rate))
    return StageResult(trainer.stage, trainer.out_dir / "checkpoint", trainer.step, train_seconds, rate, val, capped)


def _write_results(trainer, val: dict[str, float], train_seconds: float, rate: float, capped: bool) -> dict:
    """The checkpoint (every weight choice) and metrics.json; returns the other weight choices'
    validation metrics and every choice's eval/train gap."""
    at, planned, settled = trainer.position(), trainer.total_steps, settle_trainer_weights(trainer)
    # val_*: the live weights with running statistics, as every epoch's validation.
    extra = dict(val=val, images_per_second=rate, capped=capped, planned_steps=planned)
    extra.update(weights=settled.available, val_weights=RUNNING_CHOICE)
    trainer.state.save_final(trainer.out_dir / "checkpoint", at, settled.states, **extra)
    graphed = trainer.graphed
    graphs = graphed is not None and graphed.graph is not None  # replayed at the end
    trainer.report.results(
        trainer.out_dir, at.step, planned, capped, train_seconds, rate, graphs, trainer.graph_failure, val, settled
    )
    shutil.rmtree(trainer.resume_dir, ignore_errors=True)
    return settled.metrics


def settle_trainer_weights(trainer) -> SettledWeights:
    """Standing statistics for the trainer's live and averaged weights on
    train.standing_stats_batches of its training batches, each weight choice's validation and
    eval/train gap (on its validation rows)."""
    t, stage, device = trainer.train, trainer.stage, trainer.device
    rows = standing_rows(
        trainer.train_data.rows, t.seed, stage, trainer.epochs, t.standing_stats_batches, trainer.batch_size
    )
    models = {RUNNING_CHOICE: trainer.generator}
    if trainer.average is not None:
        models[EMA_CHOICE] = trainer.average.model
    return settle_weights(
        models,
        lambda model: plain_copy(model, trainer.model_args, stage, device),
        trainer.train_data,
        trainer.val_data,
        rows,
        lambda model: trainer.score(model)[0],
        stage=stage,
        batch_size=trainer.batch_size,
        earlier_blocks=t.earlier_blocks,
        autocast=dict(device_type=device.type, dtype=torch.bfloat16, enabled=trainer.autocast, cache_enabled=False),
    )
