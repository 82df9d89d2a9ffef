"""The parameters `facectx pipeline submit` gives a run, per pipeline, checked before any request:
only options the chosen pipeline has, and places its pods can reach (S3 prefixes, http(s)
endpoints, a model in the registry). Parameters left out keep their compiled defaults (one place:
pipelines/training.py and pipelines/hallucinate.py)."""

from __future__ import annotations

from facectx.config import pipeline_params_text, resolve_params_text

# Each run parameter's submit option (how errors name it).
OPTIONS = {
    "source": "--source",
    "out": "--out",
    "model": "--model",
    "parallelism": "--parallelism",
    "profile": "--profile",
    "compare": "--compare",
    "mlflow_tracking_uri": "--mlflow-uri",
    "s3_endpoint": "--s3-endpoint",
    "resume_uri": "--resume-uri",
    "dvc_remote": "--dvc-remote",
}
# The run parameters of each pipeline that submit can set (training's parallelism is compiled in).
RUN_PARAMETERS = {
    "training": ("source", "profile", "compare", "mlflow_tracking_uri", "s3_endpoint", "resume_uri", "dvc_remote"),
    "hallucinate": ("source", "out", "model", "parallelism", "mlflow_tracking_uri", "s3_endpoint"),
}


class SubmitError(RuntimeError):
    """A submission failed for a reason the user can act on; the message is one line."""


def run_arguments(pipeline: str, params_file, given: dict) -> dict:
    """given: {run parameter: value, or None for the compiled default}; returns the parameters
    set, or raises SubmitError naming the option at fault."""
    if pipeline not in RUN_PARAMETERS:
        raise SubmitError(f"no pipeline {pipeline!r}: choose one of {', '.join(RUN_PARAMETERS)}")
    known = RUN_PARAMETERS[pipeline]
    for name, value in given.items():
        if value is not None and name not in known:
            options = ", ".join(OPTIONS[n] for n in known)
            raise SubmitError(f"{OPTIONS[name]} does not apply to the {pipeline} pipeline (its options: {options})")
    arguments = {name: value for name, value in given.items() if value is not None}
    _check_places(arguments)
    if pipeline == "hallucinate":
        _check_hallucinate(arguments)
    else:  # a misspelt profile or variant fails here, not after the cluster has pulled images
        text = pipeline_params_text(params_file)
        resolve_params_text(text, arguments.get("profile", ""), arguments.get("compare", ""), where=str(params_file))
    return arguments


def _s3_prefix(name: str, value: str, why: str) -> None:
    if not value.startswith("s3://") or len(value) <= len("s3://"):
        raise SubmitError(f"{OPTIONS[name]} {value!r} must be an S3 prefix, s3://bucket/prefix: {why}")


def _check_places(arguments: dict) -> None:
    """The run's data places as the pods need them: S3 prefixes (no pod mounts a folder) and an
    endpoint URL boto3 accepts."""
    _s3_prefix("source", arguments["source"], "the pipeline's pods read the photos from the object store")
    endpoint = arguments.get("s3_endpoint")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise SubmitError(f"--s3-endpoint {endpoint!r} must start with http:// or https://")
    if "dvc_remote" in arguments:
        _s3_prefix("dvc_remote", arguments["dvc_remote"], "the pods mount no folder")


def _check_hallucinate(arguments: dict) -> None:
    if "out" not in arguments:
        raise SubmitError("--out is required for the hallucinate pipeline: where the frames go, s3://bucket/prefix")
    _s3_prefix("out", arguments["out"], "the pipeline's pods write the frames to the object store")
    if arguments["out"].rstrip("/") == arguments["source"].rstrip("/"):
        raise SubmitError(f"--out {arguments['out']!r} is the source: give the frames a prefix of their own")
    model = arguments.get("model")
    if model is not None and not model.startswith("models:/"):
        raise SubmitError(
            f"--model {model!r}: the pods take the model from the registry, models:/NAME@alias or models:/NAME/VERSION"
        )
    if arguments.get("parallelism", 1) < 1:
        raise SubmitError(f"--parallelism {arguments['parallelism']}: give 1 or more GPU steps")
