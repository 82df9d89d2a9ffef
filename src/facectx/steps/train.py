"""train: one stage (train_stage_step, a Kubeflow step) or every stage of a model in order
(train_stages_step, a DVC stage), each tracked as an MLflow run under the pipeline run."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from facectx import layout, tracking
from facectx.checkpoint import TrainingIdentity, training_identity, training_settings
from facectx.config import Params
from facectx.io_utils import write_json
from facectx.models.factory import model_args, previous_stage
from facectx.progress import LOG_LINES, ProgressStyle
from facectx.steps.run_key import local_pipeline_key
from facectx.tensors import resolve_device
from facectx.training import distributed
from facectx.training.loop import StageTrainer
from facectx.training.remote_state import RemoteResumeState


def train_stage_step(
    params: Params,
    stage: int,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    init_dir: str | os.PathLike | None,
    resume_dir: str | os.PathLike,
    run_name: str = layout.CASCADE,
    deadline: float | None = None,
    resume_uri: str | None = None,
    pipeline_run: str | None = None,
    identity: TrainingIdentity | None = None,
    tracking_uri: str | None = None,
    data_tags: dict[str, str] | None = None,
    gpus: int = 0,
    stage_tags: dict[str, str] | None = None,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    """Train one stage, starting from init_dir (the previous stage's checkpoint folder); writes
    out_dir/checkpoint and out_dir/metrics.json; tracked in MLflow under the pipeline run.
    deadline: a time.monotonic() past which the stage stops cleanly, marked capped. resume_uri:
    s3://bucket/prefix also keeping the resume state (pulled first, pushed on save, then cleared).
    pipeline_run: the MLflow pipeline run's key (Kubeflow's run id); default: settings + data.
    identity: the run's settings, config hash and data version (`training_identity`), if known.
    tracking_uri: the MLflow server (default: MLFLOW_TRACKING_URI, else ./mlflow.db); data_tags:
    the data version (on the stage's run and those above it); stage_tags: the stage's run's only.
    gpus: the GPUs the step was given (0: none promised); if CUDA cannot use them, fail at once.
    progress_style: a bar (a person at a terminal) or log lines, of steps, images/s, losses, ETA.
    Under torchrun every rank calls this (DDP); rank 0 alone tracks and pushes resume state (each
    machine's first process pulls it); every rank returns rank 0's result once the stage is written."""
    process = distributed.init_from_env(resolve_device(params.train.device, gpus=gpus))  # one process: no group
    identity = identity or training_identity(params, prepared_dir)
    key = pipeline_run or local_pipeline_key(run_name, identity)
    name = f"{run_name}/{layout.stage_folder(stage)}"
    tags = {"stage": stage_tags, "lineage": data_tags}  # the stage's run's own; shared with the runs above
    run = _tracked_run(params, key, name, identity, tags, tracking_uri) if process.main else None
    with run or contextlib.nullcontext() as tracker:
        remote = _pulled_resume_state(params, resume_uri, resume_dir, process)
        distributed.barrier()  # the other ranks read the resume state once it is pulled
        dirs, pushed = (prepared_dir, out_dir, init_dir, resume_dir), remote and remote.push
        options = {
            "tracker": tracker,
            "deadline": deadline,
            "on_resume_saved": pushed,
            "progress_style": progress_style,
        }
        trainer = stage_trainer(params, stage, *dirs, identity, **options)
        result = trainer.run()
        if remote is not None and process.main:
            remote.clear()
    distributed.barrier()  # all ranks end together, after rank 0 has closed the run
    return {
        "stage": result.stage,
        "steps": result.steps,
        "images_per_second": result.images_per_second,
        "capped": result.capped,
        **result.val,
    }


def train_stage_on_gpus(gpus: int, **arguments) -> dict:
    """train_stage_step(**arguments) on the `gpus` GPUs a step was given (a Kubeflow pod's GPU
    limit): checked here first, so a node whose CUDA cannot use them fails at once with one clear
    CudaUnavailable, then one DDP process per GPU (torch's elastic launcher) when more than one."""
    resolve_device(arguments["params"].train.device, gpus=gpus)
    if gpus > 1:
        return distributed.run_processes(gpus, train_stage_step, gpus=gpus, **arguments)
    return train_stage_step(gpus=gpus, **arguments)


def _tracked_run(params: Params, key: str, name: str, identity: TrainingIdentity, tags: dict, tracking_uri: str | None):
    """The stage's tracked run (rank 0 alone opens one): under the pipeline run `key`, with the
    settings that shape the weights as its params."""
    return tracking.stage_run(
        key,
        name,
        identity.settings,
        tags={"facectx.model": params.model.kind, **(tags["stage"] or {})},
        lineage_tags=tags["lineage"],
        config=params.tracking,
        tracking_uri=tracking_uri,
    )


def _pulled_resume_state(
    params: Params, resume_uri: str | None, resume_dir: str | os.PathLike, process
) -> RemoteResumeState | None:
    """The stage's resume state in object storage, pulled into resume_dir; None when not kept there.
    One pull per machine (each node of a multi-node job has its own disk); rank 0 alone pushes
    (StageTrainer saves resume state on rank 0 only) and clears."""
    if not (resume_uri and params.train.resume_checkpoints and process.local_rank == 0):
        return None
    remote = RemoteResumeState(resume_uri, resume_dir, params.ingest.max_attempts)
    remote.pull()
    return remote


def stage_trainer(
    params: Params,
    stage: int,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    init_dir: str | os.PathLike | None,
    resume_dir: str | os.PathLike,
    identity: TrainingIdentity | None = None,
    **options,
) -> StageTrainer:
    """The StageTrainer of one stage, handed the sections of params it uses. identity: the run's
    settings, config hash and data version when the caller has worked them out (they must be of
    these params); None works them out here. options: StageTrainer's tracker, require_previous,
    deadline, on_resume_saved, progress_style."""
    if identity is None:
        identity = training_identity(params, prepared_dir)
    elif identity.settings != training_settings(params):  # checkpoints would record the wrong settings
        raise ValueError("the training identity handed to the trainer was worked out from other settings")
    return StageTrainer(
        stage,
        Path(prepared_dir),
        Path(out_dir),
        Path(init_dir) if init_dir else None,
        Path(resume_dir),
        train=params.train,
        losses=params.losses,
        model=model_args(params),
        frame_size=params.crop.size_px,
        identity_weights=params.assets.identity_weights,
        identity=identity,
        **options,
    )


def train_stages_step(
    params: Params,
    prepared_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    run_name: str = layout.CASCADE,
    cap_seconds: float | None = None,
    resume_root: str | os.PathLike | None = None,
    resume_uri: str | None = None,
    pipeline_run: str | None = None,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    """Every stage of train.stages in order, each from the previous stage's checkpoint (one DVC
    stage per model); returns each stage's result by resolution.

    cap_seconds: a wall-clock budget for the whole model. Each stage may use an equal share of
    what is left when it starts, so time a stage does not need passes on to the later ones.
    resume_uri: s3://bucket/prefix; each stage keeps its resume state under PREFIX/stage_N.
    pipeline_run: the MLflow pipeline run's key (default: the model, settings and data)."""
    results, stages = {}, list(params.train.stages)
    identity = training_identity(params, prepared_dir)  # one data fingerprint for every stage
    end = time.monotonic() + cap_seconds if cap_seconds else None
    for i, stage in enumerate(stages):
        deadline = time.monotonic() + (end - time.monotonic()) / (len(stages) - i) if end else None
        results[stage] = train_stage_step(
            params,
            stage,
            prepared_dir,
            run_name=run_name,
            deadline=deadline,
            identity=identity,
            resume_uri=f"{resume_uri.rstrip('/')}/{layout.stage_folder(stage)}" if resume_uri else None,
            pipeline_run=pipeline_run,
            progress_style=progress_style,
            **stage_dirs(params, stage, models_dir, resume_root),
        )
    return results


def write_stage_metrics(results: dict, path: str | os.PathLike) -> None:
    """Each stage's validation metrics (what DVC tracks as the model's metrics): measurements of
    the weights only, no timings, so a run that reproduces the weights leaves the file unchanged."""
    kept = ("steps", "capped", "val_ssim", "val_identity_distance")
    write_json(
        path, {f"stage_{stage}": {k: result[k] for k in kept if k in result} for stage, result in results.items()}
    )


def stage_dirs(
    params: Params, stage: int, models_dir: str | os.PathLike, resume_root: str | os.PathLike | None = None
) -> dict:
    """One model's stage folders (layout.stage_dirs), starting from the previous stage of train.stages."""
    return layout.stage_dirs(models_dir, stage, previous_stage(params.train.stages, stage), resume_root)
