"""Checkpoints that explain themselves: safetensors weights, optimizer state (torch, loaded with
weights_only=True) and a JSON file of metadata — stage, model arguments, step, config hash, git
commit, data version and the sha256 of each file, so corruption and mismatches are caught.

A checkpoint is a folder; meta.json is written last, and every file atomically, so a kill at any
moment leaves either the previous complete checkpoint or the new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from facectx.data.shards import data_version
from facectx.io_utils import atomic_path, sha256_file, write_json

if TYPE_CHECKING:
    from facectx.config import Params

WEIGHTS, OPTIMIZER, META = "model.safetensors", "optimizer.pt", "meta.json"

# The generator's weights a checkpoint may hold beside the live ones ("generator"): their moving
# average (train.ema_decay), and the batch-norm statistics re-estimated after the stage for each
# (train.standing_stats_batches; batch-norm buffers only).
GENERATOR, EMA, STANDING, EMA_STANDING = "generator", "generator_ema", "generator_standing", "generator_ema_standing"
RUNNING_CHOICE, STANDING_CHOICE, EMA_CHOICE, AUTO_CHOICE = "running", "standing", "ema", "auto"

# Settings that do not change the weights a run produces (where and how fast it runs, how often it reports).
_RUNTIME_ONLY = (
    "device",
    "precision",
    "channels_last",
    "compile",
    "compile_mode",
    "cuda_graphs",
    "log_every_steps",
    "grad_norm_every_steps",
    "checkpoint_every_steps",
    "resume_checkpoints",
    "val_rows",
    "grid_rows",
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or from another configuration."""


def config_hash(settings: dict) -> str:
    """Stable hash of the settings that shape the weights (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_settings(params: Params) -> dict:
    """The settings whose change makes a checkpoint incompatible (hashed into every checkpoint)."""
    train = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in _RUNTIME_ONLY}
    return {
        "model": dataclasses.asdict(params.model),
        "losses": dataclasses.asdict(params.losses),
        "train": train,
        "resolutions": list(params.prepare.resolutions),
    }


@dataclasses.dataclass(frozen=True)
class TrainingIdentity:
    """What a training run's checkpoints record of the run that made them: the settings that
    shape the weights, their hash, and the prepared data's version. Worked out once per run
    (`training_identity`) and handed to each stage's trainer."""

    settings: dict
    config_hash: str
    data_version: str


def training_identity(params: Params, prepared_dir: str | os.PathLike) -> TrainingIdentity:
    settings = training_settings(params)
    return TrainingIdentity(settings, config_hash(settings), data_version(prepared_dir))


def git_commit(cwd: str | os.PathLike = ".") -> str | None:
    """The code's commit: FACECTX_GIT_COMMIT where the code has no .git (the container image
    bakes it in at build time), else `git rev-parse HEAD`."""
    if os.environ.get("FACECTX_GIT_COMMIT"):
        return os.environ["FACECTX_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(
    folder: str | os.PathLike,
    modules: dict[str, torch.nn.Module | dict[str, torch.Tensor]],  # modules, or state dicts of part of one
    optimizers: dict[str, torch.optim.Optimizer] | None,
    meta: dict,
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    states = {name: m.state_dict() if isinstance(m, torch.nn.Module) else m for name, m in modules.items()}
    tensors = {
        f"{name}.{key}": value.detach().contiguous().cpu()
        for name, state in states.items()
        for key, value in state.items()
    }
    # Old meta first: a reader that finds files newer than meta.json's checksums sees a mismatch.
    (folder / META).unlink(missing_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    files = {WEIGHTS: sha256_file(folder / WEIGHTS)}
    if optimizers is not None:
        with atomic_path(folder / OPTIMIZER) as tmp:
            torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, tmp)
        files[OPTIMIZER] = sha256_file(folder / OPTIMIZER)
    write_json(folder / META, {**meta, "files": files})
    return folder


def read_meta(folder: str | os.PathLike) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {folder} ({META} missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"corrupt checkpoint {folder}: {META} is not valid JSON ({err})") from err


def load_checkpoint(
    folder: str | os.PathLike, expected_config_hash: str | None = None, with_optimizer: bool = False
) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict | None]:
    """Return (meta, {module name: state dict}, optimizer states or None), verifying checksums
    and, when given, that the checkpoint was made with the same configuration."""
    folder = Path(folder)
    meta = read_meta(folder)
    for name, digest in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"corrupt checkpoint {folder}: {name} is missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"corrupt checkpoint {folder}: {name} does not match its checksum in {META}")
    if expected_config_hash is not None and meta.get("config_hash") != expected_config_hash:
        raise CheckpointError(
            f"checkpoint {folder} was made with config {meta.get('config_hash')}, but the current config is "
            f"{expected_config_hash}: model, loss or training settings changed (checkpoint settings: "
            f"{json.dumps(meta.get('settings', {}), sort_keys=True)})"
        )
    try:
        flat = load_file(str(folder / WEIGHTS))
    except Exception as err:
        raise CheckpointError(f"corrupt checkpoint {folder}: cannot read {WEIGHTS} ({err})") from err
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        module, _, param = key.partition(".")
        states.setdefault(module, {})[param] = value
    optimizer = None
    if with_optimizer and OPTIMIZER in meta.get("files", {}):
        optimizer = torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True)
    return meta, states, optimizer


def available_weights(meta: dict, states: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """The weight choices a checkpoint offers, best last: running always; standing and ema when
    the stage made them (meta.json's `weights`; a generator without batch norm has no statistics
    to store, yet its standing weights are its running ones)."""
    held = {RUNNING_CHOICE, *(c for c, key in ((STANDING_CHOICE, STANDING), (EMA_CHOICE, EMA)) if key in states)}
    made = set(meta.get("weights") or ()) | held
    return [c for c in (RUNNING_CHOICE, STANDING_CHOICE, EMA_CHOICE) if c in made]


def resolve_weights(choice: str, meta: dict, states: dict[str, dict[str, torch.Tensor]], where) -> str:
    """`choice` (auto, running, standing or ema) -> the one the checkpoint offers; auto is the best
    it holds (ema, else standing, else running). A choice it lacks is an error naming the
    checkpoint `where`, what it holds, and the setting that would have made it."""
    available = available_weights(meta, states)
    if choice == AUTO_CHOICE:
        return available[-1]
    if choice not in available:
        made_by = {STANDING_CHOICE: "train.standing_stats_batches > 0", EMA_CHOICE: "train.ema_decay > 0"}
        why = f" (a stage trained with {made_by[choice]} keeps them)" if choice in made_by else ""
        raise CheckpointError(
            f"checkpoint {where} has no {choice!r} weights{why}: it holds {available}; choose one of those, or auto"
        )
    return choice


def generator_state(states: dict[str, dict[str, torch.Tensor]], choice: str) -> dict[str, torch.Tensor]:
    """The generator's state dict for a resolved weight choice: the live weights with their running
    statistics, with the standing statistics, or the EMA weights with theirs (with the live
    model's running statistics when the stage kept no standing ones)."""
    if choice == STANDING_CHOICE:
        return {**states[GENERATOR], **states.get(STANDING, {})}
    if choice == EMA_CHOICE:
        return {**states[EMA], **states.get(EMA_STANDING, {})}
    return states[GENERATOR]
