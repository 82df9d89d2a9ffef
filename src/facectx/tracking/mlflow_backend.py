"""The MLflow backend: a stage's run nested under its model's and pipeline's runs (mlflow_runs.py),
closing what an earlier, killed attempt of the stage left RUNNING (attempts.py), and a tracker that
keeps training going through a server outage (spool.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facectx.tracking.attempts import close_earlier_attempts
from facectx.tracking.folder import FolderTracker
from facectx.tracking.mlflow_runs import pipeline_parent, run_block
from facectx.tracking.protocol import StageSpec, closed_at_exit
from facectx.tracking.server import http_defaults, server_unavailable
from facectx.tracking.settings import spool_root
from facectx.tracking.spool import replay_pending, replay_spool, start_spool
from facectx.tracking.util import now_ms

# mlflow is imported inside the methods: it is optional where runs are tracked into folders (an
# air-gapped node), and facectx.tracking, which imports this module, must load there.


class MlflowTracker:
    """What training reports, into its MLflow run. When the tracking server stops answering (it
    is down, or its database is), the rest of the stage goes into a local spool folder instead of
    failing the training; close() sends the spool to the same run once the server answers again,
    or says where it is kept."""

    def __init__(self, run_id: str, spool_dir: str | os.PathLike, name: str, tracking_uri: str):
        self.run_id = run_id
        self.name = name
        self.spool_dir = Path(spool_dir)
        self.tracking_uri = tracking_uri
        self.spool: FolderTracker | None = None
        self._mlflow = None

    @classmethod
    @contextlib.contextmanager
    def open_stage(cls, spec: StageSpec) -> Iterator[MlflowTracker]:
        """Open (or reopen) the pipeline run for spec.key, the model's run under it (`model` of
        `model/stage_N`) and a nested run for this stage, which closes the stage's runs a killed
        attempt left RUNNING; spools under settings.spool_root(spec.spool_folder, spec.folder)."""
        import mlflow

        spools = spool_root(spec.spool_folder, spec.folder)
        group, _, _ = spec.name.rpartition("/")
        with http_defaults(), pipeline_parent(spec.key, group, spec.tracking_uri, spec.experiment) as (client, exp):
            replay_pending(spools, spec.tracking_uri)  # what an earlier stage could not send, now that it answers
            with run_block(spec.tracking_uri, run_name=spec.name, nested=True, log_system_metrics=True) as run:
                mlflow.log_params(spec.params)
                mlflow.set_tags(spec.tags)
                close_earlier_attempts(client, exp, run, spec.name)
                tag_ancestors(client, run, spec.lineage_tags)
                tracker = cls(run.info.run_id, spools / run.info.run_id, spec.name, spec.tracking_uri)
                with closed_at_exit(tracker):
                    yield tracker

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._record("log_metrics", metrics, step)

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        self._record("log_image", image, artifact_file)

    def log_artifacts(self, folder: str | os.PathLike) -> None:
        self._record("log_artifacts", folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._record("set_tags", tags)

    def close(self, status: str) -> bool:
        """End of the stage: send the spool, if there is one. True when MLflow has everything."""
        if self.spool is None:
            return True
        self.spool.close(status)
        return replay_spool(self.spool_dir, self.tracking_uri)

    def _record(self, method: str, *args) -> None:
        if self.spool is None:
            try:
                getattr(self, f"_mlflow_{method}")(*args)
                return
            except Exception as err:
                if not server_unavailable(err):
                    raise
                self.spool = start_spool(self.spool_dir, self.run_id, self.name, self.tracking_uri, err)
        # Once spooled, always spooled: the records stay in order, and replay sends them at once.
        getattr(self.spool, method)(*args)

    def _client(self):
        if self._mlflow is None:
            from mlflow.tracking import MlflowClient

            self._mlflow = MlflowClient(self.tracking_uri)
        return self._mlflow

    def _mlflow_log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = now_ms()
        self._client().log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def _mlflow_log_image(self, image: np.ndarray, artifact_file: str) -> None:
        self._client().log_image(self.run_id, image, artifact_file=artifact_file)

    def _mlflow_log_artifacts(self, folder: str | os.PathLike) -> None:
        self._client().log_artifacts(self.run_id, str(folder))

    def _mlflow_set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def tag_ancestors(client, run, tags: dict[str, str]) -> None:
    """`tags` on every run `run` nests under (its model's run, the pipeline run)."""
    parent = run.data.tags.get("mlflow.parentRunId")
    while tags and parent:
        for name, value in tags.items():
            client.set_tag(parent, name, value)
        parent = client.get_run(parent).data.tags.get("mlflow.parentRunId")
