"""Every folder the pipeline writes, named once (paths only, no I/O).

The data areas; each trained model's folders: its stages (stage_N/checkpoint, stage N's outputs,
starting from the previous stage's checkpoint), its resume state and its per-stage metrics; the
evaluation report. The cascade is the model named CASCADE; each of params' variants (the ProGAN
variant, the ablations) is a model named after its variant.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CASCADE = "cascade"  # the paper's model, trained and scored beside params' `compare` variants
CHECKPOINT = "checkpoint"  # a stage folder's checkpoint folder

RAW_DIR = "data/raw"
VALIDATED_DIR = "data/validated"
PREPARED_DIR = "data/prepared"
EVAL_DIR = "reports/evaluation"
MODELS_ROOT = "models"


def stage_folder(stage: int | str) -> str:
    """Stage N's folder name (also a resume prefix's last part)."""
    return f"stage_{stage}"


def checkpoint_dir(stage_dir: str | os.PathLike) -> Path:
    """The checkpoint folder of a stage's output folder."""
    return Path(stage_dir) / CHECKPOINT


def stage_dirs(
    models_dir: str | os.PathLike, stage: int, previous: int | None, resume_root: str | os.PathLike | None = None
) -> dict:
    """One model's stage: models_dir/stage_N holds stage N's outputs and starts from
    models_dir/stage_<previous>/checkpoint; resume state in resume_root/stage_N (default:
    models_dir/resume). The keys are train_stage_step's arguments."""
    models_dir = Path(models_dir)
    return {
        "out_dir": models_dir / stage_folder(stage),
        "init_dir": checkpoint_dir(models_dir / stage_folder(previous)) if previous else None,
        "resume_dir": resume_dir(resume_root or models_dir / "resume", stage),
    }


def resume_dir(resume_root: str | os.PathLike, stage: int) -> Path:
    """Stage N's resume state under a model's resume folder."""
    return Path(resume_root) / stage_folder(stage)


def final_checkpoint(models_dir: str | os.PathLike, stages: Iterable[int]) -> Path:
    """The last stage's checkpoint folder under models_dir: the finished model."""
    return checkpoint_dir(Path(models_dir) / stage_folder(max(stages)))


def evaluated_models(compare: Iterable[str]) -> list[str]:
    """The models an evaluation scores, in order: the cascade, then each compared variant."""
    return [CASCADE, *compare]


@dataclass(frozen=True)
class ModelLayout:
    """Where each model keeps its stages, resume state and metrics."""

    cascade: Path  # the cascade's folder
    variants: Path  # each variant's folder: variants/NAME
    resume: Path  # each model's resume state: resume/NAME/stage_N (outside DVC's outputs, which a re-run deletes)
    metrics: Path  # each model's per-stage validation metrics: metrics/NAME.json (DVC metrics)

    @classmethod
    def project(cls, root: str | os.PathLike = MODELS_ROOT) -> ModelLayout:
        """A project's (DVC's): root/cascade, root/variants/NAME, root/resume/NAME, root/metrics/NAME.json."""
        root = Path(root)
        return cls(root / CASCADE, root / "variants", root / "resume", root / "metrics")

    @classmethod
    def work_folder(cls, work: str | os.PathLike) -> ModelLayout:
        """An air-gapped run's work folder: every model in work/models/NAME, resume state in work/resume/NAME."""
        work = Path(work)
        models = work / MODELS_ROOT
        return cls(models / CASCADE, models, work / "resume", work / "metrics")  # metrics: unused there

    def model_dir(self, name: str = CASCADE) -> Path:
        return self.cascade if name == CASCADE else self.variants / name

    def resume_root(self, name: str = CASCADE) -> Path:
        return self.resume / name

    def metrics_file(self, name: str = CASCADE) -> Path:
        return self.metrics / f"{name}.json"

    def final_checkpoints(self, names: Iterable[str], stages: Iterable[int]) -> dict[str, str]:
        """Each named model's finished checkpoint folder, by name (what evaluation scores)."""
        stages = tuple(stages)
        return {name: str(final_checkpoint(self.model_dir(name), stages)) for name in names}


PROJECT = ModelLayout.project()  # the folders dvc.yaml declares
