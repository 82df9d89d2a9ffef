"""The pipeline steps, one function each: the CLI (and so DVC) and the Kubeflow components call
these, so both orchestrators run the same code."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from facectx import layout
from facectx.config import Params

if TYPE_CHECKING:
    from facectx.checkpoint import TrainingIdentity


def ingest_step(params: Params, raw_dir: str | os.PathLike, source: str | None = None) -> dict:
    from facectx.data.ingest import ingest

    config = dataclasses.replace(params.ingest, source=source) if source else params.ingest
    if not config.source:
        raise ValueError(
            "no photo source: set ingest.source in params, or pass a source (a folder or s3://bucket/prefix)"
        )
    return ingest(config, raw_dir)


def validate_step(params: Params, raw_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    from facectx.data.validate import validate

    return validate(raw_dir, out_dir, params.validate, params.crop, params.landmarks)


def prepare_step(
    params: Params, raw_dir: str | os.PathLike, validated_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> dict:
    from facectx.data.prepare import prepare

    return prepare(raw_dir, validated_dir, out_dir, params.prepare, params.crop, params.validate)


def train_stage_step(
    params: Params,
    stage: int,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    init_dir: str | os.PathLike | None,
    resume_dir: str | os.PathLike,
    run_name: str = "cascade",
    deadline: float | None = None,
    resume_uri: str | None = None,
    pipeline_run: str | None = None,
    identity: TrainingIdentity | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Train one stage, starting from init_dir (the previous stage's checkpoint folder); writes
    out_dir/checkpoint and out_dir/metrics.json; tracked in MLflow under the pipeline run.
    deadline: a time.monotonic() value past which the stage stops cleanly, marked capped.
    resume_uri: s3://bucket/prefix where the resume state is also kept (a Kubeflow pod's disk does
    not outlive a preemption): pulled before training, pushed after each save, cleared at the end.
    pipeline_run: the MLflow pipeline run's key (Kubeflow's run id); default: settings + data.
    identity: the run's settings, config hash and data version (`training_identity`), when the
    caller has worked them out already (train_stages_step, once for every stage).
    tracking_uri: the MLflow tracking server (default: MLFLOW_TRACKING_URI, else ./mlflow.db).
    Under torchrun (or distributed.run_processes) every rank calls this and trains with DDP; rank 0
    alone opens the tracked run and pushes resume state to resume_uri (the first process on each
    machine pulls it), and every rank returns rank 0's result once the stage is written."""
    import contextlib

    from facectx import tracking
    from facectx.checkpoint import training_identity
    from facectx.tensors import resolve_device
    from facectx.training import distributed

    process = distributed.init_from_env(resolve_device(params.train.device))  # one process: no group
    identity = identity or training_identity(params, prepared_dir)
    key = pipeline_run or _pipeline_key(run_name, identity)
    run = (
        tracking.stage_run(
            key,
            f"{run_name}/stage_{stage}",
            identity.settings,
            tags={"facectx.model": params.model.kind},
            config=params.tracking,
            tracking_uri=tracking_uri,
        )
        if process.main
        else contextlib.nullcontext(None)
    )
    with run as tracker:
        remote = None
        if resume_uri and params.train.resume_checkpoints and process.local_rank == 0:
            from facectx.training.remote_state import RemoteResumeState

            # One pull per machine (each node of a multi-node job has its own disk); rank 0 alone
            # pushes (StageTrainer saves resume state on rank 0 only) and clears.
            remote = RemoteResumeState(resume_uri, resume_dir, params.ingest.max_attempts)
            remote.pull()
        distributed.barrier()  # the other ranks read the resume state once it is pulled
        trainer = stage_trainer(
            params,
            stage,
            prepared_dir,
            out_dir,
            init_dir,
            resume_dir,
            identity,
            tracker=tracker,
            deadline=deadline,
            on_resume_saved=remote and remote.push,
        )
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


