"""Tracking as Kubeflow's pods meet it, with real processes and a real MLflow server:

- steps that start at the same moment on a fresh MLflow (the cascade's and each variant's first
  stages) share one experiment, one pipeline run and one run per model, and all succeed;
- a stage whose working directory cannot be written (the image's user in a root-owned folder)
  still spools through a server outage, into a folder of the user's, and the next stage sends it;
- a stage killed mid-run (a preempted pod) and started again leaves no run RUNNING: the new
  attempt closes the old one, KILLED, and names it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from test_training import _train_in_subprocess

from conftest import REPO, fast_tiny_params
from facectx import tracking
from servers import MlflowServer

# One tracked stage in a process of its own: stage_run, as training and evaluation call it. It waits
# on stdin after its imports (the barrier that makes several start together) and, given "outage",
# once more after its first metric (while the test stops the server).
STAGE_PROCESS = """
import json
import sys
from facectx import tracking
from facectx.config import TrackingConfig

key, stage, experiment, mode = sys.argv[1:5]
config = TrackingConfig(backend="mlflow", folder="runs", experiment=experiment)
print("ready", flush=True)
sys.stdin.readline()
with tracking.stage_run(key, stage, {"stage": stage}, config=config) as tracker:
    tracker.log_metrics({"loss": 1.0}, step=0)
    if mode == "outage":
        print("logged", flush=True)
        sys.stdin.readline()
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.set_tags({"facectx.after_outage": "yes"})
print(json.dumps({"run_id": tracker.run_id, "spool": str(getattr(tracker, "spool_dir", ""))}), flush=True)
"""


def start_stages(script: Path, stages: list[str], key: str, experiment: str, env: dict, cwd: Path, mode="plain"):
    """One process per stage, each held at the barrier once its imports are done; returns them."""
    processes = [
        subprocess.Popen(
            [*_without_dac_override(), sys.executable, str(script), key, stage, experiment, mode],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for stage in stages
    ]
    for process in processes:
        wait_for_line(process, "ready")
    return processes


def wait_for_line(process, expected: str) -> None:
    """Read the process's output (its log lines and ours) until the line `expected`."""
    seen = []
    while (line := process.stdout.readline()) and line.strip() != expected:
        seen.append(line)
    assert line, f"the process ended before saying {expected!r}:\n{''.join(seen)}"


def release(processes) -> None:
    for process in processes:  # one write each, back to back: they go on within a millisecond or so
        process.stdin.write("go\n")
        process.stdin.flush()


def finish(process, timeout=300) -> dict:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def _without_dac_override() -> list[str]:
    """As root, a folder's missing write permission binds nobody: drop the capabilities that
    override it (CAP_DAC_*), so root meets permissions as the image's user does."""
    if os.geteuid() != 0:
        return []
    dropped = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", dropped, "--inh-caps", dropped]


