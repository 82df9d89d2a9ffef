"""facectx.tracking's backends behind one protocol: stage_run picks one by name from BACKENDS (a
new backend is one class and one entry there), and where tracking goes is an argument, with the
user's environment read when it is needed, never at import."""

from __future__ import annotations

import contextlib
import json

import pytest

from facectx import tracking
from facectx.config import TrackingConfig


class MemoryTracker:
    """A backend in a few lines: what a stage logs, kept in a list."""

    opened: list[MemoryTracker] = []

    def __init__(self, spec: tracking.StageSpec):
        self.spec, self.records, self.status = spec, [], None

    @classmethod
    @contextlib.contextmanager
    def open_stage(cls, spec):
        tracker = cls(spec)
        cls.opened.append(tracker)
        with tracking.closed_at_exit(tracker):
            yield tracker

    def log_metrics(self, metrics, step):
        self.records.append(("metrics", metrics, step))

    def log_image(self, image, artifact_file):
        self.records.append(("image", artifact_file))

    def log_artifacts(self, folder):
        self.records.append(("artifacts", str(folder)))

    def set_tags(self, tags):
        self.records.append(("tags", tags))

    def close(self, status):
        self.status = status


def test_a_new_backend_is_one_class_and_one_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(tracking.BACKENDS, "memory", MemoryTracker)
    config = TrackingConfig(backend="memory", folder=str(tmp_path / "runs"), experiment="facectx")
    with tracking.stage_run("key-1", "cascade/stage_8", {"a": {"b": 1}}, {"t": "v"}, config=config) as tracker:
        tracker.log_metrics({"loss": 1.5}, step=3)
    assert tracker.status == "FINISHED" and tracker.records == [("metrics", {"loss": 1.5}, 3)]
    assert tracker.spec.params == {"a.b": 1} and tracker.spec.tags == {"facectx.stage": "cascade/stage_8", "t": "v"}
    with pytest.raises(RuntimeError), tracking.stage_run("key-1", "evaluate", {}, config=config):
        raise RuntimeError("the stage failed")
    assert MemoryTracker.opened[-1].status == "FAILED"
    nowhere = TrackingConfig(backend="nowhere", folder=str(tmp_path), experiment="facectx")
    with (
        pytest.raises(ValueError, match="tracking.backend 'nowhere': expected one of folder, memory, mlflow"),
        tracking.stage_run("key-1", "evaluate", {}, config=nowhere),
    ):
        pass


def test_folder_backend_records_a_stage_in_the_configured_experiment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACECTX_EXPERIMENT", "from-env")  # no longer read: the setting decides
    config = TrackingConfig(backend="folder", folder=str(tmp_path / "runs"), experiment="faces-test")
    with tracking.stage_run("key-2", "cascade/stage_8", {"a": 1}, config=config) as tracker:
        tracker.log_metrics({"loss": 0.25}, step=1)
        tracker.set_tags({"facectx.capped": "false"})
    folder = tmp_path / "runs" / "key-2"
    assert json.loads((folder / "pipeline.json").read_text())["experiment"] == "faces-test"
    run = json.loads((folder / "cascade" / "stage_8" / "run.json").read_text())
    assert run["status"] == "FINISHED" and run["params"] == {"a": "1"}
    assert run["tags"] == {"facectx.stage": "cascade/stage_8", "facectx.capped": "false"}
    assert (folder / "cascade" / "stage_8" / "metrics.csv").read_text().splitlines()[1].endswith(",loss,0.25")


def test_the_experiment_is_an_argument_and_the_server_the_users_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("FACECTX_EXPERIMENT", "from-env")  # not a facectx setting any more: ignored
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.experiment_name() == tracking.DEFAULT_EXPERIMENT == "facectx"
    assert tracking.experiment_name("given") == "given"
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")  # set after import: honoured
    assert tracking.tracking_uri() == "http://tracking.example:5000"
    assert tracking.tracking_uri("sqlite:///given.db") == "sqlite:///given.db"