def stage_trainer(
    params: Params,
    stage: int,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    init_dir: str | os.PathLike | None,
    resume_dir: str | os.PathLike,
    identity: TrainingIdentity | None = None,
    **options,
):
    """The StageTrainer of one stage, handed the sections of params it uses. identity: the run's
    settings, config hash and data version when the caller has worked them out (they must be of
    these params); None works them out here. options: StageTrainer's tracker, require_previous,
    deadline, on_resume_saved."""
    from pathlib import Path

    from facectx.checkpoint import training_identity, training_settings
    from facectx.models.factory import model_args
    from facectx.training.loop import StageTrainer

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
) -> dict:
    """Every stage of train.stages in order, each from the previous stage's checkpoint (one DVC
    stage per model); returns each stage's result by resolution.

    cap_seconds: a wall-clock budget for the whole model. Each stage may use an equal share of
    what is left when it starts, so time a stage does not need passes on to the later ones.
    resume_uri: s3://bucket/prefix; each stage keeps its resume state under PREFIX/stage_N."""
    import time

    from facectx.checkpoint import training_identity

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
            resume_uri=f"{resume_uri.rstrip('/')}/stage_{stage}" if resume_uri else None,
            **stage_dirs(params, stage, models_dir, resume_root),
        )
    return results


def write_stage_metrics(results: dict, path: str | os.PathLike) -> None:
    """Each stage's validation metrics (what DVC tracks as the model's metrics): measurements of
    the weights only, no timings, so a run that reproduces the weights leaves the file unchanged."""
    from facectx.io_utils import write_json

    kept = ("steps", "capped", "val_ssim", "val_identity_distance")
    write_json(
        path, {f"stage_{stage}": {k: result[k] for k in kept if k in result} for stage, result in results.items()}
    )


def stage_dirs(
    params: Params, stage: int, models_dir: str | os.PathLike, resume_root: str | os.PathLike | None = None
) -> dict:
    """One model's stage folders (layout.stage_dirs), starting from the previous stage of train.stages."""
    from facectx.models.factory import previous_stage

    return layout.stage_dirs(models_dir, stage, previous_stage(params.train.stages, stage), resume_root)


def final_checkpoint(params: Params, models_dir: str | os.PathLike):
    """The last stage's checkpoint folder under models_dir: the finished model."""
    return layout.final_checkpoint(models_dir, params.train.stages)


def evaluate_step(
    params: Params,
    prepared_dir: str | os.PathLike,
    raw_dir: str | os.PathLike | None,
    models: dict[str, str],
    out_dir: str | os.PathLike,
    calibration: dict | None = None,
    run_name: str = "cascade",
    stage_name: str = "evaluate",
    pipeline_run: str | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Score baselines and models on the test split, write the report, log it to MLflow.

    The verification threshold is calibrated on LFW's DevTrain pairs under raw_dir (needs the
    photos and the landmark detector), unless a calibration made elsewhere is given."""
    from facectx import tracking
    from facectx.checkpoint import training_identity
    from facectx.evaluation.evaluate import evaluate
    from facectx.evaluation.networks import make_networks
    from facectx.tensors import resolve_device

    config = params.evaluate
    device = resolve_device(config.device, "evaluate.device")
    nets = make_networks(config.matcher, device, params.assets)
    if calibration is None and raw_dir is not None:
        calibration = matcher_calibration(params, raw_dir, nets)
    key = pipeline_run or _pipeline_key(run_name, training_identity(params, prepared_dir))
    with tracking.stage_run(
        key,
        stage_name,
        {"evaluate": dataclasses.asdict(config), "models": models},
        config=params.tracking,
        tracking_uri=tracking_uri,
    ) as tracker:
        result = evaluate(prepared_dir, models, out_dir, config, calibration=calibration, nets=nets, device=device)
        for method, values in result["methods"].items():
            tracker.log_metrics({f"{_metric_key(method)}.{k}": v for k, v in values.items()}, step=0)
        tracker.log_artifacts(out_dir)
    return result


def matcher_calibration(params: Params, raw_dir: str | os.PathLike, nets) -> dict | None:
    """The matcher's verification threshold at 1% false accepts, from LFW's DevTrain pairs under
    raw_dir/split_lists (the whole-frame view evaluation scores); None when the pairs are absent.
    Needs the photos and the landmark detector, so an air-gapped run takes it from its pack."""
    from pathlib import Path

    from facectx.evaluation.lfw_calibration import lfw_pair_calibration
    from facectx.evaluation.networks import WholeFrameIdentity

    if not (Path(raw_dir) / "split_lists" / "pairsDevTrain.txt").is_file():
        return None
    return lfw_pair_calibration(
        raw_dir,
        WholeFrameIdentity(nets, params.crop),
        params.landmarks,
        max_pairs=params.evaluate.calibration_pairs or None,
        pairs_file="split_lists/pairsDevTrain.txt",
    )


def _pipeline_key(run_name: str, identity: TrainingIdentity) -> str:
    """The MLflow pipeline run a local (DVC/CLI) run's steps share: one per model, settings and data."""
    from facectx import tracking

    return tracking.pipeline_key(f"{run_name}-{identity.config_hash}-{identity.data_version}")


