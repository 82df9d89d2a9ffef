"""The folder options several commands share, each defined once (name, default, help) and given
to a command as parent parsers: `parents=folders("--raw-dir", ...)`."""

from __future__ import annotations

import argparse

from facectx import layout
from facectx.layout import CASCADE, PREPARED_DIR, PROJECT, RAW_DIR, VALIDATED_DIR

FOLDER_OPTIONS = {
    "--raw-dir": {
        "default": RAW_DIR,
        "help": "the raw area: photos, manifest, and the LFW pairs that calibrate "
        "the verification threshold (default: %(default)s)",
    },
    "--validated-dir": {
        "default": VALIDATED_DIR,
        "help": "validate's output: the valid photos' records and landmarks (default: %(default)s)",
    },
    "--prepared-dir": {"default": PREPARED_DIR, "help": "prepare's shards (default: %(default)s)"},
    "--models-dir": {"default": str(PROJECT.cascade), "help": "the cascade's folder (default: %(default)s)"},
}


def folders(*options: str) -> list[argparse.ArgumentParser]:
    """A parent parser for each named FOLDER_OPTIONS entry, in order."""
    parents = []
    for option in options:
        parents.append(argparse.ArgumentParser(add_help=False))
        parents[-1].add_argument(option, **FOLDER_OPTIONS[option])
    return parents


def training_folders() -> argparse.ArgumentParser:
    """The folders of train and train-stage: prepared data, this model's folder, its resume state,
    and the MLflow run's name."""
    training = argparse.ArgumentParser(add_help=False, parents=folders("--prepared-dir"))
    training.add_argument(
        "--models-dir", help=f"this model's folder (default: {PROJECT.cascade}, or {PROJECT.variants}/VARIANT)"
    )
    training.add_argument("--resume-dir", help=f"resume state (default: {PROJECT.resume_root(CASCADE)} or VARIANT)")
    training.add_argument(
        "--resume-uri",
        help="also keep the resume state at s3://bucket/prefix (one stage: that prefix; "
        "train: PREFIX/stage_N), so a run on another machine continues it",
    )
    training.add_argument("--run-name", help="names the MLflow pipeline run (default: the variant, else cascade)")
    return training


def last_checkpoint(args, params) -> str:
    """The finished checkpoint under --models-dir (the cascade's, by default)."""
    return str(layout.final_checkpoint(args.models_dir, params.train.stages))
