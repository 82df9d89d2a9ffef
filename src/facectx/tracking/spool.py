"""The outage spool: what a stage logs while its MLflow server does not answer.

When the server (or its database) stops answering during a stage, training goes on: the MLflow
tracker (mlflow_backend.py) moves what the stage logs from then on into a spool folder,
<spool root>/<MLflow run id>/ (the FolderTracker layout, plus spool.json; the root is
settings.spool_root: tracking.spool_folder, else <tracking.folder>/mlflow-spool, else a folder of
the user's where the working directory cannot be written), and says so in a warning naming that folder. When the stage ends, the spool is sent to the same MLflow
run (every metric with its step and time, tags, images and artifacts, the run's final status) if
the server answers again; if not, the run stays RUNNING in MLflow, the warning names the folder,
and the next stage started with the same tracking URI and spool root sends it first (or call
replay_pending(<spool root>) by hand). A pod's disk is lost with the pod: there, a spool not
sent by the end of the stage is lost with it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from facectx.io_utils import write_json
from facectx.tracking.folder import ARTIFACTS, METRICS_FILE, RUN_FILE, FolderTracker, read_metrics
from facectx.tracking.server import TrackingUnavailable, redacted, unreachable_reason
from facectx.tracking.settings import SPOOL_DIR, tracking_uri
from facectx.tracking.util import now_ms, one_line

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.json"


def start_spool(folder: Path, run_id: str, stage: str, uri: str, err: BaseException) -> FolderTracker:
    """A spool folder for MLflow run `run_id`, which stopped answering with `err`; warns, naming it."""
    spool = FolderTracker(folder, stage, {}, {})
    record = {"tracking_uri": redacted(uri), "run_id": run_id, "stage": stage, "since_ms": now_ms()}
    write_json(folder / SPOOL_FILE, {**record, "error": one_line(err)})
    log.warning(
        "MLflow at %s stopped answering (%s): stage %s goes on, and what it logs from now on is kept in %s "
        "and sent to MLflow run %s when the server answers again",
        redacted(uri),
        one_line(err),
        stage,
        folder,
        run_id,
    )
    return spool


def replay_spool(folder: str | os.PathLike, uri: str | None = None) -> bool:
    """Send a stage's spool folder to its MLflow run (at `uri`, default tracking_uri()): every
    metric with its step and time, the tags, the artifacts, and the run's final status, plus tags
    naming the outage and the folder. True when sent (or sent before); False, with a warning naming
    the folder, when the server still does not answer or refuses it -- the folder is kept either way."""
    folder, uri = Path(folder), tracking_uri(uri)
    spool = json.loads((folder / SPOOL_FILE).read_text())
    if spool.get("replayed_ms"):
        return True
    reason = unreachable_reason(uri)
    try:
        if reason:
            raise TrackingUnavailable(reason)
        _send(folder, spool, uri)
    except Exception as err:  # the training is done and its records are safe on disk: say where, do not fail
        log.warning(
            "MLflow run %s (stage %s) is missing what was logged after %s stopped answering: it is kept in "
            "%s and is sent by the next stage that tracks to %s, or by tracking.replay_pending(%r) (%s)",
            spool["run_id"],
            spool.get("stage"),
            spool["tracking_uri"],
            folder,
            spool["tracking_uri"],
            str(folder.parent),
            one_line(err),
        )
        return False
    spool["replayed_ms"] = now_ms()
    write_json(folder / SPOOL_FILE, spool)
    log.info("sent the spooled records of %s to MLflow run %s", folder, spool["run_id"])
    return True


def _send(folder: Path, spool: dict, uri: str) -> None:
    # mlflow is optional (an air-gapped node tracks into folders): imported only to send.
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    run = json.loads((folder / RUN_FILE).read_text())
    client, run_id = MlflowClient(uri), spool["run_id"]
    metrics = read_metrics(folder / METRICS_FILE)
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=[Metric(k, v, t, s) for s, t, k, v in metrics[start : start + 1000]])
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(spool["since_ms"] / 1000))
    outage = {
        "facectx.tracking_spool": str(folder.resolve()),
        "facectx.tracking_outage": f"{spool['tracking_uri']} did not answer from {since} "
        f"({spool['error'][:200]}); {len(metrics)} metric values were spooled "
        "and sent later",
    }
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in {**run["tags"], **outage}.items()])
    artifacts = folder / ARTIFACTS
    if artifacts.is_dir() and any(artifacts.iterdir()):
        client.log_artifacts(run_id, str(artifacts))
    if run["status"] != "RUNNING":
        client.set_terminated(run_id, run["status"], run.get("end_time_ms"))


def replay_pending(root: str | os.PathLike, uri: str | None = None) -> dict[str, bool]:
    """Send every spool under `root` (a spool root: the folder named in the outage warning, above
    the run's folder; or a tracking.folder holding mlflow-spool/) that was made for tracking URI
    `uri` (default tracking_uri()) and is not sent yet; {folder: sent}."""
    root, uri = Path(root), tracking_uri(uri)
    spools = root / SPOOL_DIR if root.name != SPOOL_DIR and (root / SPOOL_DIR).is_dir() else root
    sent = {}
    for spool_file in sorted(spools.glob(f"*/{SPOOL_FILE}")):
        spool = json.loads(spool_file.read_text())
        if spool.get("replayed_ms") or spool.get("tracking_uri") != redacted(uri):
            continue
        sent[str(spool_file.parent)] = replay_spool(spool_file.parent, uri)
    return sent
