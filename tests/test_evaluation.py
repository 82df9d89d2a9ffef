"""Evaluation on real prepared photos: baselines, a trained model, the metrics, the report
(rendered in headless Chromium)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_training_params
from facectx import steps
from facectx.evaluation.baselines import BASELINES
from facectx.evaluation.evaluate import REAL_VS_REAL, evaluate, load_split
from facectx.evaluation.metrics import PER_PHOTO, frechet_distance


def test_baselines_fill_the_context_and_keep_the_face(prepared_data):
    test = load_split(prepared_data, "test", 4)
    mask = (test.mask[128] > 127).astype(np.uint8)
    mean = test.target.mean(0).astype(np.uint8)
    for name, make in BASELINES.items():
        out = make(mean)(test.masked[128], mask)
        assert out.shape == test.target.shape and out.dtype == np.uint8, name
        face = mask.astype(bool)
        assert (out[face] == test.masked[128][face]).all(), name
        assert out[~face].mean() > 5, f"{name} left the context black"


def test_metrics_behave():
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 32)
    target = np.broadcast_to(ramp[None, :, None, None], (2, 32, 32, 3)).transpose(0, 2, 1, 3).astype(np.uint8).copy()
    mask = np.zeros((2, 32, 32), np.uint8)
    mask[:, 8:24, 8:24] = 255
    valid = np.full((2, 32, 32), 255, np.uint8)
    assert np.allclose(PER_PHOTO["ssim"](target, target, mask, valid), 1, atol=1e-4)
    noisy = np.clip(target.astype(int) + rng.integers(-40, 40, target.shape), 0, 255).astype(np.uint8)
    assert (PER_PHOTO["ssim"](noisy, target, mask, valid) < 0.9).all()
    assert (PER_PHOTO["psnr"](noisy, target, mask, valid) < PER_PHOTO["psnr"](target, target, mask, valid)).all()
    context_only = target.copy()
    context_only[:, :4] = 0  # damage outside the face mask only
    assert (PER_PHOTO["psnr_context"](context_only, target, mask, valid)
            < PER_PHOTO["psnr"](context_only, target, mask, valid)).all()
    a = rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 3) == pytest.approx(9 * 8, rel=0.05)


@pytest.fixture
def tiny_model(prepared_data, tmp_path, params, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    tiny = tiny_training_params(params)
    for stage in tiny.train.stages:
        steps.train_stage_step(tiny, stage, prepared_data, **steps.stage_dirs(tiny, stage, tmp_path / "models"))
    return tmp_path / "models" / "stage_128" / "checkpoint"


def test_evaluate_writes_metrics_and_a_report_chromium_renders(prepared_data, tiny_model, tmp_path, params):
    config = dataclasses.replace(params.evaluate, max_photos=6, batch_size=4, grid_photos=3)
    calibration = {"threshold": 0.54, "auc": 0.997, "tpr_at_far": 0.96, "pairs": 2177}
    out = tmp_path / "evaluation"
    result = evaluate(prepared_data, {"cascaded": tiny_model}, out, config, calibration=calibration)

    assert result["matcher_independent"] and "faceres" in result["matcher"]
    # Six photos are too few for a five-fold two-sample test: it is left out, not reported noisy.
    assert result["two_sample_test"]["folds_grouped_by"] == "identity" and result["two_sample_test"]["n_per_side"] is None
    assert not any("c2st_auc" in values for values in result["methods"].values())
    methods = result["methods"]
    assert set(methods) == {*BASELINES, "cascaded", REAL_VS_REAL}
    for name in [*BASELINES, "cascaded"]:
        values = methods[name]
        assert -1 <= values["identity_match"] <= 1 and 0 <= values["verified"] <= 1
        assert 0 < values["ssim"] <= 1 and values["psnr"] > 0 and values["fd"] >= 0 and values["perceptual"] >= 0
    assert json.loads((out / "metrics.json").read_text())["methods"]["cascaded"]["fd"] == methods["cascaded"]["fd"]
    assert (out / "grid.png").stat().st_size > 0 and (out / "plots" / "metrics_by_method.csv").is_file()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: bash scripts/install-test-deps.sh"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    page = (out / "report.html").as_uri()
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1400,1800", page],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (1800, 1400) and image.std() > 10  # a rendered page, not a blank one
    dom = subprocess.run([chromium, *flags, "--dump-dom", page], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert '<table id="results">' in dom and "cascaded" in dom and "OpenCV Telea" in dom
    assert '<table id="paper">' in dom and "0.722" in dom  # the paper's figures beside ours


def test_standard_fid_and_lpips_load_configured_weights(prepared_data, tmp_path, params, monkeypatch):
    import lpips
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict()
    weights = tmp_path / "inception.safetensors"  # randomly initialised: exercises the loading code
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    monkeypatch.setenv("FACECTX_CACHE_DIR", str(tmp_path / "cache"))
    config = dataclasses.replace(params.evaluate, max_photos=4, batch_size=4, grid_photos=2, baselines=True,
                                 inception_weights=str(weights), matcher="dlib",
                                 lpips_backbone_weights=str(tmp_path / "alexnet.pth"),
                                 lpips_linear_weights=str(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"))
    _random_alexnet(tmp_path / "alexnet.pth")
    result = evaluate(prepared_data, {}, tmp_path / "eval", config)
    assert result["fd_network"].startswith("standard FID: InceptionV3 (inception.safetensors sha256:")
    assert result["perceptual_network"].startswith("LPIPS v0.1 AlexNet") and "alexnet.pth" in result["perceptual_network"]
    assert all(values["fd"] >= 0 for values in result["methods"].values())
    assert all(values["perceptual"] > 0 for name, values in result["methods"].items() if name != REAL_VS_REAL)
    assert "LPIPS v0.1 AlexNet" in (tmp_path / "eval" / "report.html").read_text()


@pytest.fixture(scope="module")
def larger_test_split(lfw_dir, tmp_path_factory, params):
    """~20 test and ~20 validation photos of disjoint identities: enough for a Fréchet distance."""
    from conftest import prepare_sample

    return prepare_sample(lfw_dir, tmp_path_factory.mktemp("fd"), params, train_people=60, test_people=14, max_photos=3,
                          val_fraction=0.5, mirror=False)


def test_frechet_distance_tells_real_photos_from_every_baseline(larger_test_split, tmp_path, params, monkeypatch):
    """The non-standard FD is only worth reporting if two sets of real photos score far closer
    than any baseline's outputs do to the real ones."""
    monkeypatch.setenv("FACECTX_CACHE_DIR", str(tmp_path / "cache"))
    test, val = load_split(larger_test_split, "test"), load_split(larger_test_split, "val")
    assert len(test.target) >= 16 and len(val.target) >= 16
    config = dataclasses.replace(params.evaluate, max_photos=0, batch_size=16, grid_photos=2)
    result = evaluate(larger_test_split, {}, tmp_path / "eval", config)
    real = result["methods"][REAL_VS_REAL]["fd"]
    baselines = {name: result["methods"][name]["fd"] for name in BASELINES}
    assert "non-standard" in result["fd_network"] and "conv_pw_5" in result["fd_network"]
    assert 0 < real * 4 < min(baselines.values()), (real, baselines)


