"""Model registration adapters: MLflow's model registry (ModelRegistry, for registry.py) and
logged pyfunc models (python_model_base, invalid_input, log_python_model, for serving.py)."""

from __future__ import annotations

import os
from pathlib import Path

from facectx.tracking import settings
from facectx.tracking.mlflow_runs import connect

# mlflow is imported inside the functions: it is optional where runs are tracked into folders
# (an air-gapped node), and facectx.tracking, which imports this module, must load there.


class ModelRegistry:
    """MLflow's model registry at the tracking URI (default: settings.tracking_uri()): what
    registry.py's gate needs of it. A server that is down is a TrackingUnavailable error naming it
    when this is made, before anything is registered or promoted."""

    def __init__(self, tracking_uri: str | None = None):
        self.client = connect(settings.tracking_uri(tracking_uri))

    def register(self, model_uri: str, name: str, tags: dict[str, str]) -> int:
        """A new version of registered model `name` (created if new) for `model_uri`; its number."""
        import mlflow

        return int(mlflow.register_model(model_uri, name, tags=tags).version)

    def by_alias(self, name: str, alias: str):
        """The version (an mlflow ModelVersion: .version, .tags, .run_id) of `name` that `alias`
        names, or None when there is none (no such alias, or no such model)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def version(self, name: str, alias: str | None = None, number: str | None = None):
        """The version `alias` names, or version `number`, of `name`; None when there is none."""
        from mlflow.exceptions import MlflowException

        if alias is not None:
            return self.by_alias(name, alias)
        try:
            return self.client.get_model_version(name, str(number))
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def set_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), key, value)


def download_model_artifact(
    model_uri: str, artifact: str, dst: str | os.PathLike, tracking_uri: str | None = None
) -> Path:
    """One artifact folder of a logged pyfunc model (its `artifacts/<artifact>`) into dst/<artifact>,
    whole or not at all (downloaded beside dst, then renamed)."""
    import shutil
    import tempfile

    import mlflow.artifacts

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dst.parent) as folder:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri}", dst_path=folder, tracking_uri=settings.tracking_uri(tracking_uri)
            )
        )
        found = local / "artifacts" / artifact
        if not found.is_dir():
            raise FileNotFoundError(f"{model_uri}: the logged model has no artifacts/{artifact} folder")
        staged = Path(folder) / "staged"
        staged.mkdir()
        shutil.move(str(found), staged / artifact)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(staged, dst)
    return dst / artifact


def python_model_base() -> type:
    """mlflow.pyfunc.PythonModel, the base class of a model MLflow serves (serving.FaceContextModel)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


def invalid_input(message: str) -> Exception:
    """What a served model raises for a bad request: MLflow's scoring server answers 400 with `message`."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def set_served_model(model) -> None:
    """Name `model` as the model a models-from-code file defines (what log_python_model's file calls)."""
    import mlflow.models

    mlflow.models.set_model(model)


def log_python_model(name: str, model_code: str | os.PathLike, input_example, output_example, **options):
    """Log the model that the Python file `model_code` defines (MLflow's models from code: the file
    calls set_served_model; nothing is pickled) as an MLflow pyfunc model in the active run (one is
    started if none is), its signature inferred from an example input and the model's output for
    it; options go to mlflow.pyfunc.log_model (artifacts, pip_requirements, code_paths, metadata).
    Returns mlflow's ModelInfo (.model_uri)."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    return mlflow.pyfunc.log_model(
        name=name,
        python_model=os.fspath(model_code),
        input_example=input_example,
        signature=infer_signature(input_example, output_example),
        **options,
    )
