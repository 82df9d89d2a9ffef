"""What a stage's weights are once it has trained: the batch-norm statistics re-estimated for the
live and the averaged weights ("standing statistics"), their validation, and how far each
model's eval-mode output lies from its train-mode output.

Why: running statistics are an exponential average over the last training steps, taken while
the weights moved, so eval mode runs the weights with statistics of older weights (a CPU run of
the ProGAN variant: eval and train mode 0.054-0.058 apart, mean abs, most of it one colour cast
shared by every image). Re-estimated with the weights fixed, as a cumulative average over
train.standing_stats_batches training batches in train mode (momentum None), the statistics are
those of the weights that are scored. The averaged (EMA) weights never ran in train mode at all:
their standing statistics are the only ones that describe them.

The stage's checkpoint keeps the re-estimated buffers beside the weights (checkpoint.STANDING,
checkpoint.EMA_STANDING), so inference, serving and evaluation choose running, standing or ema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from facectx.checkpoint import EMA_CHOICE, EMA_STANDING, RUNNING_CHOICE, STANDING, STANDING_CHOICE
from facectx.training.batches import epoch_order
from facectx.training.data import ResidentShards

BATCH_NORM = nn.modules.batchnorm._BatchNorm


def standing_rows(rows: int, seed: int, stage: int, after_epoch: int, batches: int, batch_size: int) -> list:
    """Row indices of `batches` training batches: those of the epochs after the stage's last
    (ordered as every epoch is, from seed, stage and epoch), so they depend on nothing else."""
    found, epoch = [], after_epoch
    while len(found) < batches:
        order = epoch_order(rows, seed, stage, epoch)
        found += [order[i * batch_size : (i + 1) * batch_size] for i in range(rows // batch_size)]
        epoch += 1
    return found[:batches]


def _set_train_mode(model: nn.Module, earlier_blocks: str) -> None:
    """Train mode as the trainer sets it: frozen blocks keep their statistics (eval mode)."""
    model.train()
    for module in model.frozen_modules(earlier_blocks):
        module.eval()


@torch.no_grad()
def reestimate_batch_norm(
    model: nn.Module,
    data: ResidentShards,
    rows: list[torch.Tensor],  # one index tensor per batch
    earlier_blocks: str,  # train.earlier_blocks: frozen blocks are left as they are
    autocast: dict,  # torch.autocast's arguments of the training step's forward pass
) -> dict[str, torch.Tensor]:
    """`model`'s batch-norm statistics re-estimated in place on these batches (train mode, no
    gradient, the cumulative average of the batch statistics); returns the new buffers by
    state-dict key. The model is left in eval mode."""
    _set_train_mode(model, earlier_blocks)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, BATCH_NORM) and m.training}
    momenta = {}
    for name, layer in layers.items():
        layer.reset_running_stats()
        momenta[name], layer.momentum = layer.momentum, None  # None: a cumulative average
    for index in rows:
        batch = data.batch(index)
        with torch.autocast(**autocast):
            model(batch.masked, batch.mask)
    for name, layer in layers.items():
        layer.momentum = momenta[name]
    model.eval()
    return {f"{n}.{k}": b.detach().clone() for n, m in layers.items() for k, b in m.named_buffers(recurse=False)}


@torch.no_grad()
def eval_train_gap(
    model: nn.Module, data: ResidentShards, stage: int, batch_size: int, earlier_blocks: str, autocast: dict
) -> float:
    """Mean |eval-mode output - train-mode output| of the stage's image on every row of `data`
    (batches of batch_size): how far what is scored lies from what was trained. The train-mode
    pass runs on a copy, so the model's statistics stay as they are."""
    trained = copy.deepcopy(model)
    _set_train_mode(trained, earlier_blocks)
    model.eval()
    total, count = 0.0, 0
    for start in range(0, data.rows, batch_size):
        batch = data.batch(torch.arange(start, min(data.rows, start + batch_size)))
        with torch.autocast(**autocast):
            scored = model(batch.masked, batch.mask)[stage].float()
            as_trained = trained(batch.masked, batch.mask)[stage].float()
        total += float((scored - as_trained).abs().sum())
        count += scored.numel()
    return total / count


@dataclass
class SettledWeights:
    """The stage's weight choices once it has trained."""

    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # checkpoint entries beside the models
    metrics: dict[str, float] = field(default_factory=dict)  # <choice>_val_*, eval_train_gap_<choice>
    available: list[str] = field(default_factory=lambda: [RUNNING_CHOICE])  # the checkpoint's weight choices


def settle_weights(
    models: dict[str, nn.Module],  # "running": the live generator; "ema": its average, when kept
    copy_of: Callable[[nn.Module], nn.Module],  # a plain generator of the stage holding a model's state
    train_data: ResidentShards,
    val_data: ResidentShards,
    rows: list[torch.Tensor],  # the standing statistics' batches (standing_rows); none: not re-estimated
    score: Callable[[nn.Module], dict[str, float]],  # the stage's validation of a model (in eval mode)
    *,
    stage: int,
    batch_size: int,
    earlier_blocks: str,
    autocast: dict,
) -> SettledWeights:
    """Standing statistics for the live and averaged weights (on copies: the live model is left
    as it is), each choice's validation (running's is the trainer's own, per epoch) and every
    choice's eval/train gap on the validation rows."""
    settled = SettledWeights()
    choices = {RUNNING_CHOICE: copy_of(models[RUNNING_CHOICE])}
    if rows:
        choices[STANDING_CHOICE] = copy_of(models[RUNNING_CHOICE])
        keep = reestimate_batch_norm(choices[STANDING_CHOICE], train_data, rows, earlier_blocks, autocast)
        settled.states[STANDING] = keep
    if EMA_CHOICE in models:
        choices[EMA_CHOICE] = copy_of(models[EMA_CHOICE])
        if rows:
            keep = reestimate_batch_norm(choices[EMA_CHOICE], train_data, rows, earlier_blocks, autocast)
            settled.states[EMA_STANDING] = keep
    settled.available = list(choices)
    for choice, model in choices.items():
        model.eval()
        if choice != RUNNING_CHOICE:
            settled.metrics.update({f"{choice}_{key}": value for key, value in score(model).items()})
        gap = eval_train_gap(model, val_data, stage, batch_size, earlier_blocks, autocast)
        settled.metrics[f"eval_train_gap_{choice}"] = gap
    return settled
