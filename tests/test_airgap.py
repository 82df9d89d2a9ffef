"""The air-gapped GPU trip rehearsed on the CPU: pack real LFW rows here, run in a Python that
cannot import mlflow, dvc, kfp, great_expectations, dlib or boto3 (two tiny models at once, under
a wall-clock cap that triggers), import the results into MLflow, and the errors a person meets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, make_source
from facectx.airgap.format import DEFAULT_MAX_MIB, MAIN_SET, PackError, read_manifest
from facectx.airgap.pack import build_pack
from facectx.airgap.results import import_results
from facectx.airgap.unpack import unpack_set
from facectx.evaluation.carried import carried_rows
from facectx.evaluation.evaluate import REAL_VS_REAL

BLOCKED = ("mlflow", "dvc", "kfp", "great_expectations", "dlib", "boto3")
# Installed first in every Python the far run starts (its training subprocesses too), like a
# machine where these packages do not exist.
SITECUSTOMIZE = f"""
import sys

BLOCKED = {BLOCKED!r}


class _AirGap:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (air-gap rehearsal)", name=name)
        return None


sys.meta_path.insert(0, _AirGap())
"""


def tiny_params_file(folder: Path) -> Path:
    """The repo's params with a `tiny` profile (minute-sized models, a few test photos)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profiles"]["tiny"] = {
        "model": {"width": 4, "max_width": 8, "disc_width": 4, "disc_max_layers": 2},
        "train": {
            "epochs": [2, 2, 2, 2, 2],
            "batch_size": [4, 4, 4, 4, 4],
            "max_train_rows": 12,
            "val_rows": 4,
            "grid_rows": 2,
            "log_every_steps": 1,
            "checkpoint_every_steps": 2,
            "device": "cpu",
        },
        "evaluate": {"max_photos": 6, "batch_size": 8, "calibration_pairs": 0, "grid_photos": 2, "device": "cpu"},
    }
    raw["profile"] = "tiny"
    raw["tracking"]["experiment"] = "facectx-far"  # recorded by the far run, followed by the import
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def calibration_raw_dir(prepared: Path, folder: Path) -> Path:
    """A raw folder whose LFW pairs file names only the sample's photos, so the matcher is
    calibrated here (dlib finds the faces) and the threshold travels in the pack."""
    images = prepared.parent / "raw" / "images"
    people = {p.name: sorted(f.name for f in p.iterdir()) for p in sorted(images.iterdir())}
    index = lambda name: int(Path(name).stem.rsplit("_", 1)[1])  # noqa: E731
    same = [f"{n} {index(f[0])} {index(f[1])}" for n, f in people.items() if len(f) >= 2]
    names = list(people)
    diff = [f"{a} {index(people[a][0])} {b} {index(people[b][0])}" for a, b in zip(names, names[1:])]
    count = min(len(same), len(diff))
    (folder / "split_lists").mkdir(parents=True)
    (folder / "split_lists" / "pairsDevTrain.txt").write_text(
        "\n".join([str(count), *same[:count], *diff[:count]]) + "\n"
    )
    (folder / "images").symlink_to(images.resolve(), target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def pack(prepared_data, lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("airgap")
    params_file = tiny_params_file(root)
    extra = make_source(lfw_dir, root / "extra-source", train_people=0, test_people=2, max_photos=2)
    out = root / "pack"
    manifest = build_pack(
        params_file,
        out,
        prepared_data,
        prepared_data.parent / "validated",
        calibration_raw_dir(prepared_data, root / "calibration-raw"),
        test_sources=[str(extra)],
    )
    return out, manifest


def test_pack_holds_frames_landmarks_weights_and_calibration(pack, prepared_data, tmp_path):
    out, manifest = pack
    assert set(manifest["sets"]) == {MAIN_SET, "images"}
    assert manifest["bytes"] < DEFAULT_MAX_MIB * 2**20 and manifest["calibration"] == "calibration.json"
    assert 0 < json.loads((out / "calibration.json").read_text())["threshold"] < 1
    for split, part in manifest["sets"][MAIN_SET].items():
        assert part["psnr_db"] > 30, (split, part)  # WebP q90 of the 128 px frame
    # The far side rebuilds the shards: masks, landmarks and the mirrored copies exactly as prepare
    # made them; frames (and what is made from them) within the re-encoding's error.
    rebuilt = unpack_set(out, MAIN_SET, tmp_path / "rebuilt")
    for split in ("train", "val", "test"):
        for name in ("landmarks.npy", "mask_128.npy", "mask_8.npy", "valid_128.npy", "valid_8.npy"):
            assert np.array_equal(np.load(rebuilt / split / name), np.load(prepared_data / split / name)), (split, name)
        home, far = np.load(prepared_data / split / "target_8.npy"), np.load(rebuilt / split / "target_8.npy")
        assert home.shape == far.shape and np.abs(home.astype(int) - far.astype(int)).mean() < 2
    # The baselines' and real-vs-real rows, scored here once on the frames the far side rebuilds.
    assert set(manifest["reference"]) == set(manifest["sets"]) and manifest["profile"] == "tiny"
    reference = json.loads((out / manifest["reference"][MAIN_SET]).read_text())
    assert {"OpenCV Telea", "mean training context", REAL_VS_REAL} <= set(reference["methods"])
    assert reference["threshold"] == json.loads((out / "calibration.json").read_text())["threshold"]
    meta = json.loads((rebuilt / "meta.json").read_text())
    assert (
        meta["derived"]["from_pack"] == manifest["id"]
        and meta["rows"] == json.loads((prepared_data / "meta.json").read_text())["rows"]
    )


def test_rows_measured_otherwise_are_not_carried(pack):
    out, manifest = pack
    reference = json.loads((out / manifest["reference"][MAIN_SET]).read_text())
    facts = {k: reference[k] for k in ("test_set", "matcher", "fd_network", "perceptual_network", "threshold")}
    assert carried_rows(reference, facts) == reference["methods"]
    for key, other in (("test_set", "0123456789abcdef"), ("threshold", 0.5), ("fd_network", "standard FID: x")):
        with pytest.raises(ValueError, match=f"carried evaluation's {key}"):
            carried_rows(reference, {**facts, key: other})


def _far_environment(tmp_path: Path) -> dict:
    """No mlflow & co., no npm, an empty weights cache: the weights must come from the pack."""
    site = tmp_path / "airgap-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (site / "npm").write_text("#!/bin/sh\necho 'npm: no network here (air-gap rehearsal)' >&2\nexit 1\n")
    (site / "npm").chmod(0o755)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")]),
        "MLFLOW_TRACKING_URI": "",
        "PATH": os.pathsep.join([str(site), os.environ["PATH"]]),
        "FACECTX_CACHE_DIR": str(tmp_path / "empty-cache"),
    }


def test_the_whole_trip_on_the_cpu(pack, tmp_path, monkeypatch):
    out, manifest = pack
    env = _far_environment(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import mlflow"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "air-gap rehearsal" in probe.stderr  # the rehearsal really forbids them

    results = tmp_path / "results"
    far = subprocess.run(
        [
            sys.executable,
            "-m",
            "facectx.cli",
            "airgap",
            "run",
            str(out),
            "--models",
            "cascade,progan",
            "--parallel",
            "2",
            "--cap-minutes",
            "0.02",
            "--seed",
            "7",
            "--score-ways",
            "running,standing,ema",
            "--out",
            str(results),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert far.returncode == 0, far.stdout[-3000:] + far.stderr[-3000:]
    assert sorted(p.name for p in results.iterdir()) == ["progress.log", "report.html", "results.tar.gz", "summary.txt"]
    summary = (results / "summary.txt").read_text()
    assert "cascade" in summary and "progan" in summary and "OpenCV Telea" in summary
    assert "seed 7" in summary.splitlines()[0]
    log = (results / "progress.log").read_text()
    assert "capped at" in log  # the cap triggered and said so
    assert log.count("carried from the pack") == 2  # both sets: the far side scored no baseline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    imported = import_results(results / "results.tar.gz", out, tmp_path / "reports")
    assert imported["complete"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("facectx-far").experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([experiment])}
    parent = runs[imported["mlflow_parent_run"]]
    assert parent.data.tags["facectx.source"] == "airgap" and parent.data.tags["facectx.airgap.pack"] == manifest["id"]

    def children(run_id):
        return {r.info.run_name: r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == run_id}

    top = children(parent.info.run_id)
    assert set(top) == {"cascade", "progan", "evaluate-lfw", "evaluate-images"}
    for model in ("cascade", "progan"):
        stages = children(top[model].info.run_id)
        assert set(stages) == {f"{model}/stage_{r}" for r in (8, 16, 32, 64, 128)}
        stage = stages[f"{model}/stage_128"]
        assert stage.data.params["model.kind"] == model and stage.data.tags["facectx.system.torch"]
        assert stage.data.params["train.seed"] == "7"  # --seed reached the training
        assert stage.data.tags.get("facectx.capped") == "true"
        first = stages[f"{model}/stage_8"]
        history = client.get_metric_history(first.info.run_id, "loss_rec")
        assert len(history) >= 1 and all(np.isfinite(m.value) for m in history)
        assert "val_ssim" in first.data.metrics
        artifacts = [a.path for a in client.list_artifacts(first.info.run_id, "samples")]
        assert artifacts and artifacts[0].endswith(".png")
    evaluation = json.loads((tmp_path / "reports" / "evaluation" / "metrics.json").read_text())
    assert {"cascade", "progan", "OpenCV Telea", "mean training context"} <= set(evaluation["methods"])
    # Each model scored three ways (its own row is the EMA's: the best it holds), the carried rows
    # exactly the pack's.
    assert evaluation["weights"]["cascade"] == "ema" and evaluation["weights"]["cascade@running"] == "running"
    assert {"cascade@running", "cascade@standing", "progan@running"} <= set(evaluation["methods"])
    reference = json.loads((out / manifest["reference"][MAIN_SET]).read_text())
    assert evaluation["carried_rows"] == sorted(reference["methods"])
    for name, row in reference["methods"].items():
        assert evaluation["methods"][name] == row, name
    assert evaluation["threshold"] is not None and "verified" in evaluation["methods"]["cascade"]
    assert (tmp_path / "reports" / "evaluation-images" / "report.html").is_file()
    assert "cascade" in imported["table"] and "images" in imported["table"]

    with pytest.raises(ValueError, match="already in MLflow"):
        import_results(results / "results.tar.gz", out, tmp_path / "reports")


def test_bad_packs_and_archives_are_refused_by_name(pack, prepared_data, tmp_path):
    out, manifest = pack
    with pytest.raises(PackError, match="over the 1 MiB budget"):
        build_pack(
            out / "params.yaml",
            tmp_path / "small",
            prepared_data,
            prepared_data.parent / "validated",
            tmp_path,
            max_mib=1,
        )
    assert not (tmp_path / "small").exists() and not list(tmp_path.glob(".small*"))  # nothing half-written left

    other = tmp_path / "other-version"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("sets", "weights"))
    stamped = json.loads((other / "pack.json").read_text())
    (other / "pack.json").write_text(json.dumps({**stamped, "code": "0123456789abcdef"}))
    with pytest.raises(PackError, match="another version of facectx"):
        read_manifest(other)

    from facectx.airgap.run import run

    with pytest.raises(PackError, match="each model must be 'cascade' or one of the pack's variants"):
        run(out, ["cascade", "no_such_model"], tmp_path / "results")

    archive = tmp_path / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        status = tmp_path / "results.json"
        status.write_text(
            json.dumps(
                {
                    "pack_id": "another-pack",
                    "run_id": "r",
                    "pipeline_key": "k",
                    "models": {},
                    "evaluations": {},
                    "complete": True,
                    "profile": "tiny",
                }
            )
        )
        tar.add(status, arcname="results.json")
    with pytest.raises(PackError, match="comes from pack another-pack"):
        import_results(archive, out, tmp_path / "reports")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(PackError, match="truncated or damaged"):
        import_results(truncated, out, tmp_path / "reports")


def test_tracking_switched_off_records_the_run_in_a_folder(prepared_data, params, tmp_path, monkeypatch):
    """tracking.backend: folder — the same params, losses per step, validation metrics, grids and
    system information, and no MLflow store touched."""
    import dataclasses

    from conftest import tiny_training_params
    from facectx.config import TrackingConfig
    from facectx.steps.train import stage_dirs, train_stage_step

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny = dataclasses.replace(
        tiny_training_params(params, grad_norm_every_steps=2),
        tracking=TrackingConfig(backend="folder", folder="runs", experiment="facectx"),
    )
    train_stage_step(tiny, 8, prepared_data, run_name="cascade", **stage_dirs(tiny, 8, tmp_path / "models"))

    [stage] = list((tmp_path / "runs").glob("*/cascade/stage_8"))
    run = json.loads((stage / "run.json").read_text())
    assert run["status"] == "FINISHED" and run["params"]["model.width"] == "4" and run["system"]["torch"]
    assert run["tags"]["facectx.capped"] == "false"
    metrics = (stage / "metrics.csv").read_text().splitlines()
    assert metrics[0] == "step,timestamp_ms,key,value"
    keys = [line.split(",")[2] for line in metrics[1:]]
    assert keys.count("loss_rec") == 3 and "val_ssim" in keys  # 12 rows / batch 4, logged every step
    # Each term's gradient on the generator, at step 2: identity is off at 8 px.
    assert {k for k in keys if k.startswith(("grad_", "share_"))} == {
        "grad_rec",
        "grad_adv",
        "grad_pc",
        "share_adv",
        "share_pc",
    }
    curve = (tmp_path / "models" / "stage_8" / "losses.csv").read_text().splitlines()
    header, rows = curve[0].split(","), [dict(zip(curve[0].split(","), line.split(","))) for line in curve[1:]]
    assert "share_pc" in header and "loss_id" not in header
    assert [bool(r["share_pc"]) for r in rows] == [False, True, False] and float(rows[1]["share_pc"]) > 0
    assert list((stage / "artifacts" / "samples").glob("stage_8_epoch_000.png"))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
