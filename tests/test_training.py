"""Stage-by-stage training on real prepared photos: all five stages, checkpoints, resume after a
kill, the errors a person meets, the ProGAN variant, and what MLflow records."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO, fast_tiny_params, tiny_training_params
from facectx.checkpoint import CheckpointError
from facectx.config import dump_params
from facectx.steps.train import stage_dirs, stage_trainer, train_stage_on_gpus, train_stage_step
from facectx.tensors import CpuFallback, CudaUnavailable, resolve_device
from facectx.training.stopping import NonFiniteLoss


def train(params, stage, prepared, models, run_name="cascade"):
    return train_stage_step(params, stage, prepared, run_name=run_name, **stage_dirs(params, stage, models))


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts (mlartifacts/) land beside the store
    return uri


def test_tiny_cascade_trains_all_five_stages_and_is_tracked(prepared_data, tmp_path, params, mlflow_store):
    tiny = tiny_training_params(params)
    models = tmp_path / "models"
    results = [train(tiny, stage, prepared_data, models) for stage in tiny.train.stages]

    assert [r["stage"] for r in results] == [8, 16, 32, 64, 128]
    for r in results:
        assert 0 < r["val_ssim"] <= 1 and 0 <= r["val_identity_distance"] <= 2
    final = models / "stage_128" / "checkpoint"
    meta = json.loads((final / "meta.json").read_text())
    assert meta["stage"] == 128 and meta["model_args"]["kind"] == "cascade" and meta["data_version"]
    weights = load_file(str(final / "model.safetensors"))
    assert {k.split(".")[2] for k in weights if k.startswith("generator.blocks.")} == {"8", "16", "32", "64", "128"}
    assert not (models / "resume").exists() or not any((models / "resume").iterdir())  # cleaned after success

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("facectx")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1  # the pipeline run, holding one run for the model, holding its stages
    [model] = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert model.info.run_name == "cascade" and model.data.tags["facectx.model_run"] == "cascade"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == model.info.run_id]
    assert sorted(r.data.tags["facectx.stage"] for r in children) == sorted(
        f"cascade/stage_{s}" for s in tiny.train.stages
    )
    stage_128 = next(r for r in children if r.data.tags["facectx.stage"] == "cascade/stage_128")
    assert "val_ssim" in stage_128.data.metrics and "loss_id" in stage_128.data.metrics
    assert stage_128.data.params["losses.lambda_id"] == str(list(tiny.losses.lambda_id))
    history = client.get_metric_history(stage_128.info.run_id, "loss_rec")
    assert len(history) == 3  # 12 rows / batch 4, logged every step
    artifacts = [a.path for a in client.list_artifacts(stage_128.info.run_id, "samples")]
    assert artifacts == ["samples/stage_128_epoch_000.png"]


def test_stage_without_previous_checkpoint_is_a_clear_error(prepared_data, tmp_path, params, mlflow_store):
    with pytest.raises(CheckpointError, match="train stage 8 first"):
        train(tiny_training_params(params), 16, prepared_data, tmp_path / "models")


def test_checkpoint_from_other_settings_or_corrupt_is_refused(prepared_data, tmp_path, params, mlflow_store):
    tiny = tiny_training_params(params)
    models = tmp_path / "models"
    train(tiny, 8, prepared_data, models)
    other = dataclasses.replace(tiny, losses=dataclasses.replace(tiny.losses, lambda_rec=50.0))
    with pytest.raises(CheckpointError, match="current config"):
        train(other, 16, prepared_data, models)
    weights = models / "stage_8" / "checkpoint" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        train(tiny, 16, prepared_data, models)


def test_non_finite_loss_stops_training(prepared_data, tmp_path, params, mlflow_store):
    broken = tiny_training_params(params)
    broken = dataclasses.replace(broken, losses=dataclasses.replace(broken.losses, lambda_rec=float("inf")))
    with pytest.raises(NonFiniteLoss, match="NaN or infinite"):
        train(broken, 8, prepared_data, tmp_path / "models")
    assert not (tmp_path / "models" / "stage_8" / "checkpoint").exists()


def _train_in_subprocess(params, prepared, models, env, *options):
    params_file = models.parent / "params.yaml"
    params_file.write_text(dump_params(params))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facectx.cli",
            "--params",
            str(params_file),
            "train-stage",
            "--stage",
            "8",
            "--prepared-dir",
            str(prepared),
            "--models-dir",
            str(models),
            "--resume-dir",
            str(models.parent / "resume"),
            *options,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _remote_step(client, bucket: str, prefix: str) -> int:
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/latest.json")["Body"].read())["step"]
    except client.exceptions.NoSuchKey:
        return -1


def test_preempted_training_resumes_from_object_storage_to_the_same_weights(
    prepared_data, tmp_path, params, mlflow_store, s3_env
):
    """A training pod killed mid-stage and started again on an empty disk (a new node) pulls its
    resume state from S3 and ends with the weights of an uninterrupted run."""
    import boto3

    tiny = tiny_training_params(params, epochs=(3, 1, 1, 1, 1), checkpoint_every_steps=1)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    client = boto3.client("s3")
    client.create_bucket(Bucket="facectx-runs")
    prefix = f"run-{tmp_path.name}/cascade/stage_8"
    resume_uri = ["--resume-uri", f"s3://facectx-runs/{prefix}"]

    straight = tmp_path / "straight" / "models"
    straight.parent.mkdir()
    assert _train_in_subprocess(tiny, prepared_data, straight, env).wait(timeout=600) == 0

    killed = tmp_path / "killed" / "models"
    killed.parent.mkdir()
    process = _train_in_subprocess(tiny, prepared_data, killed, env, *resume_uri)
    deadline = time.time() + 300
    while time.time() < deadline and _remote_step(client, "facectx-runs", prefix) < 4:  # mid-epoch: step 4 of 9
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = _remote_step(client, "facectx-runs", prefix)
    assert 4 <= saved < 9 and not (killed / "stage_8" / "checkpoint").exists(), "killed too late to test resuming"
    shutil.rmtree(killed.parent / "resume")  # the new pod's disk is empty

    again = _train_in_subprocess(tiny, prepared_data, killed, env, *resume_uri)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert f"pulled resume state (step {saved})" in output
    a = load_file(str(straight / "stage_8" / "checkpoint" / "model.safetensors"))
    b = load_file(str(killed / "stage_8" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the finished stage's state is gone: a retry after the end must not resume a finished stage
    assert "Contents" not in client.list_objects_v2(Bucket="facectx-runs", Prefix=prefix)


def test_progan_variant_grows_generator_and_critic_with_fade_in(
    prepared_data, tmp_path, params, mlflow_store, monkeypatch
):
    """Stage 16 grows stage 8's generator and critic (the critic's weights come from stage 8's
    checkpoint too, the new level's are new) and fades the new level in: the alpha both are
    told before each step climbs from 0 to 1 over train.fade_in_fraction of the stage's steps,
    then stays 1; stage 8, with nothing to fade from, trains at 1 throughout. The checkpoint
    loads for evaluation and hallucinates around the input face."""
    from facectx.evaluation.outputs import method_outputs
    from facectx.evaluation.photo_sets import load_split
    from facectx.inference import Hallucinator
    from facectx.models.equalized import FadesIn

    tiny = tiny_training_params(params, epochs=(1, 2, 1, 1, 1), fade_in_fraction=0.5)
    progan = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, kind="progan"))
    models = tmp_path / "progan"
    told = {"ProgressiveGenerator": [], "ProgressiveCritic": []}
    set_alpha = FadesIn.set_alpha

    def recording_set_alpha(model, value):
        told[type(model).__name__].append(float(value))
        set_alpha(model, value)

    monkeypatch.setattr(FadesIn, "set_alpha", recording_set_alpha)
    train(progan, 8, prepared_data, models, run_name="progan")  # through the train-stage step
    assert told == {"ProgressiveGenerator": [1.0] * 3, "ProgressiveCritic": [1.0] * 3}  # 12 rows, batch 4
    stage_8 = load_file(str(models / "stage_8" / "checkpoint" / "model.safetensors"))

    for alphas in told.values():
        alphas.clear()
    trainer = stage_trainer(progan, 16, prepared_data, **stage_dirs(progan, 16, models))
    for name, model in (("generator", trainer.generator), ("critic", trainer.critic)):
        grown = model.state_dict()
        inherited = {k.removeprefix(f"{name}."): v for k, v in stage_8.items() if k.startswith(f"{name}.")}
        assert inherited and all(torch.equal(grown[k], v) for k, v in inherited.items()), name
        new = set(grown) - set(inherited)
        assert new and all(
            k.startswith(("from_rgb.16.", "to_rgb.16.", "down.16.", "up.16.", "blocks.16.")) for k in new
        )
    trainer.run()
    # Two epochs of three steps; the fade takes int(0.5 * 6) = 3 of them: alpha = step / 3.
    assert told["ProgressiveGenerator"] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert told["ProgressiveCritic"] == told["ProgressiveGenerator"]
    weights = load_file(str(models / "stage_16" / "checkpoint" / "model.safetensors"))
    assert float(weights["generator.alpha"]) == float(weights["critic.alpha"]) == 1.0  # faded in by the end
    assert all(weights[k].shape == v.shape for k, v in stage_8.items()) and len(weights) > len(stage_8)

    test = load_split(prepared_data, "test")
    outputs = method_outputs({"progan": Hallucinator(models / "stage_16" / "checkpoint")}, test, batch=4)["progan"]
    assert outputs.shape == (len(test.target), 16, 16, 3) and outputs.dtype == np.uint8
    inside = test.mask[16] == 255
    assert np.array_equal(outputs[inside], test.masked[16][inside])  # the face pasted back
    assert outputs[~inside].std() > 1  # context painted, not a constant


def test_a_checkpoint_of_another_design_is_refused_naming_it(tmp_path):
    """A ProGAN checkpoint of the batch-norm design before issue 27 no longer fits the model:
    loading it says which checkpoint and why, instead of torch's bare key listing."""
    from facectx.checkpoint import save_checkpoint
    from facectx.inference import Hallucinator
    from facectx.models.cascade import CascadeGenerator, ModelArgs

    args = ModelArgs("progan", (8, 16, 32, 64, 128), width=4, max_width=8, disc_width=4, disc_max_layers=2)
    old = tmp_path / "old_progan"
    save_checkpoint(old, {"generator": CascadeGenerator(args, 16)}, None, {"stage": 16, "model_args": vars(args)})
    with pytest.raises(CheckpointError, match=r"old_progan: its progan generator does not fit .* retrain it"):
        Hallucinator(old)


