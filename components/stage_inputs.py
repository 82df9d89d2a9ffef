"""What a training step works out before it trains (plain functions the train_stage component
calls in its pod): where its resume state lives, and its data fetched from the run's version."""

import os
import tempfile


def resume_places(resume_uri: str, run_id: str, name: str, stage: int) -> dict:
    """train_stage_step's resume_dir (the pod's disk) and resume_uri (object storage, which
    outlives a preempted pod: resume_uri/<run id>/<model>/stage_N; '' keeps none)."""
    from facectx import layout

    local = layout.resume_dir(os.path.join(tempfile.gettempdir(), "facectx-resume", name), stage)
    remote = f"{resume_uri.rstrip('/')}/{run_id}/{name}/{layout.stage_folder(stage)}" if resume_uri else None
    return {"resume_dir": str(local), "resume_uri": remote}


def stage_data(data_dir: str, dvc_remote: str, s3_endpoint: str, stage: int, resolutions) -> dict:
    """The stage's data fetched from the run's data version (pointers in data_dir): train_stage_step's
    prepared_dir, data_tags (the version) and stage_tags (the bytes fetched), and the byte count."""
    from facectx.data.versioning import DataRemote, version_tags
    from facectx.steps.version import fetch_stage_data

    remote = DataRemote(dvc_remote, s3_endpoint or None)
    fetched = fetch_stage_data(data_dir, remote, stage, resolutions, tempfile.mkdtemp(prefix="facectx-data-"))
    return {
        "prepared_dir": fetched["prepared_dir"],
        "data_tags": version_tags(data_dir),
        "stage_tags": {"facectx.data.bytes_fetched": str(fetched["bytes"])},
        "bytes": fetched["bytes"],
    }
