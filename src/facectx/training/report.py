"""Where a stage's numbers go, on rank 0: the loss curve (losses.csv), the log, the tracker
(MLflow or the folder backend), and at the end metrics.json; and what they are built from: the
per-term gradient report."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facectx.io_utils import write_json
from facectx.losses import reference_term
from facectx.training import distributed

log = logging.getLogger(__name__)


def curve_columns(weights: dict[str, float], uses_critic: bool) -> list[str]:
    """losses.csv's columns: the same on every row (a term's gradient is measured on some rows
    only). The terms on at this stage in the loss registry's order, with the critic's loss first
    when a term trains against it."""
    reference = reference_term()
    terms = (["critic"] if uses_critic else []) + list(weights) + ["total"]
    return (
        [f"loss_{k}" for k in terms]
        + [f"grad_{k}" for k in weights]
        + [f"share_{k}" for k in weights if k != reference]
    )


def mean_over_ranks(values: dict[str, torch.Tensor], over_ranks: bool) -> dict[str, torch.Tensor]:
    """Per-rank sums of per-shard means -> their mean over ranks: the global batch's (one
    all_reduce, at logging steps only); the values themselves with one process."""
    if not over_ranks or not values:
        return values
    names = list(values)
    return dict(zip(names, distributed.mean_over_ranks(torch.stack([values[k] for k in names]))))


def gradient_report(norms: dict[str, torch.Tensor]) -> dict[str, float]:
    """grad_<term>: its gradient's norm; share_<term>: that over the reference (reconstruction)
    term's. Empty when nothing was measured since the last report."""
    if not norms:
        return {}
    reference = reference_term()
    values = {k: float(v) for k, v in norms.items()}
    return {
        **{f"grad_{k}": v for k, v in values.items()},
        **{f"share_{k}": v / max(values[reference], 1e-12) for k, v in values.items() if k != reference},
    }


@dataclass
class StageResult:
    """What a stage's run returns (rank 0's numbers, on every rank)."""

    stage: int
    checkpoint: Path
    steps: int
    train_seconds: float
    images_per_second: float
    val: dict[str, float]
    capped: bool  # stopped by the wall-clock cap before its planned steps


class StageReport:
    """One stage's reporting. curve: losses.csv's path (beside the resume state when there is
    one, so a resumed run's curve is whole); main: this process writes and logs (rank 0);
    tracker: MLflow's (or the folder backend's) stage run, or None."""

    def __init__(self, stage: int, curve: Path, columns: list[str], tracker, main: bool):
        self.stage, self.curve, self.columns, self.tracker, self.main = stage, curve, columns, tracker, main

    def trim(self, step: int) -> None:
        """Keep the loss curve's rows up to the step training starts from: rows logged after the
        last resume state are logged again, and a fresh start begins a fresh curve."""
        if not self.main or not self.curve.is_file():
            return
        if step == 0:
            self.curve.unlink()
            return
        header, *rows = self.curve.read_text().splitlines()
        kept = [row for row in rows if row.count(",") == header.count(",") and int(row.split(",")[0]) <= step]
        self.curve.write_text("\n".join([header, *kept]) + "\n")

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        """A row of losses.csv (the metrics that are its columns), a log line, the tracker's metrics."""
        if not self.main:
            return
        row = {k: v for k, v in metrics.items() if k in self.columns}
        if row:
            self.curve.parent.mkdir(parents=True, exist_ok=True)
            new = not self.curve.is_file()
            with open(self.curve, "a") as handle:
                if new:
                    handle.write("step," + ",".join(self.columns) + "\n")
                handle.write(f"{step}," + ",".join(f"{row[k]:.6g}" if k in row else "" for k in self.columns) + "\n")
        log.info("stage %d step %d: %s", self.stage, step, {k: round(v, 4) for k, v in metrics.items()})
        if self.tracker:
            self.tracker.log_metrics(metrics, step)

    def image(self, grid: np.ndarray, epoch: int) -> None:
        if self.tracker:
            self.tracker.log_image(grid, f"samples/stage_{self.stage}_epoch_{epoch:03d}.png")

    def results(
        self,
        out_dir: Path,
        step: int,
        planned_steps: int,
        capped: bool,
        train_seconds: float,
        rate: float,  # images per second
        cuda_graphs: bool,  # the step ran as a recorded CUDA graph (at the end)
        graph_failure: str | None,  # why the CUDA graph was given up, if it was
        val: dict[str, float],
        settled,  # standing.SettledWeights: the weight choices, their validation and eval/train gaps
    ) -> None:
        """metrics.json and the loss curve beside it; the run's throughput and cap, and the other
        weight choices' validation, in the tracker. val_* are the live weights' with running
        statistics (val_weights), as every epoch's validation."""
        metrics = {
            "stage": self.stage,
            "steps": step,
            "planned_steps": planned_steps,
            "capped": capped,
            "train_seconds": round(train_seconds, 2),
            "images_per_second": round(rate, 1),
            "cuda_graphs": cuda_graphs,
            **({"cuda_graph_failure": graph_failure} if graph_failure else {}),
            **val,
            "val_weights": "running",
            "weights": settled.available,
            **settled.metrics,
        }
        write_json(out_dir / "metrics.json", metrics)
        if self.curve.parent != out_dir and self.curve.is_file():
            shutil.copy(self.curve, out_dir / "losses.csv")
        if self.tracker:
            tracked = {"images_per_second": rate, "train_seconds": train_seconds, "planned_steps": planned_steps}
            self.tracker.log_metrics({**tracked, **settled.metrics, "capped": float(capped)}, step)
            self.tracker.set_tags({"facectx.capped": str(capped).lower()})
