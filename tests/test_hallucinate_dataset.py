"""`facectx hallucinate-dataset` on real LFW photos with the session's tiny trained cascade: every
photo accounted for, frames + manifest that map back onto the photos, a SIGKILLed run that resumes
to the same bytes, and the bad inputs refused without losing work."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO

PEOPLE = ("Aaron_Peirsol", "Abdoulaye_Wade", "Abdullah_Gul", "Abel_Pacheco", "Adam_Sandler")


@pytest.fixture(scope="module")
def source(lfw_dir, tmp_path_factory) -> Path:
    """18 LFW photos, a file that is no photo and a photo with no face."""
    root = tmp_path_factory.mktemp("hd-source")
    for person in PEOPLE:
        (root / person).mkdir()
        for photo in sorted((lfw_dir / "images" / person).iterdir())[:4]:
            shutil.copy(photo, root / person / photo.name)
    (root / PEOPLE[0] / "notes.jpg").write_text("not a photo\n")
    gradient = np.repeat(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], 160, axis=0).repeat(3, axis=2)
    Image.fromarray(gradient).save(root / PEOPLE[1] / "no_face.png")
    return root


def dataset_params(params, workers: int = 1):
    h = dataclasses.replace(params.hallucinate, shard_photos=4, batch_size=3, workers=workers, device="cpu")
    return dataclasses.replace(params, hallucinate=h)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(source, tiny_cascade, quick_params, tmp_path_factory):
    """One uninterrupted in-process run: (OUT, its report)."""
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    out = tmp_path_factory.mktemp("hd-reference") / "out"
    report = hallucinate_dataset_step(
        dataset_params(quick_params), str(source), str(out), str(tiny_cascade.checkpoint), track=False
    )
    return out, report


def test_every_photo_is_written_or_quarantined(reference, source, tiny_cascade):
    out, report = reference
    found = sum(1 for p in source.rglob("*") if p.is_file())
    assert report["photos_found"] == found == 22
    assert report["written"] + report["quarantined"] == found and report["accounted_for"]
    quarantine = pd.read_parquet(out / "quarantine.parquet").set_index("relative_path")
    assert quarantine.loc[f"{PEOPLE[0]}/notes.jpg", "check"] == "decodes_to_8bit_rgb"
    assert quarantine.loc[f"{PEOPLE[1]}/no_face.png", "check"] == "face_found"
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == report["written"] and manifest.relative_path.is_unique
    weights = json.loads((tiny_cascade.checkpoint / "meta.json").read_text())
    assert set(manifest.model_weights_sha256) == {weights["files"]["model.safetensors"]}
    assert set(manifest.data_version) == {weights["data_version"]}


def test_quarantine_reasons_are_the_ones_validate_gives(reference, source, quick_params, tmp_path):
    """The same photos through `ingest` + `validate`: each quarantined photo has the same check and
    reason in both (the per-photo rules and the suite are one definition, data/rules.py)."""
    from facectx.steps.ingest import ingest_step
    from facectx.steps.validate import validate_step

    params = dataclasses.replace(
        quick_params, validate=dataclasses.replace(quick_params.validate, min_valid_fraction=0)
    )
    ingest_step(params, tmp_path / "raw", str(source))
    validate_step(params, tmp_path / "raw", tmp_path / "validated")

    def reasons(table: Path) -> dict[str, tuple[str, str]]:
        rows = pd.read_parquet(table)
        return {r.relative_path: (r.check, r.reason) for r in rows.itertuples()}

    by_validate = reasons(tmp_path / "validated" / "quarantine.parquet")
    by_bulk_run = reasons(reference[0] / "quarantine.parquet")
    assert by_bulk_run == by_validate and len(by_validate) >= 2


def test_frames_are_the_model_output_and_map_back_onto_the_photo(reference, source, tiny_cascade, quick_params):
    from facectx.data.masks import Frame, crop_to_frame
    from facectx.inference import PhotoHallucinator

    out, _ = reference
    row = pd.read_parquet(out / "manifest.parquet").iloc[5]
    frame = np.asarray(Image.open(out / row.frame_path).convert("RGB"))
    assert frame.shape == (128, 128, 3)
    photo = np.asarray(Image.open(source / row.relative_path).convert("RGB"))
    single = PhotoHallucinator(tiny_cascade.checkpoint, quick_params.crop, quick_params.landmarks)(photo)
    assert np.abs(frame.astype(int) - single["output"].astype(int)).max() <= 1  # lossless WebP of the same output
    # the manifest's geometry cuts the same frame out of the photo that the model was given
    target = crop_to_frame(photo, Frame(row.frame_left, row.frame_top, row.frame_side), row.frame_size_px)
    assert np.array_equal(target, single["target"])


def _cli(params_file: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable,
        "-m",
        "facectx.cli",
        "--params",
        str(params_file),
        "hallucinate-dataset",
        *map(str, args),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_sigkilled_run_resumes_to_the_same_bytes(reference, source, tiny_cascade, quick_params, tmp_path):
    from facectx.config import dump_params

    params_file = tmp_path / "params.yaml"
    params_file.write_text(dump_params(dataset_params(quick_params, workers=2)))
    out, args = tmp_path / "out", (source, tmp_path / "out", "--model", tiny_cascade.checkpoint, "--no-track")
    run = _cli(params_file, *args)
    deadline = time.monotonic() + 240
    while not list((out / "shards").glob("shard-0000[1-9]")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    finished = {p.name for p in (out / "shards").glob("shard-*")}
    assert 2 <= len(finished) < 6, f"killed too late or too early to test resuming: {finished}"
    assert not (out / "manifest.parquet").exists()
    again = _cli(params_file, *args)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert f"{len(finished)} shards already done" in stdout
    assert files_of(out) == files_of(reference[0])  # byte for byte, frames, manifests and stamp


def test_a_full_disk_mid_shard_keeps_no_half_shard(
    reference, source, tiny_cascade, quick_params, tmp_path, monkeypatch
):
    """ENOSPC injected where shard bytes are written (a real full disk needs root to mount a tiny
    tmpfs): the failing shard leaves nothing behind, and a re-run completes to the same bytes."""
    import facectx.bulk.shard as shard
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    real_write, calls = shard.write_file, []

    def disk_fills_up(path, data):
        calls.append(path)
        if "shard-00002" in str(path) and path.name == "quarantine.parquet":  # the third shard's last file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(shard, "write_file", disk_fills_up)
    out, params = tmp_path / "out", dataset_params(quick_params)
    with pytest.raises(shard.ShardWriteFailed, match="shard shard-00002: .*No space left on device.*run again"):
        hallucinate_dataset_step(params, str(source), str(out), str(tiny_cascade.checkpoint), track=False)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000", "shard-00001"]
    monkeypatch.setattr(shard, "write_file", real_write)
    hallucinate_dataset_step(params, str(source), str(out), str(tiny_cascade.checkpoint), track=False)
    assert files_of(out) == files_of(reference[0])


def test_an_out_of_another_model_is_refused_with_the_fix(reference, source, tiny_cascade, quick_params, tmp_path):
    from facectx.bulk.listing import OutputHoldsOtherShards
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    other = tmp_path / "other-checkpoint"
    shutil.copytree(tiny_cascade.checkpoint, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["files"]["model.safetensors"] = "0" * 64  # other weights, as far as the stamp can tell
    (other / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    before = files_of(out)
    with pytest.raises(OutputHoldsOtherShards, match=f"{out} holds shards made with another model.*delete {out}"):
        hallucinate_dataset_step(dataset_params(quick_params), str(source), str(out), str(other), track=False)
    assert files_of(out) == before


def test_a_missing_model_and_an_empty_source_are_clear_errors(source, quick_params, tmp_path):
    from facectx.bulk.model import ModelNotFound
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    params = dataset_params(quick_params)
    with pytest.raises(ModelNotFound, match=f"{tmp_path / 'nowhere'} is not a checkpoint folder"):
        hallucinate_dataset_step(params, str(source), str(tmp_path / "out"), str(tmp_path / "nowhere"), track=False)
    (tmp_path / "empty").mkdir()
    checkpoint = tmp_path / "ck"
    with pytest.raises(FileNotFoundError, match="no photos found"):
        from facectx.bulk.listing import list_source

        list_source(str(tmp_path / "empty"), params.ingest.extensions, 1, 4)
    assert not checkpoint.exists() and not (tmp_path / "out").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_helpers_yield_the_cpu_to_the_generator(
    reference, source, tiny_cascade, quick_params, tmp_path, monkeypatch
):
    """The photo workers and the thread that encodes and writes frames run at the lowest CPU
    priority, the generator's thread at the caller's: on a machine with fewer cores than busy
    threads the generator keeps its core. The run's bytes are the same."""
    import threading

    import facectx.bulk.shard as shard
    from facectx.bulk.priority import HELPER_NICENESS
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    def nice_of(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    def children() -> set[int]:  # the session's servers (S3, MLflow) are children too
        return {int(pid) for pid in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()}

    real_write, writers, workers, before = shard.write_file, set(), set(), children()

    def write_and_look(path, data):
        writers.add((threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        workers.update((pid, nice_of(pid)) for pid in children() - before)  # the run's photo workers
        real_write(path, data)

    monkeypatch.setattr(shard, "write_file", write_and_look)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    out = tmp_path / "out"
    hallucinate_dataset_step(
        dataset_params(quick_params, workers=2), str(source), str(out), str(tiny_cascade.checkpoint), track=False
    )
    assert {nice for _, nice in writers} == {max(HELPER_NICENESS, caller)}
    assert threading.get_native_id() not in {tid for tid, _ in writers}
    assert len(workers) >= 2 and {nice for _, nice in workers} == {max(HELPER_NICENESS, caller)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
    assert files_of(out) == files_of(reference[0])
