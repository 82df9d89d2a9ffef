"""The data's DVC version made inside a run (facectx.data.versioning) on a real S3 server (SeaweedFS):
the pointers' md5s are the ones `dvc repro` records in dvc.lock for the same photos, a fresh DVC
repository holding the pointers gets the same bytes back with `dvc pull`, and a training stage
fetches only its resolutions."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from test_dvc_pipeline import _project_copy, _run

from conftest import s3_client
from facectx.data import versioning
from facectx.data.shards import data_version, split_files
from facectx.evaluation.photo_sets import files_read
from facectx.layout import PREPARED_DIR, RAW_DIR
from facectx.serving import example_photo_from_prepared
from facectx.steps.version import fetch_evaluation_data, fetch_example_photo, fetch_stage_data

BUCKET = "facectx-data-versions"


def _sha256_tree(root: Path) -> dict[str, str]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def reproduced(sample_source_module, tmp_path_factory) -> Path:
    """`dvc repro prepare` on real photos in a clean copy of the project: its data and dvc.lock."""
    project = _project_copy(tmp_path_factory.mktemp("versioning"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["source"] = str(sample_source_module)
    params["validate"]["workers"] = params["prepare"]["workers"] = 1
    params["validate"]["min_valid_fraction"] = 0.5
    params["prepare"]["split"]["val_fraction"] = 0.4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    _run([str(Path(sys.executable).parent / "dvc"), "repro", "prepare"], project, env)
    return project


@pytest.fixture(scope="module")
def sample_source_module(lfw_dir, tmp_path_factory) -> Path:
    from conftest import make_source

    return make_source(lfw_dir, tmp_path_factory.mktemp("photos"), train_people=6, test_people=3, max_photos=3)


@pytest.fixture(scope="module")
def remote(s3_server) -> versioning.DataRemote:
    s3_client(s3_server).create_bucket(Bucket=BUCKET)
    return versioning.DataRemote(f"s3://{BUCKET}/dvc", s3_server["AWS_ENDPOINT_URL"])


def _versioned(reproduced: Path, remote, pointers: Path, s3_server, monkeypatch) -> dict[str, str]:
    for key, value in s3_server.items():  # credentials (and nothing else) from the environment
        if key != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    folders = versioning.data_folders(reproduced / RAW_DIR, reproduced / PREPARED_DIR)
    return versioning.push_version(folders, remote, pointers)


def test_the_runs_data_version_is_what_dvc_repro_records(reproduced, remote, s3_server, monkeypatch, tmp_path):
    pointers = tmp_path / "pointers"
    versions = _versioned(reproduced, remote, pointers, s3_server, monkeypatch)
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    recorded = {out["path"]: out["md5"] for stage in ("ingest", "prepare") for out in lock[stage]["outs"]}
    assert set(versions) == set(recorded) - {f"{PREPARED_DIR}/metrics.json"}
    assert versions == {path: recorded[path] for path in versions}
    assert versions[RAW_DIR].endswith(".dir") and versions[f"{PREPARED_DIR}/train"].endswith(".dir")
    assert versioning.version_tags(pointers) == {f"facectx.data.dvc.{path}": md5 for path, md5 in versions.items()}
    for text in (p.read_text() for p in pointers.rglob("*.dvc")):  # pointers carry no endpoint, no key
        assert s3_server["AWS_ACCESS_KEY_ID"] not in text and s3_server["AWS_ENDPOINT_URL"] not in text

    # A fresh DVC repository holding only the pointers gets the same bytes back with `dvc pull`.
    clone = tmp_path / "clone"
    clone.mkdir()
    dvc = str(Path(sys.executable).parent / "dvc")
    _run([dvc, "init", "--no-scm", "-q"], clone)
    _run([dvc, "remote", "add", "-d", "store", remote.url], clone)
    _run([dvc, "remote", "modify", "--local", "store", "endpointurl", remote.endpoint_url], clone)
    for pointer in pointers.rglob("*.dvc"):
        target = clone / pointer.relative_to(pointers)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(pointer.read_bytes())
    env = {**os.environ, **{k: v for k, v in s3_server.items() if k != "AWS_ENDPOINT_URL"}}
    _run([dvc, "pull", "-q"], clone, env)
    for path in versions:
        assert _sha256_tree(clone / path) == _sha256_tree(reproduced / path), path

    # Pushing the same data again sends nothing new and gives the same pointers.
    again = tmp_path / "again"
    assert _versioned(reproduced, remote, again, s3_server, monkeypatch) == versions


def test_a_stage_fetches_only_its_resolutions(reproduced, remote, s3_server, monkeypatch, tmp_path):
    pointers = tmp_path / "pointers"
    _versioned(reproduced, remote, pointers, s3_server, monkeypatch)
    names = [name for split in ("train", "val") for name in split_files(split, [8])] + ["test/index.parquet"]
    fetched = fetch_stage_data(pointers, remote, 8, (8, 16, 32, 64, 128), tmp_path / "stage_8")
    prepared = reproduced / PREPARED_DIR
    got = Path(fetched["prepared_dir"])
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) == sorted(["meta.json", *names])
    for name in ["meta.json", *names]:
        assert (got / name).read_bytes() == (prepared / name).read_bytes(), name
    assert data_version(got) == data_version(prepared)  # what each checkpoint records
    share = fetched["bytes"] / _size(prepared)
    print(f"8 px stage fetched {fetched['bytes']} of {_size(prepared)} prepared bytes ({share:.2%})")
    assert fetched["bytes"] == _size(got) and share < 0.05

    with pytest.raises(versioning.VersionError, match="none of the versioned folders"):
        versioning.pull_files(pointers, remote, ["models/cascade/stage_8"], tmp_path / "nowhere")
    with pytest.raises(versioning.VersionError, match="not in the versioned data"):
        versioning.fetch_prepared(pointers, remote, ["train/target_512.npy"], tmp_path / "missing")


def test_evaluation_fetches_its_split_and_register_one_photo(reproduced, remote, s3_server, monkeypatch, tmp_path):
    pointers = tmp_path / "pointers"
    _versioned(reproduced, remote, pointers, s3_server, monkeypatch)
    fetched = fetch_evaluation_data(pointers, remote, (8, 16, 32, 64, 128), 0, tmp_path / "evaluate")
    got, prepared = Path(fetched["prepared_dir"]), reproduced / PREPARED_DIR
    names = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert names == sorted(["meta.json", *files_read((8, 16, 32, 64, 128))])
    assert all((got / name).read_bytes() == (prepared / name).read_bytes() for name in names)
    assert fetched["bytes"] == _size(got) < _size(prepared)

    photo = fetch_example_photo(pointers, remote, tmp_path / "register")
    expected = example_photo_from_prepared(reproduced / PREPARED_DIR, reproduced / RAW_DIR)
    assert photo.read_bytes() == expected.read_bytes() and photo.name == expected.name
    fetched = [p for p in (tmp_path / "register").rglob("*") if p.is_file()]
    assert len(fetched) == 3  # meta.json, the test index, one photo


def test_evaluation_fetches_the_photos_of_the_pairs_it_calibrates_on(
    reproduced, remote, s3_server, monkeypatch, tmp_path
):
    """LFW's pairs file lists photos this copy may lack; evaluation fetches those of the pairs it
    scores (calibration_pairs of each kind) that the version holds, and nothing else of the raw area."""
    raw = tmp_path / "raw"
    shutil.copytree(reproduced / RAW_DIR, raw)
    people = sorted(p for p in (raw / "images").iterdir() if len(list(p.iterdir())) >= 2)
    a, b = people[0].name, people[1].name
    pairs = f"2\n{a} 1 2\n{b} 1 2\n{a} 1 {b} 1\nNobody_Here 1 {b} 2\n"
    (raw / "split_lists" / "pairsDevTrain.txt").write_text(pairs)
    for key, value in s3_server.items():
        if key != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    pointers = tmp_path / "pointers"
    versioning.push_version(versioning.data_folders(raw, reproduced / PREPARED_DIR), remote, pointers)

    got = fetch_evaluation_data(pointers, remote, (8, 16, 32, 64, 128), 1, tmp_path / "evaluate")
    photos = sorted(p.relative_to(got["raw_dir"]).as_posix() for p in Path(got["raw_dir"]).rglob("*.jpg"))
    assert photos == sorted({f"images/{a}/{a}_0001.jpg", f"images/{a}/{a}_0002.jpg", f"images/{b}/{b}_0001.jpg"})
    assert (Path(got["raw_dir"]) / "split_lists" / "pairsDevTrain.txt").read_text() == pairs
    assert (Path(got["prepared_dir"]) / "test" / "index.parquet").is_file()