def test_parallel_first_stages_settle_on_one_pipeline_run(mlflow_store):
    """Kubeflow starts the cascade's and a variant's first stage together: if both miss each
    other's parent run and create one, they must still end up under the same (earliest) parent."""
    from mlflow.tracking import MlflowClient

    from facectx import tracking

    key = "race-key"
    with tracking.stage_run(key, "cascade/stage_8", {"a": 1}) as first:
        pass
    client = MlflowClient(mlflow_store)
    model_run = client.get_run(client.get_run(first.run_id).data.tags["mlflow.parentRunId"])
    parent = model_run.data.tags["mlflow.parentRunId"]

    original = MlflowClient.search_runs
    calls = []

    def blind_first_search(self, *args, **kwargs):  # the other step's parent is not visible yet
        calls.append(1)
        return [] if len(calls) == 1 else original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowClient, "search_runs", blind_first_search)
        with tracking.stage_run(key, "progan/stage_8", {"a": 2}) as second:
            pass
    second_model = client.get_run(client.get_run(second.run_id).data.tags["mlflow.parentRunId"])
    assert second_model.info.run_name == "progan" and second_model.data.tags["mlflow.parentRunId"] == parent
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    live = client.search_runs([experiment], filter_string=f"tags.`{tracking.KEY_TAG}` = '{key}'")
    assert [run.info.run_id for run in live] == [parent]  # the duplicate was deleted


