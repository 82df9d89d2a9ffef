"""The generator's exponential moving average (train.ema_decay), kept by the trainer beside the
live weights: ema <- decay * ema + (1 - decay) * live after every optimizer step (ProGAN,
StyleGAN: the averaged weights are what gets scored; they carry less of the last steps' noise).

The update is two foreach ops on device tensors (a lerp of the parameters, a copy of the buffers),
with no host reads: it runs inside the training step, so a recorded CUDA graph replays it too,
and on every rank under DDP (all ranks hold the same weights; rank 0's average is saved).

Buffers (batch-norm running statistics, ProGAN's fade-in alpha) are copied from the live model,
not averaged: running statistics describe the activations of the live weights, and averaging them
would describe neither model. What the averaged weights' own batch-norm statistics are is
re-estimated once after the stage (training/standing.py), which is what `ema` weights use.
"""

from __future__ import annotations

import torch
from torch import nn

from facectx.checkpoint import EMA, CheckpointError
from facectx.models.cascade import ModelArgs
from facectx.models.factory import build_generator


class GeneratorAverage:
    """The moving average of `live`'s parameters as a module of its own (`model`: same class and
    stage, never trained, in eval mode), starting equal to `live` — or, for the tensors a stage
    inherits, to the previous stage's average (`start`)."""

    def __init__(
        self,
        live: nn.Module,  # the generator being trained (plain, or with cross-process batch norm)
        fresh: nn.Module,  # a plain generator of the same kind and stage (build_generator): becomes the average
        decay: float,  # train.ema_decay, in (0, 1)
        start: dict[str, torch.Tensor] | None = None,  # the previous stage's average (inherited tensors)
    ):
        self.decay = decay
        self.model = fresh.requires_grad_(False).eval()
        live_params, live_buffers = dict(live.named_parameters()), dict(live.named_buffers())
        own_params, own_buffers = dict(self.model.named_parameters()), dict(self.model.named_buffers())
        if own_params.keys() != live_params.keys() or own_buffers.keys() != live_buffers.keys():
            raise ValueError("the generator's average must be a model of the same kind and stage")
        with torch.no_grad():
            for name, tensor in [*own_params.items(), *own_buffers.items()]:
                # A clone keeps the live tensor's device and memory format (channels_last on CUDA).
                tensor.data = (live_params.get(name, live_buffers.get(name))).detach().clone()
            for name, value in (start or {}).items():
                if name in own_params:  # buffers follow the live model from the first update on
                    own_params[name].copy_(value)
        names = list(own_params)
        self.params, self.live_params = [own_params[n] for n in names], [live_params[n] for n in names]
        buffers = list(own_buffers)
        self.buffers, self.live_buffers = [own_buffers[n] for n in buffers], [live_buffers[n] for n in buffers]

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average += (1 - decay) * (live - average), buffers copied."""
        torch._foreach_lerp_(self.params, self.live_params, 1.0 - self.decay)
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.live_buffers)


def inherited_average(states: dict[str, dict[str, torch.Tensor]], own: nn.Module, where) -> dict | None:
    """The previous stage's average of the generator (its checkpoint's `generator_ema`) where it
    has one; None when it was trained without (the average then starts from the live weights)."""
    inherited = states.get(EMA)
    if inherited is None:
        return None
    unknown = sorted(set(inherited) - set(own.state_dict()))
    if unknown:
        raise CheckpointError(f"{where}: {EMA} tensors {unknown[:5]} do not exist in this stage's model")
    return inherited


def plain_copy(model: nn.Module, args: ModelArgs, stage: int, device: torch.device) -> nn.Module:
    """A generator of `model`'s kind and stage holding its state, with batch norm of this process
    alone (whatever `model` computes its statistics over), built without drawing from the run's
    seeded random generators (the copy's initial values are overwritten anyway)."""
    with torch.random.fork_rng(devices=[]):
        copy = build_generator(args, stage)
    copy.load_state_dict(model.state_dict())
    return copy.to(device)


def make_average(
    live: nn.Module, args: ModelArgs, stage: int, decay: float, previous: dict, where
) -> GeneratorAverage | None:
    """The live generator's average when train.ema_decay asks for one (None for 0): it starts from
    the previous stage's average for the tensors the stage inherits (`previous`: that stage's
    checkpoint states; empty for a first stage), from the live weights for the rest."""
    if not decay:
        return None
    fresh = plain_copy(live, args, stage, next(live.parameters()).device)
    return GeneratorAverage(live, fresh, decay, inherited_average(previous, fresh, where))
