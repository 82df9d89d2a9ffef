"""`facectx hallucinate`: a real LFW photo -> a 128x128 PNG; unreadable input -> exit 1 naming the file."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, tiny_training_params
from facectx import steps
from facectx.config import dump_params


@pytest.fixture(scope="module")
def trained(prepared_data, params, tmp_path_factory):
    """A tiny five-stage cascade (identity/perceptual losses off: only speed matters) and its params file."""
    root = tmp_path_factory.mktemp("hallucinate")
    tiny = tiny_training_params(params, max_train_rows=4, val_rows=2, grid_rows=1)
    tiny = dataclasses.replace(tiny, losses=dataclasses.replace(tiny.losses, identity=False, perceptual=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.chdir(root)
        for stage in tiny.train.stages:
            steps.train_stage_step(tiny, stage, prepared_data, **steps.stage_dirs(tiny, stage, root / "models"))
    params_file = root / "params.yaml"
    params_file.write_text(dump_params(tiny))
    return root, params_file


def _cli(params_file, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "facectx.cli", "--params", str(params_file), "hallucinate", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)


def test_hallucinate_writes_a_128px_png(trained, lfw_dir, tmp_path):
    root, params_file = trained
    out = tmp_path / "out.png"
    result = _cli(params_file, lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", "-o", out,
                  "--checkpoint", root / "models" / "stage_128" / "checkpoint")
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (128, 128) and image.mode == "RGB"
    assert np.asarray(image).std() > 0


def test_hallucinate_rejects_a_text_file_naming_it(trained, tmp_path):
    root, params_file = trained
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    result = _cli(params_file, text, "-o", tmp_path / "out.png", "--models-dir", root / "models")
    assert result.returncode == 1
    assert "facectx hallucinate: error:" in result.stderr and str(text) in result.stderr
    assert "not a usable photo" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_hallucinate_without_a_face_says_so(trained, tmp_path):
    root, params_file = trained
    gradient = tmp_path / "gradient.png"
    Image.fromarray(np.repeat(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], 160, axis=0).repeat(3, axis=2)).save(gradient)
    result = _cli(params_file, gradient, "-o", tmp_path / "out.png", "--models-dir", root / "models")
    assert result.returncode == 1
    assert str(gradient) in result.stderr and "no face found" in result.stderr