# ------------------------------------------------------------------ wall-clock cap, resume state, batch sizes


class RecordingTracker:
    """Stands in for MLflow: keeps what training reports."""

    def __init__(self):
        self.metrics, self.tags = {}, {}

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)

    def log_image(self, image, artifact_file):
        pass

    def set_tags(self, tags):
        self.tags.update(tags)


def _trainer(params, stage, prepared, models, **kwargs):
    dirs = stage_dirs(params, stage, models)
    return stage_trainer(params, stage, prepared, dirs["out_dir"], dirs["init_dir"], dirs["resume_dir"], **kwargs)


def test_wall_clock_cap_stops_cleanly_and_the_next_stage_starts_from_it(
    prepared_data, tmp_path, params, monkeypatch, caplog
):
    from types import SimpleNamespace

    from facectx.training import loop

    tiny = tiny_training_params(params, epochs=(3, 1, 1, 1, 1), checkpoint_every_steps=1)
    models = tmp_path / "models"
    clock = iter(range(1, 1000))  # one "second" per look at the clock: the 4th step ends past the deadline
    monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=lambda: next(clock), perf_counter=time.perf_counter))
    tracker = RecordingTracker()
    result = _trainer(tiny, 8, prepared_data, models, tracker=tracker, deadline=3.5).run()

    assert result.capped and result.steps == 4  # 3 steps per epoch: stopped one step into the second epoch
    assert "stage 8 capped at step 4 of 9 (wall-clock cap)" in caplog.text
    metrics = json.loads((models / "stage_8" / "metrics.json").read_text())
    assert metrics["capped"] is True and metrics["steps"] == 4 and metrics["planned_steps"] == 9
    assert 0 < metrics["val_ssim"] <= 1  # validated once more after the cap
    meta = json.loads((models / "stage_8" / "checkpoint" / "meta.json").read_text())
    assert meta["step"] == 4 and meta["capped"] is True
    assert not (models / "resume" / "stage_8").exists()
    assert tracker.metrics["capped"] == 1.0 and tracker.tags == {"facectx.capped": "true"}

    monkeypatch.undo()
    tracker = RecordingTracker()
    result = _trainer(tiny, 16, prepared_data, models, tracker=tracker, deadline=time.monotonic() + 3600).run()
    assert not result.capped and result.steps == 3
    metrics = json.loads((models / "stage_16" / "metrics.json").read_text())
    assert metrics["capped"] is False and metrics["steps"] == metrics["planned_steps"] == 3
    assert tracker.tags == {"facectx.capped": "false"}


