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
    assert (
        PER_PHOTO["psnr_context"](context_only, target, mask, valid)
        < PER_PHOTO["psnr"](context_only, target, mask, valid)
    ).all()
    a = rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 3) == pytest.approx(9 * 8, rel=0.05)


def _perturbed(target: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The target with noise everywhere and its context brightened: a stand-in for a model's output."""
    rng = np.random.default_rng(seed)
    out = target.astype(float) + rng.normal(0, 12, target.shape)
    out[mask < 128] += 25
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _reference_ssim(output: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    """scikit-image's SSIM map (Gaussian window sigma 1.5, population covariances, data range 1),
    channels averaged, over the pixels whose 11x11 window lies inside the frame, weighted by region."""
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(
        output / 255.0,
        target / 255.0,
        data_range=1.0,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    inner = (slice(5, -5), slice(5, -5))
    per_pixel, weight = full.mean(-1)[inner], region[inner]
    return float((per_pixel * weight).sum() / weight.sum())


def _reference_psnr(output: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    err = ((output / 255.0 - target / 255.0) ** 2).mean(-1)
    return float(10 * np.log10(1 / ((err * region).sum() / region.sum())))


def test_per_photo_metrics_match_independent_formulas_on_real_photos(prepared_data):
    """Evaluation's per-photo scores (score_method, as evaluate runs it) on real prepared test
    photos against scikit-image's SSIM, a numpy PSNR and a numpy cosine, inside the photo only."""
    from facectx.evaluation.evaluate import score_method

    test = load_split(prepared_data, "test", 4)
    valid = test.valid.copy()
    valid[0, :, :20] = 0  # the first frame's crop ran past its photo on the left
    test = dataclasses.replace(test, valid=valid)
    mask = test.mask[128]
    output = _perturbed(test.target, mask)
    output[0, :, :20] = 255  # outside the photo: no metric may see it
    rng = np.random.default_rng(1)
    target_features = rng.normal(size=(len(output), 16))
    output_features = target_features + rng.normal(0, 0.8, target_features.shape)

    class NoPerceptual:
        def perceptual_distance(self, a, b):
            return np.zeros(len(a))

    scores = score_method(output, output_features, test, NoPerceptual(), 0.8, 2, target_features)

    inside = valid / 255.0  # prepare's validity mask is soft along the photo's edge
    # What the metrics see: the target where the frame left the photo, blended along its edge.
    seen = np.round(inside[..., None] * output + (1 - inside[..., None]) * test.target).astype(np.uint8)
    context = (mask < 128) * inside
    assert 0.05 < context.mean() < 0.95 and (inside == 0).any()
    expected = {
        "ssim": [_reference_ssim(o, t, r) for o, t, r in zip(seen, test.target, inside)],
        "ssim_context": [_reference_ssim(o, t, r) for o, t, r in zip(seen, test.target, context)],
        "psnr": [_reference_psnr(o, t, r) for o, t, r in zip(seen, test.target, inside)],
        "psnr_context": [_reference_psnr(o, t, r) for o, t, r in zip(seen, test.target, context)],
    }
    # Ours is float32, scikit-image float64; a window sigma of 1.4, K2 0.02 or a data range of 1.1
    # would move these photos' SSIM by 0.01 to 0.05.
    for name, values in expected.items():
        assert np.allclose(scores[name], values, rtol=0, atol=1e-4), (name, scores[name].tolist(), values)
    # Sanity of the references themselves: a noisy copy, the context worse than the whole frame.
    assert all(0.3 < v < 0.95 for v in expected["ssim"]) and all(15 < v < 35 for v in expected["psnr"])
    assert (np.array(expected["psnr_context"]) < np.array(expected["psnr"])).all()

    cosines = (
        (output_features * target_features).sum(1)
        / np.linalg.norm(output_features, axis=1)
        / np.linalg.norm(target_features, axis=1)
    )
    assert np.allclose(scores["identity_match"], cosines, atol=1e-6)
    assert (scores["verified"] == (cosines >= 0.8)).all() and 0 < scores["verified"].sum() < len(cosines)
    assert list(scores["relative_path"]) == list(test.index.relative_path)


def test_frechet_distance_matches_the_closed_form():
    """||mu_a - mu_b||^2 + tr(A) + tr(B) - 2 tr((A^1/2 B A^1/2)^1/2), through symmetric
    eigendecompositions (no scipy.linalg.sqrtm), on small random feature sets."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=6)

    def sqrt_psd(m):
        values, vectors = np.linalg.eigh(m)
        return (vectors * np.sqrt(values.clip(0))) @ vectors.T

    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # unbiased (N - 1), as FID takes them
    root_a = sqrt_psd(cov_a)
    expected = (
        ((a.mean(0) - b.mean(0)) ** 2).sum()
        + np.trace(cov_a)
        + np.trace(cov_b)
        - 2 * np.trace(sqrt_psd(root_a @ cov_b @ root_a))
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-7)
    # One Gaussian, two samples of it: the distance falls to the sampling noise.
    c = rng.normal(size=(4000, 6))
    assert frechet_distance(c[:2000], c[2000:]) < 0.05 < expected


def test_evaluate_writes_metrics_and_a_report_chromium_renders(prepared_data, tiny_cascade, tmp_path, params):
    config = dataclasses.replace(params.evaluate, max_photos=6, batch_size=4, grid_photos=3)
    calibration = {"threshold": 0.54, "auc": 0.997, "tpr_at_far": 0.96, "pairs": 2177}
    out = tmp_path / "evaluation"
    result = evaluate(prepared_data, {"cascaded": tiny_cascade.checkpoint}, out, config, calibration=calibration)

    assert result["matcher_independent"] and "faceres" in result["matcher"]
    # Six photos are too few for a five-fold two-sample test: it is left out, not reported noisy.
    assert (
        result["two_sample_test"]["folds_grouped_by"] == "identity" and result["two_sample_test"]["n_per_side"] is None
    )
    assert not any("c2st_auc" in values for values in result["methods"].values())
    methods = result["methods"]
    assert set(methods) == {*BASELINES, "cascaded", REAL_VS_REAL}
    for name in [*BASELINES, "cascaded"]:
        values = methods[name]
        assert -1 <= values["identity_match"] <= 1 and 0 <= values["verified"] <= 1
        assert 0 < values["ssim"] < 1 and 5 < values["psnr"] < 60 and values["fd"] > 0 and values["perceptual"] > 0
    # The summary is the mean of the per-photo scores written beside it, for every method.
    import pandas as pd

    per_photo = pd.read_parquet(out / "per_photo.parquet")
    for name in [*BASELINES, "cascaded"]:
        rows = per_photo[per_photo.method == name]
        assert len(rows) == result["photos"], name
        for metric in ("ssim", "psnr", "identity_match", "verified", "perceptual"):
            assert rows[metric].mean() == pytest.approx(methods[name][metric], rel=1e-6), (name, metric)
    assert json.loads((out / "metrics.json").read_text())["methods"]["cascaded"]["fd"] == methods["cascaded"]["fd"]
    assert (out / "grid.png").stat().st_size > 0 and (out / "plots" / "metrics_by_method.csv").is_file()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: bash scripts/install-test-deps.sh"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]
    page = (out / "report.html").as_uri()
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1400,1800", page],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (1800, 1400) and image.std() > 10  # a rendered page, not a blank one
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert '<table id="results">' in dom and "cascaded" in dom and "OpenCV Telea" in dom
    assert '<table id="paper">' in dom and "0.722" in dom  # the paper's figures beside ours


def _reference_inception_features(state: dict):
    """Standard FID features computed here, not by facectx: torchvision's InceptionV3 holding
    `state`, its 2048-d pool output for frames resized to 299 px (ImageNet normalisation).
    Returns fn(uint8 (B, H, W, 3) frames) -> (B, 2048) features."""
    import torch
    import torch.nn.functional as F
    import torchvision

    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(state)
    model.fc = torch.nn.Identity()
    model.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

    def features(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return model((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).numpy()

    return features


def _reference_lpips(alexnet):
    """The `lpips` package's own LPIPS v0.1 (its human-calibrated heads) on this AlexNet's trunk:
    fn(a, b) for uint8 (B, H, W, 3) images -> (B,) distances."""
    import lpips
    import torch

    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    trunk = alexnet.features.state_dict()
    reference.net.load_state_dict({name: trunk[name.split(".", 1)[1]] for name in reference.net.state_dict()})

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        signed = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
        with torch.no_grad():
            return reference(signed(a), signed(b)).flatten().numpy()

    return distance


def test_standard_fid_and_lpips_load_configured_weights(prepared_data, tmp_path, params, monkeypatch):
    """With InceptionV3 and LPIPS weights configured, the FDs reported are the Fréchet distances of
    that InceptionV3's features, and the perceptual scores the `lpips` package's LPIPS on that
    AlexNet, both worked out here for the same photos and baseline outputs."""
    import lpips
    import pandas as pd
    import torch
    import torchvision
    from safetensors.torch import save_file

    from facectx.evaluation.evaluate import mean_training_frame
    from facectx.evaluation.metrics import within_photo

    torch.manual_seed(0)
    state = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict()
    weights = tmp_path / "inception.safetensors"  # randomly initialised: ImageNet weights are not offline
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    monkeypatch.setenv("FACECTX_CACHE_DIR", str(tmp_path / "cache"))
    config = dataclasses.replace(
        params.evaluate,
        max_photos=4,
        batch_size=4,
        grid_photos=2,
        baselines=True,
        inception_weights=str(weights),
        matcher="dlib",
        lpips_backbone_weights=str(tmp_path / "alexnet.pth"),
        lpips_linear_weights=str(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"),
    )
    alexnet = _random_alexnet(tmp_path / "alexnet.pth")
    result = evaluate(prepared_data, {}, tmp_path / "eval", config)
    assert result["fd_network"].startswith("standard FID: InceptionV3 (inception.safetensors sha256:")
    assert (
        result["perceptual_network"].startswith("LPIPS v0.1 AlexNet") and "alexnet.pth" in result["perceptual_network"]
    )
    assert "LPIPS v0.1 AlexNet" in (tmp_path / "eval" / "report.html").read_text()

    # The same photos through the reference networks: the real photos' distance (val vs test) and
    # a baseline's (each Fréchet distance costs a 2048x2048 matrix square root: one method is
    # enough to show the outputs' features come from the configured network too).
    test, val = load_split(prepared_data, "test", 4), load_split(prepared_data, "val", 4)
    inception = _reference_inception_features(state)
    real = inception(test.target)
    methods = result["methods"]
    assert set(methods) == {*BASELINES, REAL_VS_REAL}
    assert methods[REAL_VS_REAL]["fd"] == pytest.approx(frechet_distance(inception(val.target), real), rel=1e-3)
    mean_frame = mean_training_frame(prepared_data)
    hard_mask = (test.mask[128] > 127).astype(np.uint8)
    outputs = {
        name: within_photo(make(mean_frame)(test.masked[128], hard_mask), test.target, test.valid)
        for name, make in BASELINES.items()
    }
    telea = frechet_distance(inception(outputs["OpenCV Telea"]), real)
    assert methods["OpenCV Telea"]["fd"] == pytest.approx(telea, rel=1e-3) and telea > 0
    # Every photo's perceptual score of every baseline is the `lpips` package's LPIPS.
    lpips_distance = _reference_lpips(alexnet)
    per_photo = pd.read_parquet(tmp_path / "eval" / "per_photo.parquet")
    for name, output in outputs.items():
        rows = per_photo[per_photo.method == name]
        assert list(rows.relative_path) == list(test.index.relative_path), name
        expected = lpips_distance(output, test.target)
        assert np.allclose(rows.perceptual, expected, rtol=1e-4, atol=1e-6) and (expected > 0).all(), name


@pytest.fixture(scope="module")
def larger_test_split(lfw_dir, tmp_path_factory, params):
    """~20 test and ~20 validation photos of disjoint identities: enough for a Fréchet distance."""
    from conftest import prepare_sample

    return prepare_sample(
        lfw_dir,
        tmp_path_factory.mktemp("fd"),
        params,
        train_people=60,
        test_people=14,
        max_photos=3,
        val_fraction=0.5,
        mirror=False,
    )


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

    from facectx.evaluation.lpips import LpipsDistance

    alexnet = _random_alexnet(tmp_path / "alexnet.pth")
    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # the real human-calibrated heads
    ours = LpipsDistance(str(tmp_path / "alexnet.pth"), str(heads))

    frames = _lfw_frames(lfw_dir, 6)
    a, b = frames[:3], frames[3:]
    expected = _reference_lpips(alexnet)(a, b)
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


def test_evaluate_says_which_method_it_runs_and_scores_how_many_photos_and_the_time_left(
    prepared_data, tmp_path, params, caplog
):
    """Off a terminal evaluate logs each method as it is run and as it is scored, on how many
    photos, and progress lines with counts and an ETA (a fake clock: 40 s between readings, past
    the 30 s interval, so every batch gives a line)."""
    import logging

    from facectx.progress import ProgressStyle

    ticks = iter(range(0, 100_000, 40))
    style = ProgressStyle(every_s=30.0, clock=lambda: float(next(ticks)))
    config = dataclasses.replace(params.evaluate, max_photos=4, batch_size=2, grid_photos=2, baselines=True)
    caplog.set_level(logging.INFO, logger="facectx")
    evaluate(prepared_data, {}, tmp_path / "eval", config, progress_style=style)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("facectx.")]
    assert f"evaluate: running methods: {4 * len(BASELINES)} photos to do" in lines
    lines = [line for line in lines if not line.endswith("to do")]
    methods, total = len(BASELINES), 4 * len(BASELINES)
    for name in BASELINES:
        assert f"evaluate: running {name} on 4 photos" in lines
        assert any(line.startswith(f"evaluate: scoring {name} (") and line.endswith("on 4 photos") for line in lines)
    running = [line for line in lines if line.startswith("evaluate: running methods: ")]
    assert [line.split()[3] for line in running] == [f"{done}/{total}" for done in range(2, total + 1, 2)]
    assert "ETA" in running[0] and "method OpenCV Telea" in running[0]
    scoring = [line for line in lines if line.startswith("evaluate: scoring: ")]
    assert [line.split()[2] for line in scoring] == [f"{4 * k}/{total}" for k in range(1, methods + 1)]
    assert "ETA" in scoring[0] and "done in" in scoring[-1]
