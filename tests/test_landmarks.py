"""Landmark backends on real LFW photos: dlib (offline default) and FAN's real loading code."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from facectx.data.landmarks import LandmarkWeightsMissing, default_fan_weights_path, make_landmarker
from servers import refusing_port


def _photo(lfw_dir, person="Aaron_Eckhart"):
    return np.asarray(Image.open(sorted((lfw_dir / "images" / person).iterdir())[0]).convert("RGB"))


def test_dlib_places_68_points_on_the_face(lfw_dir, params):
    rgb = _photo(lfw_dir)
    found = make_landmarker(params.landmarks)(rgb)
    assert found is not None and found.points.shape == (68, 2)
    left, top, right, bottom = found.subject_box
    centre = found.points.mean(axis=0)
    assert left < centre[0] < right and top < centre[1] < bottom
    # Eyes (36-47) lie above the mouth (48-67), the jaw spans the face's width.
    assert found.points[36:48, 1].mean() < found.points[48:68, 1].mean()
    assert np.ptp(found.points[0:17, 0]) > 0.6 * (right - left)


def test_subject_is_the_face_nearest_the_centre(lfw_dir, params):
    people = ["Aaron_Eckhart", "Aaron_Guiel", "Aaron_Peirsol"]
    strip = np.concatenate([_photo(lfw_dir, p) for p in people], axis=1)  # three faces side by side
    found = make_landmarker(params.landmarks)(strip)
    assert len(found.other_boxes) == 2
    width = strip.shape[1]
    assert width / 3 < found.points[:, 0].mean() < 2 * width / 3


def _random_fan_weights(path, seed=0, flat=False):
    """A 2D-FAN weights file, randomly initialised (the trained 2DFAN4 file is not offline).
    flat: the last hourglass's heatmap layer zeroed, so every heatmap is flat and all 68 points
    land on one place -- weights whose effect is known."""
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    fan = FAN(4)
    if flat:
        torch.nn.init.zeros_(fan.l3.weight)
        torch.nn.init.zeros_(fan.l3.bias)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fan.state_dict(), path)
    return path


def test_face_alignment_backend_loads_weights_from_its_cache(lfw_dir, params, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = default_fan_weights_path()
    assert cached.startswith(str(tmp_path / "torch"))
    _random_fan_weights(__import__("pathlib").Path(cached))  # randomly initialised: exercises loading, not accuracy
    config = dataclasses.replace(params.landmarks, backend="face_alignment", fan_weights=None)
    found = make_landmarker(config)(_photo(lfw_dir))
    assert found.points.shape == (68, 2) and np.isfinite(found.points).all()


def test_face_alignment_backend_loads_a_configured_file(lfw_dir, params, tmp_path, monkeypatch):
    """The configured file's weights place the points, in the region FAN reads around dlib's box of
    the face; nothing is read from or written to the torch hub cache. (Random weights: where a
    trained FAN puts each point needs the real 2DFAN4 file; dlib's accuracy is tested above.)"""
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # not the user's cache
    rgb = _photo(lfw_dir)
    face = make_landmarker(params.landmarks)(rgb)  # dlib's: the face, found by the same detector

    def placed(weights):
        config = dataclasses.replace(params.landmarks, backend="face_alignment", fan_weights=str(weights))
        return make_landmarker(config)(rgb)

    found = placed(_random_fan_weights(tmp_path / "fan.pth"))
    assert found.points.shape == (68, 2) and found.subject_box == face.subject_box
    # FAN reads a square about twice the box's size around the box: every point lies in it, on
    # the photo's pixel grid (not the network's 64x64 heatmaps).
    left, top, right, bottom = found.subject_box
    margin = 0.75 * max(right - left, bottom - top)
    assert (found.points >= [left - margin, top - margin]).all() and (
        found.points <= [right + margin, bottom + margin]
    ).all(), (found.subject_box, found.points)
    assert np.ptp(found.points, axis=0).min() > 0.25 * (right - left)  # spread over it, not one spot
    # The file decides: the same file, the same points; other weights, other points; a flat
    # heatmap layer, all 68 points on one spot.
    assert np.array_equal(placed(tmp_path / "fan.pth").points, found.points)
    assert not np.allclose(placed(_random_fan_weights(tmp_path / "other.pth", seed=1)).points, found.points)
    assert np.ptp(placed(_random_fan_weights(tmp_path / "flat.pth", flat=True)).points, axis=0).max() < 1e-3
    assert not torch_home.exists() or not any(torch_home.rglob("*"))


def test_face_alignment_backend_says_what_is_missing(params, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    missing_file = dataclasses.replace(
        params.landmarks, backend="face_alignment", fan_weights=str(tmp_path / "nope.pth")
    )
    with pytest.raises(LandmarkWeightsMissing, match="nope.pth"):
        make_landmarker(missing_file)
    # An unreachable URL stands for an offline machine: a loopback port that refuses connections
    # while it is used (servers.refusing_port; not a fixed port, which some server might hold).
    with refusing_port() as port:
        unreachable = dataclasses.replace(missing_file, fan_weights=f"http://127.0.0.1:{port}/2DFAN4.pth.tar")
        with pytest.raises(LandmarkWeightsMissing, match="landmarks.fan_weights"):
            make_landmarker(unreachable)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a weights file")
    with pytest.raises(LandmarkWeightsMissing, match="corrupt.pth"):
        make_landmarker(dataclasses.replace(missing_file, fan_weights=str(corrupt)))
