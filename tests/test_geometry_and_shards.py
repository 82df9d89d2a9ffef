"""Frame, mask, mirroring, pyramid, streamed shards, identity-disjoint splits and row subsets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from facectx.config import CropConfig, SplitConfig
from facectx.data.examples import build_example
from facectx.data.masks import (
    MIRROR_ORDER,
    crop_to_frame,
    face_frame,
    hull_mask,
    mirror_points,
    outside_fraction,
    points_in_frame,
)
from facectx.data.shards import NpyStreamWriter, subset_rows
from facectx.data.splits import assign_splits

CROP = CropConfig(size_px=128, box_scale=2.2, box_shift_up=0.1)


def _square_face(centre=(200.0, 200.0), half=50.0):
    """68 points on a square outline (enough for geometry), jaw on the bottom."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([centre[0] + half * np.cos(angles), centre[1] + half * np.sin(angles)], axis=1).astype(np.float32)


def test_frame_is_scaled_and_shifted_up_around_the_landmark_box():
    points = _square_face()
    frame = face_frame(points, CROP)
    assert frame.side == round(2.2 * 100)
    assert frame.left + frame.side / 2 == pytest.approx(200, abs=1)
    assert frame.top + frame.side / 2 == pytest.approx(200 - 0.1 * 100, abs=1)  # moved up: hair stays in view
    assert outside_fraction(frame, 400, 400) == 0.0
    assert outside_fraction(frame, 200, 400) == pytest.approx(0.5, abs=0.02)


def test_mask_covers_the_hull_and_masked_input_blanks_the_rest():
    rng = np.random.default_rng(0)
    photo = rng.integers(1, 255, size=(400, 400, 3), dtype=np.uint8)  # no zero pixels
    points = _square_face()
    example = build_example(photo, points, CROP, (8, 16, 32, 64, 128))
    mask = example.mask[128] > 0
    # A circle of diameter 100 px in a 220 px frame: pi/4 * (100/220)^2 of the area.
    assert mask.mean() == pytest.approx(np.pi / 4 * (100 / 220) ** 2, rel=0.05)
    assert (example.masked[128][~mask] == 0).all()
    assert (example.masked[128][mask] == example.target[128][mask]).all()
    for r in (8, 16, 32, 64):
        assert example.target[r].shape == (r, r, 3) and example.mask[r].shape == (r, r)
        # Area averaging: the mean colour is kept at every level.
        assert example.target[r].mean() == pytest.approx(example.target[128].mean(), abs=1.0)


def test_crop_outside_the_photo_is_black():
    photo = np.full((100, 100, 3), 200, np.uint8)
    frame = face_frame(_square_face(centre=(50, 50), half=40), CROP)
    out = crop_to_frame(photo, frame, 128)
    assert out[0, 0].max() == 0 and out[64, 64].min() == 200


def test_mirroring_swaps_left_and_right_points():
    assert sorted(MIRROR_ORDER.tolist()) == list(range(68))
    assert (MIRROR_ORDER[MIRROR_ORDER] == np.arange(68)).all()  # an involution
    points = np.zeros((68, 2), np.float32)
    points[36] = (30, 50)  # one eye corner at the image's left
    points[45] = (90, 50)  # the other at the right
    mirrored = mirror_points(points, 128)
    assert tuple(mirrored[45]) == (127 - 30, 50)
    assert tuple(mirrored[36]) == (127 - 90, 50)
    assert np.allclose(mirror_points(mirrored, 128), points)


def test_points_in_frame_map_frame_corners():
    frame = face_frame(_square_face(), CROP)
    corners = np.array([[frame.left, frame.top], [frame.left + frame.side, frame.top + frame.side]], np.float32)
    assert np.allclose(points_in_frame(corners, frame, 128), [[0, 0], [128, 128]])
    assert hull_mask(points_in_frame(_square_face(), frame, 128), 128).max() == 1


def test_stream_writer_writes_a_valid_npy_with_the_real_row_count(tmp_path):
    path = tmp_path / "rows.npy"
    writer = NpyStreamWriter(path, (4, 4, 3), np.uint8, max_rows=1000)
    rows = [np.full((4, 4, 3), i, np.uint8) for i in range(7)]
    for row in rows:
        writer.append(row)
    assert not path.exists()  # not under its final name until closed
    writer.close()
    loaded = np.load(path, mmap_mode="r")
    assert loaded.shape == (7, 4, 4, 3)
    assert (np.asarray(loaded) == np.stack(rows)).all()
    with pytest.raises(ValueError, match="row shape"):
        NpyStreamWriter(tmp_path / "other.npy", (2,), np.float32, 3).append(np.zeros(3))