def test_a_deadline_already_past_still_trains_one_step(prepared_data, tmp_path, params):
    tiny = tiny_training_params(params)
    models = tmp_path / "models"
    result = _trainer(tiny, 8, prepared_data, models, deadline=time.monotonic() - 1).run()
    assert result.capped and result.steps == 1
    assert _trainer(tiny, 16, prepared_data, models).run().steps == 3  # chains from the one-step checkpoint


def test_without_resume_checkpoints_no_resume_state_is_written_but_the_loss_curve_is(
    prepared_data, tmp_path, params, monkeypatch
):
    from facectx.checkpoint import training_settings
    from facectx.training import state

    on = tiny_training_params(params, epochs=(2, 1, 1, 1, 1), checkpoint_every_steps=1)
    off = dataclasses.replace(on, train=dataclasses.replace(on.train, resume_checkpoints=False))
    assert training_settings(on) == training_settings(off)  # runtime-only: same checkpoints
    saved = []
    original = state.save_checkpoint
    monkeypatch.setattr(
        state, "save_checkpoint", lambda folder, *a, **k: saved.append(Path(folder)) or original(folder, *a, **k)
    )
    models = tmp_path / "models"
    (models / "stage_8").mkdir(parents=True)
    (models / "stage_8" / "losses.csv").write_text("step,loss_stale\n99,1\n")  # an earlier run's curve is replaced

    _trainer(off, 8, prepared_data, models).run()
    assert saved == [models / "stage_8" / "checkpoint"]
    assert not (models / "resume").exists()
    curve = (models / "stage_8" / "losses.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss_") and "stale" not in curve[0]
    assert [int(row.split(",")[0]) for row in curve[1:]] == [1, 2, 3, 4, 5, 6]


