"""The params a run on the far machine uses: the pack's, with that machine's paths (run folders
for tracking, the packed weights) and the visit's choices (profile, seed, how models are scored)."""

from __future__ import annotations

from pathlib import Path

import yaml

from facectx.airgap.format import PackError
from facectx.checkpoint import AUTO_CHOICE, EMA_CHOICE
from facectx.config import load_params
from facectx.io_utils import atomic_path
from facectx.layout import CASCADE

# The EMA decay a visit gives a model trained without one when it is to be scored with EMA
# weights too: an EMA changes no training step (the live weights are the same), it adds a copy.
VISIT_EMA_DECAY = 0.999


def far_params(
    pack: Path,
    work: Path,
    profile: str | None,
    resume_checkpoints: bool,
    seed: int | None = None,
    score_ways: tuple[str, ...] = (),
) -> Path:
    """The pack's params with this machine's paths: tracking into run folders, the packed weights;
    `seed` replaces train.seed (a second run of the same model, to read differences against);
    score_ways (e.g. running, standing, ema): each model is scored with each of these weights
    besides its own row (evaluate.weights), and keeps an EMA when ema is among them."""
    raw = yaml.safe_load((pack / "params.yaml").read_text())
    if profile:
        raw["profile"] = profile
    if seed is not None:
        raw["train"]["seed"] = seed
    if score_ways:
        raw["evaluate"]["weights"] = [AUTO_CHOICE, *score_ways]
        if EMA_CHOICE in score_ways and not raw["train"].get("ema_decay"):
            raw["train"]["ema_decay"] = VISIT_EMA_DECAY
    raw["tracking"].update(backend="folder", folder=str(work / "runs"))  # the experiment stays the pack's
    raw["assets"] = {
        "identity_weights": str((pack / "weights" / "face-api").resolve()),
        "matcher_weights": str((pack / "weights" / "faceres").resolve()),
    }
    raw["train"]["resume_checkpoints"] = resume_checkpoints  # a visit is too short to resume: no optimizer dumps
    path = work / "params.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def check_models(params_file: Path, models: list[str]) -> None:
    params = load_params(params_file)
    unknown = [m for m in models if m != CASCADE and m not in params.variants]
    if unknown or not models:
        raise PackError(
            f"--models {unknown or models}: each model must be {CASCADE!r} or one of the pack's variants "
            f"{sorted(params.variants)}"
        )