def test_hash_splits_are_identity_disjoint_and_stable():
    config = SplitConfig(method="hash", val_fraction=0.1, test_fraction=0.1, seed=0)
    people = [f"person_{i}" for i in range(2000)]
    first = assign_splits(people, config, None)
    assert first == assign_splits(list(reversed(people)) + people[:5], config, None)  # order and repeats don't matter
    shares = {s: sum(v == s for v in first.values()) / len(people) for s in ("train", "val", "test")}
    assert shares["test"] == pytest.approx(0.1, abs=0.03) and shares["val"] == pytest.approx(0.1, abs=0.03)


def test_lfw_lists_decide_test_identities(tmp_path):
    (tmp_path / "peopleDevTrain.txt").write_text("2\nAnn\t3\nBob\t1\n")
    (tmp_path / "peopleDevTest.txt").write_text("1\nCid\t2\n")
    config = SplitConfig(method="auto", val_fraction=0.0, test_fraction=0.5, seed=0)
    assert assign_splits(["Ann", "Bob", "Cid"], config, tmp_path) == {"Ann": "train", "Bob": "train", "Cid": "test"}
    with pytest.raises(FileNotFoundError, match="peopleDevTrain"):
        assign_splits(["Ann"], SplitConfig("lfw", 0.1, 0.1, 0), tmp_path / "missing")


def _index(photos_per_person: dict[str, int], mirrored: bool = False) -> pd.DataFrame:
    """A split's index.parquet as `prepare` writes it: path order, optionally each photo + its mirror."""
    rows = []
    for person in sorted(photos_per_person):
        for k in range(photos_per_person[person]):
            for flip in (False, True) if mirrored else (False,):
                rows.append(
                    {
                        "row": len(rows),
                        "relative_path": f"{person}/{person}_{k:04d}.jpg",
                        "identity": person,
                        "mirrored": flip,
                    }
                )
    return pd.DataFrame(rows)


# Skewed like LFW: one person with 150 photos first in path order, many with one to three.
PEOPLE = {"A_Bush": 150, **{f"P{i:03d}": 1 + i % 3 for i in range(60)}}


def test_subsets_are_seeded_random_samples_spread_over_identities():
    index = _index(PEOPLE)
    n = len(PEOPLE)
    rows = subset_rows(index, n, seed=1)
    assert len(rows) == n and (np.diff(rows) > 0).all()  # sorted, no repeats
    assert index.identity[rows].value_counts().max() == 1  # n = people: every person once
    assert set(index.identity[rows]) == set(PEOPLE)
    assert index.identity[subset_rows(index, 100, seed=1)].value_counts().max() == 2  # then round-robin
    assert (subset_rows(index, n, seed=1) == rows).all()  # deterministic for a seed
    assert not np.array_equal(subset_rows(index, n, seed=2), rows)
    assert (subset_rows(index, 0, seed=1) == np.arange(len(index))).all()  # 0: every row
    assert (subset_rows(index, len(index) + 5, seed=1) == np.arange(len(index))).all()


def test_a_training_subset_keeps_each_photo_with_its_mirrored_copy():
    index = _index(PEOPLE, mirrored=True)
    rows = subset_rows(index, 2 * len(PEOPLE), seed=0)
    picked = index.iloc[rows]
    assert (picked.groupby("identity").size() == 2).all() and picked.identity.nunique() == len(PEOPLE)
    assert (picked.groupby("relative_path").mirrored.agg(set) == {False, True}).all()


def test_shards_and_evaluation_read_the_subset_rows(prepared_data):
    from benchmarks.plain_loader import ShardDataset
    from facectx.evaluation.evaluate import load_split
    from facectx.training.data import ResidentShards

    index = pd.read_parquet(prepared_data / "train" / "index.parquet")
    landmarks = np.load(prepared_data / "train" / "landmarks.npy")
    rows = subset_rows(index, 6, seed=3)
    assert index.identity[rows].nunique() == 3  # 3 photos, each with its mirrored copy
    shards = ResidentShards(prepared_data, "train", (8,), torch.device("cpu"), max_rows=6, seed=3)
    assert shards.rows == 6 and (shards.landmarks.numpy() == landmarks[rows]).all()
    dataset = ShardDataset(prepared_data, "train", (8,), max_rows=6, seed=3)
    assert len(dataset) == 6 and all(
        (dataset[i]["landmarks"].numpy() == landmarks[r]).all() for i, r in enumerate(rows)
    )

    # evaluation: a fixed seed (0), so every method and every run scores the same photos
    photos = load_split(prepared_data, "train", 6)
    assert photos.index.identity.nunique() == 3  # the first 6 rows in path order hold 2 people
    assert (photos.landmarks == landmarks[subset_rows(index, 6, seed=0)]).all()
    assert (
        photos.index.relative_path.to_numpy() == load_split(prepared_data, "train", 6).index.relative_path.to_numpy()
    ).all()