def test_a_resumed_run_keeps_one_whole_loss_curve(prepared_data, tmp_path, params):
    tiny = tiny_training_params(params, epochs=(2, 1, 1, 1, 1), checkpoint_every_steps=2)
    models = tmp_path / "models"

    class Killed(Exception):
        pass

    class KillAtStep5(RecordingTracker):
        def log_metrics(self, metrics, step):
            if step == 5:  # after step 5's row is written; the last resume state is step 4's
                raise Killed

    with pytest.raises(Killed):
        _trainer(tiny, 8, prepared_data, models, tracker=KillAtStep5()).run()
    assert json.loads((models / "resume" / "stage_8" / "meta.json").read_text())["step"] == 4
    _trainer(tiny, 8, prepared_data, models).run()
    curve = (models / "stage_8" / "losses.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in curve[1:]] == [1, 2, 3, 4, 5, 6]  # step 5 once, not twice


def test_the_trainer_leaves_torch_global_state_as_it_found_it(prepared_data, tmp_path, params):
    """Deterministic algorithms and seeds are the trainer's only while it builds and trains: the
    caller's flags and random generator come back, and the caller's randomness (its seed, what it
    draws before and between) does not change the trained weights."""
    tiny = fast_tiny_params(params)
    assert tiny.train.deterministic

    def trained_weights(models, caller_seed):
        torch.manual_seed(caller_seed)
        torch.rand(1000)
        trainer = _trainer(tiny, 8, prepared_data, models)
        torch.rand(1000)
        trainer.run()
        return load_file(models / "stage_8" / "checkpoint" / "model.safetensors")

    for caller_deterministic, warn_only in ((False, False), (True, True)):
        torch.use_deterministic_algorithms(caller_deterministic, warn_only=warn_only)
        try:
            torch.manual_seed(1234)
            caller_rng = torch.random.get_rng_state()
            _trainer(tiny, 8, prepared_data, tmp_path / f"models_{caller_deterministic}").run()
            assert torch.are_deterministic_algorithms_enabled() == caller_deterministic
            assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
            assert torch.equal(torch.random.get_rng_state(), caller_rng)
        finally:
            torch.use_deterministic_algorithms(False)

    one = trained_weights(tmp_path / "models_seed_0", caller_seed=0)
    other = trained_weights(tmp_path / "models_seed_1", caller_seed=1)
    assert one.keys() == other.keys()
    assert all(torch.equal(one[name], other[name]) for name in one)


def test_each_stage_trains_at_its_own_batch_size(prepared_data, tmp_path, params, monkeypatch):
    from facectx.training.loop import StageTrainer, stage_batch_size

    tiny = tiny_training_params(params, batch_size=(4, 2, 4, 4, 4))
    assert [stage_batch_size(tiny.train, s) for s in (8, 16)] == [4, 2]
    sizes = []
    original = StageTrainer._train_step
    monkeypatch.setattr(
        StageTrainer,
        "_train_step",
        lambda self, batch, *rest: sizes.append((self.stage, len(batch.landmarks))) or original(self, batch, *rest),
    )
    models = tmp_path / "models"
    assert _trainer(tiny, 8, prepared_data, models).run().steps == 3  # 12 rows / 4
    assert _trainer(tiny, 16, prepared_data, models).run().steps == 6  # 12 rows / 2
    assert sizes == [(8, 4)] * 3 + [(16, 2)] * 6


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(batch_size=[16, 16]), "train.batch_size must give one size"),
        (lambda t: t.update(batch_size=[16, 16, 0, 16, 16]), "train.batch_size must give one size"),
        (lambda t: t.update(batch_size=16), "train.batch_size: expected a list"),
        (lambda t: t.update(compile_mode="fast"), "train.compile_mode"),
        (
            lambda t: t.update(compile=True, compile_mode="reduce-overhead", cuda_graphs=True),
            "train.compile_mode reduce-overhead and train.cuda_graphs",
        ),
    ],
)
def test_bad_train_settings_name_the_key(change, message):
    from facectx.config import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    change(raw["profiles"]["quick"]["train"])
    with pytest.raises(ValueError, match=message):
        parse_params(yaml.safe_dump(raw))


