"""What training and evaluation talk to (StageTracker), and what a tracking backend is: a class
that opens a stage's tracker from a StageSpec (TrackingBackend). stage.BACKENDS names them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


class StageTracker(Protocol):
    """What a training stage or an evaluation reports while it runs."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_image(self, image: np.ndarray, artifact_file: str) -> None: ...

    def log_artifacts(self, folder: str | os.PathLike) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def close(self, status: str) -> bool | None:
        """The stage's end, FINISHED or FAILED (stage_run's backends call it)."""


@dataclass(frozen=True)
class StageSpec:
    """One stage to track: the pipeline run's key, the stage's name (`model/stage_N`, or
    `evaluate`), its params (flattened) and tags, and where tracking goes."""

    key: str
    name: str
    params: dict[str, object]
    tags: dict[str, str]
    folder: Path  # tracking.folder: run folders (folder backend), the outage spool's default root (MLflow)
    tracking_uri: str
    experiment: str
    spool_folder: str = ""  # tracking.spool_folder: the MLflow backend's outage spool ("": settings.spool_root's)
    # Tags the stage's run shares with every run above it (the pipeline run, its model's run): the
    # data version, which the whole pipeline run was made from. The folder backend keeps them as tags.
    lineage_tags: dict[str, str] = field(default_factory=dict)


class TrackingBackend(Protocol):
    """A tracking backend: a StageTracker class that opens itself for a stage, closing itself
    with the stage's outcome when the block ends (FAILED if it raised, else FINISHED)."""

    @classmethod
    def open_stage(cls, spec: StageSpec) -> AbstractContextManager[StageTracker]: ...


@contextlib.contextmanager
def closed_at_exit(tracker: StageTracker) -> Iterator[StageTracker]:
    """Close a stage's tracker with the stage's outcome: FAILED if it raised, else FINISHED."""
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")