def child_env(uri: str, **extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": uri, **extra}
    env.pop("XDG_CACHE_HOME", None)
    return env


# --------------------------------------------------------------------------- steps that start together


@pytest.fixture
def fresh_tracking_server(tracking_server, tmp_path):
    """A new `mlflow server` on an empty database of its own (the session's PostgreSQL, the
    session's artifact bucket): no experiment, no run, as a new deployment has."""
    postgres = tracking_server.postgres
    database = f"fresh_{uuid.uuid4().hex[:10]}"
    admin = {**os.environ, "PGPASSWORD": postgres.password}
    where = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "mlflow"]
    subprocess.run([str(postgres.bindir / "createdb"), *where, database], env=admin, check=True, timeout=60)
    server = MlflowServer(
        postgres.uri.rsplit("/", 1)[0] + f"/{database}",
        f"s3://{tracking_server.bucket}",
        tracking_server.env,
        tmp_path / "fresh-mlflow",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        subprocess.run([str(postgres.bindir / "dropdb"), *where, database], env=admin, timeout=60)


GROUPS = ("cascade", "progan", "l2_loss")


def test_steps_starting_together_share_one_experiment_pipeline_run_and_model_runs(fresh_tracking_server, tmp_path):
    """Six stage processes (three models, two stages each) start together, twice: on the fresh
    server (no experiment yet), then as a new pipeline run in the experiment the first made."""
    uri = fresh_tracking_server.url
    script = tmp_path / "stage.py"
    script.write_text(STAGE_PROCESS)
    experiment = f"race-{uuid.uuid4().hex[:8]}"
    stages = [f"{group}/stage_{n}" for group in GROUPS for n in (8, 16)]
    client = MlflowClient(uri)
    for round_ in ("fresh server", "experiment exists"):
        key = f"race-{uuid.uuid4().hex[:12]}"
        processes = start_stages(script, stages, key, experiment, child_env(uri), tmp_path)
        release(processes)
        ran = {stage: finish(process)["run_id"] for stage, process in zip(stages, processes, strict=True)}

        [found] = [e for e in client.search_experiments(view_type=ViewType.ALL) if e.name == experiment]
        everything = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
        live = [run for run in everything if run.info.lifecycle_stage == "active"]
        [parent] = [run for run in live if run.data.tags.get(tracking.KEY_TAG) == key]
        models = {
            run.data.tags["facectx.model_run"]: run
            for run in live
            if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        assert sorted(models) == sorted(GROUPS), round_
        assert len([run for run in live if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]) == 3
        for stage, run_id in ran.items():
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.data.tags["facectx.stage"] == stage
            assert run.data.tags["mlflow.parentRunId"] == models[stage.split("/")[0]].info.run_id, round_
        assert [run.info.run_id for run in everything if run.info.status == "RUNNING"] == [], round_
        retired = [run for run in everything if run.info.lifecycle_stage == "deleted"]
        kept = {run.info.run_id for run in live}
        assert all(run.data.tags["facectx.duplicate_of"] in kept for run in retired), round_
        print(f"{round_}: {len(retired)} duplicate parent/model runs created and retired")


def test_a_step_does_not_take_a_pipeline_run_that_an_earlier_stamped_one_still_in_flight_will_retire(
    tmp_path, monkeypatch
):
    """The race CI met: step X's parent run is listed; step Z's, stamped earlier, lands a moment
    later and is the one kept (X's creator retires its own). A step that searched in between must
    not be handed X's run: it waits until the earliest it saw is settled, and searches again."""
    from facectx.tracking import shared_runs

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("race", artifact_location=(tmp_path / "a").as_uri())
    key = "in-flight"
    stamped = int(time.time() * 1000)
    by_x = client.create_run(experiment_id, tags={tracking.KEY_TAG: key}, start_time=stamped).info.run_id
    landed, pause = [], time.sleep

    def z_lands_while_waiting(seconds):  # Z's request, stamped before X's, lands during the wait
        if not landed:
            tags = {tracking.KEY_TAG: key}
            landed.append(client.create_run(experiment_id, tags=tags, start_time=stamped - 50).info.run_id)
        pause(min(seconds, 0.05))

    monkeypatch.setattr(shared_runs.time, "sleep", z_lands_while_waiting)
    kept = shared_runs.pipeline_run(client, experiment_id, key)
    assert landed and kept == landed[0] != by_x
    assert shared_runs.pipeline_run(client, experiment_id, key) == kept  # settled now: found at once


# --------------------------------------------------------------------------- a read-only working directory


@pytest.fixture
def read_only_workdir():
    """A working directory nobody may write into, and a home folder that may be written: what the
    image's user (uid 10001) meets in a root-owned WORKDIR. Outside pytest's private tmp root, so
    a process without root's overrides can reach them."""
    root = Path(tempfile.mkdtemp(prefix="facectx-readonly-"))
    workdir, home = root / "work", root / "home"
    workdir.mkdir()
    home.mkdir()
    os.chmod(root, 0o755)
    os.chmod(workdir, 0o555)
    try:
        yield workdir, home
    finally:
        os.chmod(workdir, 0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_outage_spool_from_a_read_only_working_directory_is_written_and_sent_later(
    tracking_server, read_only_workdir, tmp_path
):
    workdir, home = read_only_workdir
    script = workdir.parent / "stage.py"
    script.write_text(STAGE_PROCESS)
    env = child_env(
        tracking_server.url, HOME=str(home), MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0"
    )
    key, experiment = f"readonly-{uuid.uuid4().hex[:12]}", tracking.DEFAULT_EXPERIMENT
    [stage] = start_stages(script, ["cascade/stage_8"], key, experiment, env, workdir, mode="outage")
    release([stage])
    wait_for_line(stage, "logged")
    tracking_server.kill()  # the server goes away mid-stage
    release([stage])
    first = finish(stage)
    spool = Path(first["spool"])
    assert spool == home / ".cache" / "facectx" / tracking.SPOOL_DIR / first["run_id"]
    assert (spool / tracking.SPOOL_FILE).is_file() and "replayed_ms" not in json.loads(
        (spool / tracking.SPOOL_FILE).read_text()
    )
    assert list(workdir.iterdir()) == []  # nothing could be, or was, written there

    tracking_server.start()  # back: the next stage, from the same folder, sends the spool first
    [second] = start_stages(script, ["cascade/stage_16"], key, experiment, env, workdir)
    release([second])
    finish(second)
    assert json.loads((spool / tracking.SPOOL_FILE).read_text())["replayed_ms"]
    client = MlflowClient(tracking_server.url)
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["facectx.after_outage"] == "yes"
    assert run.data.tags["facectx.tracking_spool"] == str(spool)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(0, 1.0), (1, 0.5)]


def test_an_explicit_spool_folder_that_cannot_be_written_is_an_error_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ValueError, match=f"tracking.spool_folder '{tmp_path}/a-file/spool'.* cannot be written"):
        tracking.spool_root(str(tmp_path / "a-file" / "spool"), tmp_path)
    assert tracking.spool_root(str(tmp_path / "spool"), "ignored") == tmp_path / "spool"
    assert tracking.spool_root("", tmp_path / "runs") == tmp_path / "runs" / tracking.SPOOL_DIR


# --------------------------------------------------------------------------- a killed attempt


def test_a_stage_killed_mid_run_is_closed_by_its_next_attempt(prepared_data, params, tmp_path, monkeypatch):
    """A training process SIGKILLed mid-stage (a preempted pod) cannot end its MLflow run; the
    stage's next attempt (same pipeline run, same stage) marks it KILLED, superseded by its own."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    tiny = fast_tiny_params(params)
    tiny = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=(20, 1, 1, 1, 1)))  # 20 steps
    env = child_env(uri)
    models = tmp_path / "attempts" / "models"
    models.parent.mkdir()
    first = _train_in_subprocess(tiny, prepared_data, models, env)  # same settings, data: same pipeline run
    client = MlflowClient(uri)
    killed = _wait_for_a_logged_step(client, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert client.get_run(killed).info.status == "RUNNING"  # what a preempted pod leaves behind

    second = _train_in_subprocess(tiny, prepared_data, models, env)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    runs = client.search_runs([experiment], run_view_type=ViewType.ALL)
    attempts = [run for run in runs if run.data.tags.get("facectx.stage") == "cascade/stage_8"]
    [old] = [run for run in attempts if run.info.run_id == killed]
    [new] = [run for run in attempts if run.info.run_id != killed]
    assert old.info.status == "KILLED" and old.data.tags["facectx.superseded_by"] == new.info.run_id
    assert new.info.status == "FINISHED" and new.data.tags["facectx.supersedes"] == killed
    assert old.data.tags["mlflow.parentRunId"] == new.data.tags["mlflow.parentRunId"]
    assert [run.info.run_id for run in runs if run.info.status == "RUNNING"] == []  # pipeline and model runs too


def _wait_for_a_logged_step(client, process, timeout=300) -> str:
    """The id of the stage run `process` opened, once it has logged a training step."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
        if experiment is not None:
            for run in client.search_runs([experiment.experiment_id], "tags.`facectx.stage` = 'cascade/stage_8'"):
                if "loss_rec" in run.data.metrics:
                    return run.info.run_id
        time.sleep(0.05)
    raise AssertionError(f"no training step logged (exit code {process.poll()}): {process.stdout.read()}")