def _on_device(params, device: str):
    tiny = tiny_training_params(params)
    return dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, device=device))


def test_a_step_given_gpus_cuda_cannot_use_fails_at_once_saying_why(prepared_data, tmp_path, params, mlflow_store):
    """A pod holding GPUs on a node whose CUDA does not work (in a cluster: a driver older than the
    image's CUDA build needs; here: no driver at all) fails before it reads data or opens a run,
    naming the GPUs given and seen and what CUDA needs, instead of training on its CPU."""
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = seen + 1  # one more than CUDA can use, on any machine
    auto = _on_device(params, "auto")
    dirs = stage_dirs(auto, 8, tmp_path / "models")
    with pytest.raises(CudaUnavailable) as failure:
        train_stage_step(auto, 8, prepared_data, gpus=given, **dirs)
    message = str(failure.value)
    assert f"this step was given {given} GPU(s) but CUDA can use {seen} of them here" in message
    built = f"CUDA {torch.version.cuda}, which needs an NVIDIA driver >= " if torch.version.cuda else "a CPU-only build"
    assert f"torch {torch.__version__} is built for {built}" in message
    assert "driver found: " in message and f"CUDA devices visible: {torch.cuda.device_count()}" in message
    if not torch.cuda.is_available():
        assert "torch says: " in message  # torch's own reason (no driver, driver too old, no device)
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()

    # Several GPUs: checked before any process starts, so one clear error, not one per rank.
    with pytest.raises(CudaUnavailable, match=f"given {given + 1} GPU\\(s\\) but CUDA can use {seen} "):
        train_stage_on_gpus(given + 1, params=auto, stage=8, prepared_dir=prepared_data, **dirs)
    with pytest.raises(ValueError, match=r"train.device is cpu, but the step was given 1 GPU\(s\)"):
        train_stage_step(_on_device(params, "cpu"), 8, prepared_data, gpus=1, **dirs)
    assert not (tmp_path / "models").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto takes the GPU where CUDA works")
def test_auto_without_usable_cuda_runs_on_the_cpu_and_says_why():
    with pytest.warns(
        CpuFallback, match=r"train.device is auto and CUDA is not usable here: running on the CPU \(torch "
    ):
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(CudaUnavailable, match=r"evaluate.device is cuda but CUDA is not usable here: .*visible: 0"):
        resolve_device("cuda", "evaluate.device")


def test_a_stage_shows_steps_images_per_second_losses_and_eta(prepared_data, tmp_path, params, caplog):
    """Off a terminal: a log line every interval (a fake clock: 40 s pass between two readings,
    past the 30 s interval) with the stage, steps done of its total, images/s, losses and ETA."""
    import logging
    import re

    from facectx.progress import ProgressStyle

    ticks = iter(range(0, 10_000, 40))
    style = ProgressStyle(every_s=30.0, clock=lambda: float(next(ticks)))
    tiny = tiny_training_params(params, epochs=(2, 1, 1, 1, 1))
    caplog.set_level(logging.INFO, logger="facectx.progress")
    result = _trainer(tiny, 8, prepared_data, tmp_path / "models", progress_style=style).run()
    lines = [r.getMessage() for r in caplog.records if r.name == "facectx.progress"]
    assert lines[0] == f"train stage 8px: {result.steps} steps to do"
    assert len(lines) == 1 + result.steps  # a reading per step, each 40 s after the last
    line = re.compile(r"train stage 8px: (\d+)/(\d+) steps \(\d+%\), [\d.]+ steps/s, [\d.]+ images/s, (.*)")
    for done, text in enumerate(lines[1:], start=1):
        match = line.fullmatch(text)
        assert match and int(match[1]) == done and int(match[2]) == result.steps, text
    assert "loss_" in lines[2] and "ETA" in lines[2]  # losses reported every step (log_every_steps 1)
    assert "done in" in lines[-1]
