"""What a stage's training keeps between runs and between calls: torch's process-wide state (the
seeded random generators, deterministic algorithms) in its own scope, the previous stage's
weights it starts from, and the resume state (weights, optimizer state, position) that lets a
killed run continue where it stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from facectx.checkpoint import (
    META,
    CheckpointError,
    TrainingIdentity,
    git_commit,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from facectx.models.cascade import ModelArgs

log = logging.getLogger(__name__)


def _seed(seed: int, cuda: bool) -> None:
    """torch.manual_seed's CPU seeding (and its CUDA seeding when training there), leaving any
    other device's generator alone."""
    torch.default_generator.manual_seed(seed)
    if cuda:
        torch.cuda.manual_seed_all(seed)


def _rng_states(cuda: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None


def _set_rng_states(states: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class TorchScope:
    """Torch's process-wide state as a run needs it while it builds or trains, and the caller's
    again afterwards: deterministic algorithms when asked, and the random number generators (CPU,
    and CUDA when training there). The first scope seeds them with `seed`; each later one starts
    where the previous one left them, so the run draws the numbers one seeded generator would
    give, whatever the caller draws in between. Use: `with scope(): ...`."""

    def __init__(self, seed: int, deterministic: bool, cuda: bool):
        self.seed, self.deterministic, self.cuda = seed, deterministic, cuda
        self.states = None  # the run's generators between its scopes (None: not seeded yet)

    @contextlib.contextmanager
    def __call__(self):
        caller_rng = _rng_states(self.cuda)
        caller_deterministic = torch.are_deterministic_algorithms_enabled()
        caller_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            if self.deterministic:
                torch.use_deterministic_algorithms(True)
            if self.states is None:
                _seed(self.seed, self.cuda)
            else:
                _set_rng_states(self.states)
            yield
        finally:
            self.states = _rng_states(self.cuda)
            _set_rng_states(caller_rng)
            torch.use_deterministic_algorithms(caller_deterministic, warn_only=caller_warn_only)


def load_previous_stage(
    models: dict[str, torch.nn.Module], init_dir: Path | None, stage: int, previous: int, identity: TrainingIdentity
) -> dict[str, dict[str, torch.Tensor]]:
    """Stage `previous`'s weights (init_dir: its checkpoint) into each of this stage's models
    (by checkpoint name: "generator", "critic") whose class says it grows from the previous
    stage (`inherits_previous_stage`: both generators, ProGAN's critic; the cascade's critic
    starts fresh); the tensors of the levels new at this stage keep their initial values. Returns
    the checkpoint's states (the generator's average starts from its own: training/averaging.py)."""
    if init_dir is None or not (Path(init_dir) / META).is_file():
        raise CheckpointError(
            f"stage {stage} starts from stage {previous}'s checkpoint, but there is none at "
            f"{init_dir}: train stage {previous} first (facectx train-stage --stage {previous})"
        )
    meta, states, _ = load_checkpoint(init_dir, expected_config_hash=identity.config_hash)
    if meta.get("stage") != previous:
        raise CheckpointError(f"{init_dir} holds stage {meta.get('stage')}, expected stage {previous}")
    for name, model in models.items():
        if not model.inherits_previous_stage:
            continue
        if name not in states:
            raise CheckpointError(f"{init_dir} holds no {name} weights (it has {sorted(states)})")
        own, inherited = model.state_dict(), states[name]
        unknown = sorted(set(inherited) - set(own))
        if unknown:
            raise CheckpointError(f"{init_dir}: {name} tensors {unknown[:5]} do not exist in the stage-{stage} model")
        own.update(inherited)
        model.load_state_dict(own)
    return states


def resume_step(folder: Path) -> int | None:
    """The step of the resume state in `folder`; None when there is none."""
    return read_meta(folder).get("step") if (folder / META).is_file() else None


@dataclass
class Position:
    """Where training stands: the next step is batch `batch_in_epoch` of epoch `epoch`."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0  # steps done


@dataclass
class StageState:
    """A stage's models and optimizers as checkpoints hold them, what the checkpoints record, and
    where the resume state lives (written by rank 0 alone: `main`)."""

    stage: int
    args: ModelArgs
    identity: TrainingIdentity
    models: dict[str, torch.nn.Module]  # "generator", "critic", and "generator_ema" with train.ema_decay
    optimizers: dict[str, torch.optim.Optimizer]  # the same keys
    resume_dir: Path
    main: bool
    on_resume_saved: Callable[[Path], None] | None = None  # after each resume save (e.g. a copy to S3)

    def meta(self, at: Position, **extra) -> dict:
        return {
            "stage": self.stage,
            "model_args": dataclasses.asdict(self.args),
            "step": at.step,
            "epoch": at.epoch,
            "batch_in_epoch": at.batch_in_epoch,
            "config_hash": self.identity.config_hash,
            "settings": self.identity.settings,
            "git_commit": git_commit(),
            "data_version": self.identity.data_version,
            **extra,
        }

    def resume(self) -> Position:
        """The resume state loaded, when there is one of these settings and data; where to go on
        from (the start when there is none)."""
        folder, identity = self.resume_dir, self.identity
        if not (folder / META).is_file():
            return Position()
        meta = read_meta(folder)
        if (
            meta.get("config_hash") != identity.config_hash
            or meta.get("stage") != self.stage
            or meta.get("data_version") != identity.data_version
        ):
            log.warning("ignoring resume state in %s: it belongs to other settings or data", folder)
            return Position()
        _, states, optimizers = load_checkpoint(folder, identity.config_hash, with_optimizer=True)
        for name, model in self.models.items():
            model.load_state_dict(states[name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(optimizers[name])
        at = Position(meta["epoch"], meta["batch_in_epoch"], meta["step"])
        log.info("stage %d: resuming at epoch %d, batch %d (step %d)", self.stage, at.epoch, at.batch_in_epoch, at.step)
        return at

    def save_resume_state(self, at: Position) -> None:
        if not self.main:
            return
        save_checkpoint(self.resume_dir, self.models, self.optimizers, self.meta(at))
        if self.on_resume_saved is not None:
            self.on_resume_saved(self.resume_dir)

    def save_final(self, folder: Path, at: Position, states: dict | None = None, **extra) -> None:
        """The stage's checkpoint (weights and meta, no optimizer state), replacing any earlier one;
        states: further entries by name (state dicts: the standing statistics)."""
        if folder.exists():
            shutil.rmtree(folder)
        save_checkpoint(folder, {**self.models, **(states or {})}, None, self.meta(at, **extra))