def _lfw_frames(lfw_dir, count: int) -> np.ndarray:
    from PIL import Image

    photos = sorted((lfw_dir / "images").rglob("*.jpg"))[:count]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((128, 128))) for p in photos])


def _random_alexnet(path):
    import torch
    import torchvision

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)  # ImageNet weights are not offline: random trunk
    torch.save(alexnet.state_dict(), path)
    return alexnet


def test_lpips_agrees_with_the_reference_implementation(lfw_dir, tmp_path):
    import lpips
    import torch

    from facectx.evaluation.lpips import LpipsDistance

    alexnet = _random_alexnet(tmp_path / "alexnet.pth")
    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # the real human-calibrated heads
    ours = LpipsDistance(str(tmp_path / "alexnet.pth"), str(heads))
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    trunk = alexnet.features.state_dict()
    reference.net.load_state_dict({name: trunk[name.split(".", 1)[1]] for name in reference.net.state_dict()})

    frames = _lfw_frames(lfw_dir, 6)
    a, b = frames[:3], frames[3:]
    with torch.no_grad():
        expected = reference(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1,
                             torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1).flatten().numpy()
    got = ours.perceptual_distance(a, b)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-6) and (got > 0).all()
    assert np.allclose(ours.perceptual_distance(a, a), 0, atol=1e-6)


def test_lpips_rejects_wrong_weight_files(tmp_path):
    from facectx.evaluation.lpips import LpipsDistance
    from facectx.weights import WeightsError

    _random_alexnet(tmp_path / "alexnet.pth")
    with pytest.raises(WeightsError, match="alexnet.pth is not LPIPS v0.1 AlexNet linear weights"):
        LpipsDistance(str(tmp_path / "alexnet.pth"), str(tmp_path / "alexnet.pth"))
    with pytest.raises(WeightsError, match="weights file not found: .*missing.pth"):
        LpipsDistance(str(tmp_path / "missing.pth"), str(tmp_path / "alexnet.pth"))
