"""The registered champion served by `facectx serve` (MLflow's scoring server): a real LFW photo in, a 128x128 PNG
out; bad requests get a 4xx naming the problem, and the server keeps answering."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from benchmarks.serving_load import Server, bad_requests, request_mix, run_load
from facectx import registry, tracking

NAME = "facectx-serving-test"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(prepared_data, tiny_cascade, tmp_path_factory):
    """Register and promote the session's tiny cascade, serve models:/NAME@champion; yield its URL."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)
        metrics = {"fd": 1.0, "identity_match": 0.5, "perceptual": 0.5}
        from facectx.serving import log_pyfunc_model

        with tracking.step_run("serving-test", {}) as run_id:
            info = log_pyfunc_model(
                tiny_cascade.checkpoint,
                tiny_cascade.params,
                metrics,
                prepared_dir=prepared_data,
                raw_dir=prepared_data.parent / "raw",
            )
        registry.register(info.model_uri, NAME, metrics, run_id)
        assert registry.promote(NAME, ["fd:lower"])["promoted"]

        # The README's command, as in a fresh shell: the virtualenv neither activated nor on PATH.
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        server = Server(
            f"models:/{NAME}@champion", root / "serve.log", env={**env, "MLFLOW_TRACKING_URI": uri, "PATH": path}
        )
        try:
            server.wait_ready()
            yield server.url
        finally:
            server.stop()


def _invoke(url: str, columns, data):
    return requests.post(f"{url}/invocations", json={"dataframe_split": {"columns": columns, "data": data}}, timeout=60)


def in_process(tiny_cascade, photo: Path) -> dict[str, np.ndarray]:
    """What the registered checkpoint gives for the photo in this process (facectx.inference):
    the 128x128 output frame, and the masked face and mask it was made from."""
    from facectx.data.photos import decode_photo
    from facectx.inference import PhotoHallucinator

    params = tiny_cascade.params
    rgb = decode_photo(photo.read_bytes(), params.validate.max_pixels, params.validate.formats)
    landmarks = dataclasses.replace(params.landmarks, device="cpu")
    return PhotoHallucinator(tiny_cascade.checkpoint, params.crop, landmarks)(rgb)


def _check_good(url: str, photo: Path, expected: dict[str, np.ndarray]) -> None:
    """The served frame is the model's own output for the photo: the photo's face pixels pasted
    back, a context that is not a flat fill, and what the checkpoint gives in this process."""
    response = _invoke(url, ["image"], [[_b64(photo.read_bytes())]])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 1
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(predictions[0]["image"]))))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    face, context = expected["mask"] == 255, expected["mask"] == 0
    assert face.sum() > 128 * 128 / 8 and context.sum() > 128 * 128 / 4  # a real face crop: both regions
    assert expected["masked"][face].std() > 10  # ... and a face with features, not a flat patch
    assert np.array_equal(image[face], expected["masked"][face])  # the input's face, pasted back
    # A painted context, not a flat fill (the tiny test model paints a nearly even grey: many
    # colours still, where a constant frame has one).
    assert len(np.unique(image[context], axis=0)) > 16
    # The same frame as the checkpoint in this process (at most a rounding step apart: the server's
    # thread count may order a convolution's sums differently).
    difference = np.abs(image.astype(int) - expected["output"].astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())


def test_served_champion_hallucinates_and_rejects_bad_requests(served, tiny_cascade, lfw_dir):
    photo = lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    expected = in_process(tiny_cascade, photo)
    _check_good(served, photo, expected)

    def rejected(columns, data) -> str:
        """A 4xx answer's message: the model's own, after MLflow's "Failed to predict data ... Error: "."""
        response = _invoke(served, columns, data)
        assert 400 <= response.status_code < 500, response.text
        message = response.json()["message"]
        return message.rpartition("\nError: ")[2]

    good = _b64(photo.read_bytes())
    message = rejected(["image"], [[_b64(b"this is not a photo at all\n")]])
    assert message.startswith("row 0: not a usable photo: not a readable image"), message

    message = rejected(["image"], [[good], [_b64(photo.read_bytes()[:4000])]])
    assert message.startswith("row 1: not a usable photo: truncated or corrupt image data"), message

    gif = io.BytesIO()
    Image.open(photo).save(gif, format="GIF")
    message = rejected(["image"], [[_b64(gif.getvalue())]])
    assert message.startswith("row 0: not a usable photo: unsupported format GIF; accepted: JPEG, PNG"), message

    message = rejected(["image"], [["%%% not base64 %%%"]])
    assert message.startswith("row 0: not valid base64 text"), message

    message = rejected(["foo"], [[good]])  # MLflow's schema check answers before the model sees it
    assert "missing inputs ['image']" in message and "extra inputs: ['foo']" in message, message

    message = rejected(["image"], [[[good, "x"]]])
    assert message.startswith("row 0: expected a base64 string of photo bytes, got list"), message

    gradient = np.repeat(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], 200, axis=0).repeat(3, axis=2)
    message = rejected(["image"], [[good], [_b64(_png(gradient))]])
    assert message.startswith("row 1: no face found in the photo"), message

    _check_good(served, photo, expected)  # still serving after the bad requests


def test_served_model_under_load_answers_every_request(served, lfw_dir):
    """A short run of benchmarks/serving_load.py: 4 clients, real photos mixed with every kind of
    bad input: no 5xx, no request without an answer, every bad input a 4xx with its reason."""
    photos = sorted((lfw_dir / "images").rglob("*.jpg"))[:6]
    result = run_load(served, request_mix(photos, bad_every=3), clients=4, seconds=8)
    summary = result.summary({r.kind: r.reason for r in bad_requests(photos[0])})
    assert summary["server_errors_5xx"] == 0 and summary["no_answer"] == 0, summary
    assert summary["bad_without_4xx_and_reason"] == [], summary
    assert summary["good"] > 0 and summary["good_ok"] == summary["good"] and summary["bad"] > 0, summary
