"""The pipeline steps, one function each: the CLI (and so DVC) and the Kubeflow components call
these, so both orchestrators run the same code."""
from __future__ import annotations

import dataclasses
import os

from facectx.config import Params


def ingest_step(params: Params, raw_dir: str | os.PathLike, source: str | None = None) -> dict:
    from facectx.data.ingest import ingest

    config = dataclasses.replace(params.ingest, source=source) if source else params.ingest
    return ingest(config, raw_dir)


def validate_step(params: Params, raw_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    from facectx.data.validate import validate

    return validate(raw_dir, out_dir, params.validate, params.crop, params.landmarks)


def prepare_step(params: Params, raw_dir: str | os.PathLike, validated_dir: str | os.PathLike,
                 out_dir: str | os.PathLike) -> dict:
    from facectx.data.prepare import prepare

    return prepare(raw_dir, validated_dir, out_dir, params.prepare, params.crop, params.validate)


def train_stage_step(params: Params, stage: int, prepared_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     init_dir: str | os.PathLike | None, resume_dir: str | os.PathLike, run_name: str = "cascade") -> dict:
    """Train one stage, starting from init_dir (the previous stage's checkpoint folder); writes
    out_dir/checkpoint and out_dir/metrics.json; tracked in MLflow under the pipeline run."""
    from pathlib import Path

    from facectx import tracking
    from facectx.training.checkpoint import config_hash
    from facectx.training.data import data_version
    from facectx.training.loop import StageTrainer, training_settings

    settings = training_settings(params)
    key = tracking.pipeline_key(f"{run_name}-{config_hash(settings)}-{data_version(prepared_dir)}")
    with tracking.stage_run(key, f"{run_name}/stage_{stage}", settings, tags={"facectx.model": params.model.kind}) as tracker:
        trainer = StageTrainer(params, stage, Path(prepared_dir), Path(out_dir), Path(init_dir) if init_dir else None,
                               Path(resume_dir), tracker)
        result = trainer.run()
    return {"stage": result.stage, "steps": result.steps, "images_per_second": result.images_per_second, **result.val}


def stage_dirs(params: Params, stage: int, models_dir: str | os.PathLike) -> dict:
    """The conventional layout under models_dir (what dvc.yaml declares): out, init and resume folders."""
    from pathlib import Path

    from facectx.training.loop import previous_stage

    models_dir = Path(models_dir)
    previous = previous_stage(params, stage)
    return {"out_dir": models_dir / f"stage_{stage}",
            "init_dir": models_dir / f"stage_{previous}" / "checkpoint" if previous else None,
            "resume_dir": models_dir / "resume" / f"stage_{stage}"}
