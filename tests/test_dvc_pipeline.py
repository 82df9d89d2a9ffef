"""`dvc repro` runs the whole pipeline through the CLI on real photos — with a 256 px stage added
in params.yaml alone — and a second run (and `dvc status`) finds nothing to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from conftest import REPO


def _run(args, cwd, env=None):
    # Generous: the whole pipeline takes ~4 minutes alone on 2 cores, several times that on a loaded machine.
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _project_copy(tmp_path: Path) -> Path:
    """The repository's tracked files in a fresh git repo (what a clean clone holds)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    project = tmp_path / "project"
    for name in filter(None, files):
        target = project / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / os.fsdecode(name)).is_file():
            shutil.copy(REPO / os.fsdecode(name), target)
    for extra in ("params.yaml", "dvc.yaml", ".dvc/config"):  # uncommitted edits count too
        shutil.copy(REPO / extra, project / extra)
    _run(["git", "init", "-q"], project)
    return project


TINY_PROFILE = {
    "model": {"width": 4, "max_width": 8, "disc_width": 4, "disc_max_layers": 2},
    "train": {
        "epochs": [1] * 6,
        "batch_size": [4] * 6,
        "max_train_rows": 8,
        "val_rows": 2,
        "grid_rows": 2,
        "log_every_steps": 1,
        "checkpoint_every_steps": 2,
        "device": "cpu",
    },
}


# params.yaml's lists that hold one entry per train.stages entry: (section, key).
PER_STAGE_LISTS = (
    ("train", "epochs"),
    ("train", "batch_size"),
    ("losses", "lambda_adv"),
    ("losses", "lambda_id"),
    ("losses", "lambda_pc"),
    ("losses", "lambda_fm"),
)


def add_stage_256(params: dict) -> None:
    """What a user edits in params.yaml to train one resolution further: nothing else changes."""
    params["crop"]["size_px"] = 256
    params["prepare"]["resolutions"].append(256)
    params["train"]["stages"].append(256)
    for section, key in PER_STAGE_LISTS:
        params[section][key].append(params[section][key][-1])


def test_dvc_repro_runs_the_pipeline_then_has_nothing_to_do(sample_source, tmp_path):
    project = _project_copy(tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["source"] = str(sample_source)
    params["validate"]["workers"] = params["prepare"]["workers"] = 1
    params["validate"]["min_valid_fraction"] = 0.5  # a dozen photos: one duplicate is 8%
    params["prepare"]["split"]["val_fraction"] = 0.4  # six training people: keep some for validation
    params["profiles"]["tiny"] = TINY_PROFILE
    add_stage_256(params)
    params["profile"] = "tiny"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the embedded default store
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    dvc = str(bin_dir / "dvc")

    _run([dvc, "repro"], project, env)
    prepared = project / "data" / "prepared"
    metrics = json.loads((prepared / "metrics.json").read_text())
    photos = len(list(sample_source.rglob("*.jpg")))
    assert metrics["photos_found"] == photos == metrics["prepared"] + metrics["quarantined"]
    # LFW's lists: DevTest people are the test split, DevTrain people train or val.
    test_people = set(pd.read_parquet(prepared / "test" / "index.parquet").identity)
    dev_test = {
        line.split("\t")[0] for line in (sample_source.parent / "peopleDevTest.txt").read_text().splitlines()[1:]
    }
    assert test_people and test_people <= dev_test
    train = pd.read_parquet(prepared / "train" / "index.parquet")
    assert train.mirrored.sum() == (~train.mirrored).sum()  # one mirrored copy per training photo
    assert not set(train.identity) & test_people
    target = np.load(prepared / "train" / "target_256.npy", mmap_mode="r")
    assert target.shape[0] == len(train) and target.dtype == np.uint8
    assert (prepared / "preview.png").stat().st_size > 0
    assert target.shape[1:] == (256, 256, 3)  # crop.size_px
    for stage in (8, 16, 32, 64, 128, 256):
        stage_metrics = json.loads((project / "models" / "cascade" / f"stage_{stage}" / "metrics.json").read_text())
        assert stage_metrics["stage"] == stage and 0 < stage_metrics["val_ssim"] <= 1
    summary = json.loads((project / "models" / "metrics" / "cascade.json").read_text())
    assert set(summary) == {f"stage_{s}" for s in (8, 16, 32, 64, 128, 256)}
    assert not any("seconds" in key for stage in summary.values() for key in stage)  # metrics, not timings
    assert (project / "mlflow.db").is_file()  # the embedded MLflow store
    # params `compare` names the ProGAN variant: trained beside the cascade, scored in the same report
    variant = json.loads(
        (project / "models" / "variants" / "progan" / "stage_256" / "checkpoint" / "meta.json").read_text()
    )
    assert variant["model_args"]["kind"] == "progan" and variant["stage"] == 256
    evaluation = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    assert {"cascade", "progan"} <= set(evaluation["methods"])

    # The main pipeline (dvc.yaml); hallucinate/dvc.yaml's stage runs only when named, so a bare
    # `dvc status` lists it as not run (and always changed: its registry alias can move).
    assert "Data and pipelines are up to date" in _run([dvc, "status", "dvc.yaml"], project, env)
    again = _run([dvc, "repro"], project, env)
    assert "Running stage" not in again, again
    _run([dvc, "push"], project, env)  # to the default remote: a local folder
    assert any((project / "dvc-remote").rglob("*"))

    # A new photo at the source: ingest notices, the data steps run again.
    person = next(p for p in sample_source.iterdir() if p.is_dir())
    shutil.copy(next(person.iterdir()), person / "copy_0099.jpg")
    rerun = _run([dvc, "repro", "prepare"], project, env)
    assert "Running stage 'ingest'" in rerun and "Running stage 'prepare'" in rerun
    quarantine = pd.read_parquet(prepared / "quarantine.parquet")
    assert "unique_content" in set(quarantine.check)  # the copy has the same pixels as its original
