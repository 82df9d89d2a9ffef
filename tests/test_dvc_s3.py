"""DVC with an S3 remote on a real S3 server (SeaweedFS): `dvc push` of raw and prepared data and a
trained cascade, then a fresh clone pulls them and `dvc repro` finds nothing to do. Credentials
come from the environment only; the endpoint from .dvc/config.local (never committed)."""

from __future__ import annotations

import copy
import hashlib
import os
import sys
from pathlib import Path

import yaml
from test_dvc_pipeline import PER_STAGE_LISTS, TINY_PROFILE, _project_copy, _run

from conftest import s3_client

GIT = ["git", "-c", "user.name=facectx-test", "-c", "user.email=facectx-test@example.org"]


def _tiny_params(project: Path, source: Path) -> None:
    """Real photos from `source`, and the cascade at 8 and 16 px only: minutes would go to the
    larger stages and nothing about storing models depends on their size."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)
    params["validate"]["workers"] = params["prepare"]["workers"] = 1
    params["validate"]["min_valid_fraction"] = 0.5  # a dozen photos: one duplicate is 8%
    params["prepare"]["split"]["val_fraction"] = 0.4  # six training people: keep some for validation
    stages = 2
    params["train"]["stages"] = params["train"]["stages"][:stages]
    for section, key in PER_STAGE_LISTS:
        params[section][key] = params[section][key][:stages]
    tiny = copy.deepcopy(TINY_PROFILE)
    tiny["train"]["epochs"], tiny["train"]["batch_size"] = [1] * stages, [4] * stages
    params["profiles"]["tiny"] = tiny
    params["profile"] = "tiny"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _checksums(root: Path, outputs: list[str]) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for out in outputs
        for p in sorted((root / out).rglob("*"))
        if p.is_file()
    }


def test_dvc_push_to_s3_then_a_fresh_clone_pulls_and_has_nothing_to_reproduce(s3_server, sample_source, tmp_path):
    bucket, endpoint = "facectx-dvc-remote", s3_server["AWS_ENDPOINT_URL"]
    s3_client(s3_server).create_bucket(Bucket=bucket)
    project = _project_copy(tmp_path)
    _tiny_params(project, sample_source)
    bin_dir = Path(sys.executable).parent
    dvc = str(bin_dir / "dvc")
    # Credentials from the environment, nothing else: no endpoint there (DVC must take it from
    # its local config) and the embedded MLflow store.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MLFLOW_TRACKING_URI"}
    env.update({k: v for k, v in s3_server.items() if k != "AWS_ENDPOINT_URL"})
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    # `train` and what it needs: ingest, validate, prepare (the later stages are not about storage).
    _run([dvc, "repro", "train"], project, env)
    _run([dvc, "remote", "add", "-d", "s3", f"s3://{bucket}/facectx"], project, env)
    _run([dvc, "remote", "modify", "--local", "s3", "endpointurl", endpoint], project, env)
    config = (project / ".dvc" / "config").read_text()
    assert f"s3://{bucket}/facectx" in config and "endpointurl" not in config
    for name in ("config", "config.local"):
        text = (project / ".dvc" / name).read_text()
        assert s3_server["AWS_ACCESS_KEY_ID"] not in text and s3_server["AWS_SECRET_ACCESS_KEY"] not in text
    _run([dvc, "push", "--with-deps", "train"], project, env)
    assert "in sync" in _run([dvc, "status", "--cloud", "--with-deps", "train"], project, env)

    _run(
        [*GIT, "add", "."], project
    )  # DVC's uncached metrics too: without them a clone would run validate and prepare again
    _run([*GIT, "commit", "-q", "-m", "tiny run"], project)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / ".dvc" / "config.local").exists()  # per machine: each clone sets its endpoint
    _run([dvc, "remote", "modify", "--local", "s3", "endpointurl", endpoint], clone, env)
    _run([dvc, "pull", "--with-deps", "train"], clone, env)

    outputs = ["data/raw", "data/validated", "data/prepared", "models/cascade"]
    pulled = _checksums(clone, outputs)
    assert pulled == _checksums(project, outputs)
    assert any(p.startswith("data/raw/images/") for p in pulled) and "models/cascade/stage_16/metrics.json" in pulled
    assert "Data and pipelines are up to date" in _run([dvc, "status", "--with-deps", "train"], clone, env)
    again = _run([dvc, "repro", "train"], clone, env)
    assert "Running stage" not in again, again
