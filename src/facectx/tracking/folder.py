"""The folder backend: a stage's records in a folder, no MLflow needed (an air-gapped GPU node, or
`tracking.backend: folder`). Params, tags, metrics per step with their times, images and
artifacts, system information go under <tracking.folder>/<pipeline key>/<stage>/, written as they
happen so a killed run keeps what it measured; `facectx airgap import` replays such folders into
MLflow (airgap_import.py). The MLflow backend spools into the same layout during an outage."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facectx.io_utils import write_json, write_png
from facectx.tracking.protocol import StageSpec, closed_at_exit
from facectx.tracking.util import now_ms

log = logging.getLogger(__name__)

RUN_FILE, METRICS_FILE, ARTIFACTS = "run.json", "metrics.csv", "artifacts"
PIPELINE_FILE = "pipeline.json"


class FolderTracker:
    """What training and evaluation report, into a folder (no MLflow needed):

    run.json      name, params (flattened), tags, status, start/end times, system information
    metrics.csv   step,timestamp_ms,key,value — one line per value, appended as it is logged
    artifacts/    images and copied folders, at their MLflow artifact paths
    """

    def __init__(self, folder: Path, name: str, params: dict[str, str], tags: dict[str, str]):
        self.folder = Path(folder)
        (self.folder / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        self.run = {
            "name": name,
            "params": {k: str(v) for k, v in params.items()},
            "tags": dict(tags),
            "status": "RUNNING",
            "start_time_ms": now_ms(),
            "end_time_ms": None,
            "system": system_info(),
        }
        self._write_run()
        # Open for the stage's life (closed by close()), line-buffered: a kill loses at most a line.
        self._metrics = open(self.folder / METRICS_FILE, "a", buffering=1)  # noqa: SIM115
        if self._metrics.tell() == 0:
            self._metrics.write("step,timestamp_ms,key,value\n")

    @classmethod
    @contextlib.contextmanager
    def open_stage(cls, spec: StageSpec) -> Iterator[FolderTracker]:
        """A stage folder under the pipeline run's folder <spec.folder>/<key>/."""
        pipeline = spec.folder / safe_name(spec.key) / PIPELINE_FILE
        if not pipeline.is_file():
            write_json(pipeline, {"key": spec.key, "experiment": spec.experiment, "created_ms": now_ms()})
        folder = folder_stage_path(spec.folder, spec.key, spec.name)
        with closed_at_exit(cls(folder, spec.name, spec.params, spec.tags)) as tracker:
            yield tracker

    def _write_run(self) -> None:
        write_json(self.folder / RUN_FILE, self.run)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = now_ms()
        for key, value in metrics.items():
            self._metrics.write(f"{step},{now},{key},{float(value)!r}\n")

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        write_png(self._artifact(artifact_file), image)

    def log_artifacts(self, folder: str | os.PathLike) -> None:
        shutil.copytree(folder, self.folder / ARTIFACTS, dirs_exist_ok=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run["tags"].update({k: str(v) for k, v in tags.items()})
        self._write_run()

    def close(self, status: str) -> None:
        self._metrics.close()
        self.run.update(status=status, end_time_ms=now_ms())
        if _cuda_used():
            torch = sys.modules["torch"]
            self.run["system"]["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self._write_run()

    def _artifact(self, artifact_file: str) -> Path:
        path = (self.folder / ARTIFACTS / artifact_file).resolve()
        if not path.is_relative_to((self.folder / ARTIFACTS).resolve()):
            raise ValueError(f"artifact path {artifact_file!r} leaves the run folder")
        return path


def _cuda_used() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


def system_info() -> dict:
    """Where a run ran: what MLflow's system tags and metrics would tell, as a snapshot."""
    # torch is heavy: imported when a run starts, so that importing facectx.tracking stays light.
    import torch

    info = {
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    return info


def safe_name(name: str) -> str:
    """A folder name that stays one folder: no separators, never "." or ".."."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if safe.strip(".") else "_"


def folder_stage_path(root: str | os.PathLike, key: str, stage_name: str) -> Path:
    """<root>/<key>/<stage parts>; a stage tracked again (a resumed run) gets a numbered sibling."""
    base = Path(root) / safe_name(key)
    for part in stage_name.split("/"):
        base = base / safe_name(part)
    path, n = base, 1
    while (path / RUN_FILE).is_file():
        n += 1
        path = base.with_name(f"{base.name}.{n}")
    return path


def read_metrics(path: Path) -> list[tuple[int, int, str, float]]:
    """(step, timestamp_ms, key, value) rows; a last line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(",")
        try:
            rows.append((int(parts[0]), int(parts[1]), parts[2], float(parts[3])))
        except (IndexError, ValueError):
            log.warning("%s: skipping a partial line %r", path, line)
    return rows
