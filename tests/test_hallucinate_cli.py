"""`facectx hallucinate`: a real LFW photo -> a 128x128 PNG; unreadable input -> exit 1 naming the file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import REPO


def _cli(params_file, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "facectx.cli", "--params", str(params_file), "hallucinate", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_hallucinate_writes_a_128px_png(tiny_cascade, lfw_dir, tmp_path):
    from facectx.inference import PhotoHallucinator

    photo, out = lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", tmp_path / "out.png"
    result = _cli(tiny_cascade.params_file, photo, "-o", out, "--checkpoint", tiny_cascade.checkpoint)
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (128, 128) and image.mode == "RGB"
    # The PNG is the model's output for that photo (not the masked input, not a blank frame).
    tiny = tiny_cascade.params
    expected = PhotoHallucinator(tiny_cascade.checkpoint, tiny.crop, tiny.landmarks)(
        np.asarray(Image.open(photo).convert("RGB"))
    )
    assert np.abs(np.asarray(image).astype(int) - expected["output"].astype(int)).max() <= 1
    assert np.abs(expected["output"].astype(int) - expected["masked"].astype(int)).mean() > 5


def test_hallucinate_rejects_a_text_file_naming_it(tiny_cascade, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    result = _cli(tiny_cascade.params_file, text, "-o", tmp_path / "out.png", "--models-dir", tiny_cascade.models_dir)
    assert result.returncode == 1
    assert "facectx hallucinate: error:" in result.stderr and str(text) in result.stderr
    assert "not a usable photo" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_hallucinate_without_a_face_says_so(tiny_cascade, tmp_path):
    gradient = tmp_path / "gradient.png"
    Image.fromarray(
        np.repeat(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], 160, axis=0).repeat(3, axis=2)
    ).save(gradient)
    result = _cli(
        tiny_cascade.params_file, gradient, "-o", tmp_path / "out.png", "--models-dir", tiny_cascade.models_dir
    )
    assert result.returncode == 1
    assert str(gradient) in result.stderr and "no face found" in result.stderr