def _metric_key(method: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in method)


def register_step(
    params: Params,
    checkpoint_dir: str | os.PathLike,
    metrics_file: str | os.PathLike,
    example_photo: str | os.PathLike | None = None,
    prepared_dir: str | os.PathLike | None = None,
    raw_dir: str | os.PathLike | None = None,
    method: str = "cascade",
    pipeline_run: str | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Log the checkpoint as a pyfunc model in an MLflow run and register it as the `challenger`;
    its gate metrics are the evaluation's metrics.json["methods"][method]. The run nests under the
    pipeline run `pipeline_run` when given (Kubeflow's run id)."""
    import json
    from pathlib import Path

    from facectx import registry, tracking
    from facectx.serving import log_pyfunc_model

    metrics_file = Path(metrics_file)
    if not metrics_file.is_file():
        raise FileNotFoundError(f"metrics file not found: {metrics_file} (run `facectx evaluate` first)")
    evaluation = json.loads(metrics_file.read_text())
    methods = evaluation.get("methods", {})
    if method not in methods:
        raise ValueError(f"{metrics_file}: no methods.{method} entry (found {sorted(methods)})")
    metrics = {
        k: float(v) for k, v in methods[method].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    name = params.registry.model_name
    tags = {
        "facectx.stage": "register",
        "facectx.checkpoint": str(Path(checkpoint_dir).resolve()),
        "facectx.metrics_file": str(metrics_file.resolve()),
    }
    # Nested under the pipeline run when there is one (pipeline_parent makes it the active run).
    with (
        _under_pipeline_run(pipeline_run, tracking_uri),
        tracking.step_run(f"register-{name}", tags, tracking_uri) as run_id,
    ):
        info = log_pyfunc_model(
            checkpoint_dir, params, metrics, example_photo=example_photo, prepared_dir=prepared_dir, raw_dir=raw_dir
        )
        # How the metrics were measured: the gate compares only versions measured the same way.
        protocol = {
            key: evaluation[key]
            for key in ("matcher", "fd_network", "perceptual_network", "photos", "test_set")
            if key in evaluation
        }
        version = registry.register(info.model_uri, name, metrics, run_id, protocol, tracking_uri)
    return {
        "model_name": name,
        "version": version,
        "model_uri": info.model_uri,
        "run_id": run_id,
        "metrics": metrics,
    }


def promote_step(
    params: Params,
    expected_version: int | None = None,
    force: bool = False,
    pipeline_run: str | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Champion <- challenger if there is no champion or it wins on every registry.gate_metrics entry
    (measured the same way); `force` skips the gate. The decision's run nests under the pipeline
    run `pipeline_run` when given."""
    from facectx import registry

    with _under_pipeline_run(pipeline_run, tracking_uri):
        return registry.promote(
            params.registry.model_name, params.registry.gate_metrics, expected_version, force, tracking_uri
        )


def _under_pipeline_run(pipeline_run: str | None, tracking_uri: str | None = None):
    """The pipeline run as the active MLflow run (runs started inside nest under it), or nothing."""
    import contextlib

    from facectx import tracking

    return (
        tracking.pipeline_parent(pipeline_run, tracking_uri=tracking_uri) if pipeline_run else contextlib.nullcontext()
    )


def hallucinate_step(
    params: Params, photo: str | os.PathLike, out: str | os.PathLike, checkpoint_dir: str | os.PathLike
) -> dict:
    """One photo -> a PNG of the hallucinated frame; errors name the photo."""
    from pathlib import Path

    from facectx.data.photos import PhotoRejected, decode_photo
    from facectx.inference import NoFaceFound, PhotoHallucinator
    from facectx.io_utils import write_png

    photo = Path(photo)
    if not photo.is_file():
        raise FileNotFoundError(f"{photo}: no such photo")
    try:
        rgb = decode_photo(photo, params.validate.max_pixels, params.validate.formats)
    except PhotoRejected as err:
        raise ValueError(f"{photo}: not a usable photo: {err}") from None
    hallucinator = PhotoHallucinator(checkpoint_dir, params.crop, params.landmarks)
    try:
        result = hallucinator(rgb)
    except NoFaceFound as err:
        raise ValueError(f"{photo}: {err}") from None
    write_png(out, result["output"])
    return {"photo": str(photo), "out": str(out), "size": list(result["output"].shape)}
