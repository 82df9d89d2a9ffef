"""Submit a pipeline (training or hallucinate) as a run to a Kubeflow Pipelines endpoint, and retry a failed run.

`facectx pipeline submit` compiles to a temporary file (pipelines.compile) and creates a run
through kfp.Client (the KFP v2 REST API: healthz, experiments, runs); `facectx pipeline retry`
asks the backend to run a failed run's failed steps again (POST /apis/v2beta1/runs/{id}:retry).
Failures become one-line errors that name the endpoint: unreachable, token refused, run rejected.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines import DEFAULT_EXPERIMENT, TOKEN_ENV
from pipelines.compile import compile_pipeline
from pipelines.gpu import GpuPlacement
from pipelines.run_arguments import SubmitError, run_arguments

HEALTHZ_TIMEOUT_S = 15
# KFP v2 run states the backend retries (an Argo workflow in phase Failed or Error; a terminated run's too).
RETRYABLE_STATES = ("FAILED", "CANCELED")


@dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    name: str
    experiment: str
    url: str


def read_token(token_file: str | None) -> str | None:
    """The bearer token: --token-file, else $KF_PIPELINES_TOKEN, else none (an open endpoint)."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise SubmitError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def submit(
    params_file,
    endpoint: str,
    source: str,
    *,
    pipeline: str = "training",
    out: str | None = None,
    model: str | None = None,
    namespace: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    image: str | None = None,
    profile: str | None = None,
    compare: str | None = None,
    parallelism: int | None = None,
    gpus_per_stage: int = 1,
    placement: GpuPlacement | None = None,
    mlflow_uri: str | None = None,
    s3_endpoint: str | None = None,
    resume_uri: str | None = None,
    dvc_remote: str | None = None,
    token: str | None = None,
) -> SubmittedRun:
    """Compile a pipeline (training, or hallucinate: a registered model over a dataset) and create
    one run of it at `endpoint`. Every step runs (the pipelines compile with caching off:
    pipelines/training.py says why nothing could hit). parallelism: training's compared models at
    once (compiled in, default 2); hallucinate's GPU steps (a run parameter, default the compiled 8)."""
    endpoint = _checked_endpoint(endpoint)
    given = dict(source=source, out=out, model=model, profile=profile, compare=compare, mlflow_tracking_uri=mlflow_uri,
                 s3_endpoint=s3_endpoint, resume_uri=resume_uri, dvc_remote=dvc_remote)  # fmt: skip
    given["parallelism"] = parallelism if pipeline == "hallucinate" else None
    arguments = run_arguments(pipeline, params_file, given)
    run_name = run_name or f"facectx-{pipeline} {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"

    with _explained_errors(endpoint, token):
        multi_user = _check_endpoint(endpoint, token)
    if multi_user and not namespace:
        raise SubmitError(f"{endpoint} is a multi-user Kubeflow: give --namespace (your profile's namespace)")

    compiled_parallelism = (2 if parallelism is None else parallelism) if pipeline == "training" else 0
    with tempfile.TemporaryDirectory(prefix="facectx-pipeline-") as tmp:
        package = compile_pipeline(
            params_file,
            Path(tmp) / f"{pipeline}.yaml",
            image,
            gpus_per_stage,
            compiled_parallelism,
            placement,
            pipeline,
        )
        return _create_run(endpoint, namespace, token, package, arguments, run_name, experiment)


def _create_run(endpoint, namespace, token, package: Path, arguments: dict, run_name: str, experiment: str):
    with _explained_errors(endpoint, token):
        client = _client(endpoint, namespace, token)
        # kfp prints "Experiment details: ..." / "Run details: ..." itself; we print one summary.
        with contextlib.redirect_stdout(io.StringIO()):
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
                enable_caching=None,  # the compiled choice (off), not kfp's rewrite of the root DAG
            )
    ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT", endpoint).rstrip("/")  # as kfp.Client links runs
    return SubmittedRun(
        run_id=result.run_id, name=run_name, experiment=experiment, url=f"{ui}/#/runs/details/{result.run_id}"
    )


def retry(endpoint: str, run_id: str, *, token: str | None = None) -> str:
    """Ask the backend to run the failed steps of run `run_id` again (KFP's run retry: the same
    run and run id, its succeeded steps kept), e.g. after a training pod was preempted; the
    retried training steps resume from their state under resume_uri/<run id>. Returns the run's
    state before the retry. Only a failed or terminated run can be retried."""
    import kfp_server_api

    endpoint = _checked_endpoint(endpoint)
    with _explained_errors(endpoint, token):
        runs = kfp_server_api.RunServiceApi(_api_client(endpoint, token))
        try:
            state = str(runs.run_service_get_run(run_id, _request_timeout=HEALTHZ_TIMEOUT_S).state or "")
        except kfp_server_api.ApiException as err:
            if err.status == 404:
                raise SubmitError(f"no run {run_id} at {endpoint}: {_server_message(err)}") from err
            raise
        if state not in RETRYABLE_STATES:
            raise SubmitError(
                f"run {run_id} at {endpoint} is {state or 'in no state'}: only a failed or terminated run can be retried"
            )
        runs.run_service_retry_run(run_id, _request_timeout=HEALTHZ_TIMEOUT_S)
    return state


def _checked_endpoint(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise SubmitError(f"endpoint {endpoint!r} must start with http:// or https://")
    return endpoint


def _client(endpoint: str, namespace: str | None, token: str | None):
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        # kfp.Client's default namespace "kubeflow" means "none given" to it.
        return kfp.Client(host=endpoint, namespace=namespace or "kubeflow", existing_token=token)


def _check_endpoint(endpoint: str, token: str | None) -> bool:
    """One healthz call first, with a timeout: kfp.Client retries a failing healthz five times, 5 s
    apart, and then reports only a TimeoutError. Returns whether the deployment is multi-user."""
    import kfp_server_api

    health = kfp_server_api.HealthzServiceApi(_api_client(endpoint, token))
    return bool(health.healthz_service_get_healthz(_request_timeout=HEALTHZ_TIMEOUT_S).multi_user)


def _api_client(endpoint: str, token: str | None):
    """kfp_server_api's client (what kfp.Client wraps) with the bearer token and no retries."""
    import kfp_server_api

    config = kfp_server_api.Configuration(host=endpoint)
    config.retries = 0  # fail at once: no urllib3 "Retrying" warnings before the one-line error
    if token:
        config.api_key["authorization"] = token
        config.api_key_prefix["authorization"] = "Bearer"
    return kfp_server_api.ApiClient(config)


@contextlib.contextmanager
def _explained_errors(endpoint: str, token: str | None):
    """The KFP client's exceptions (multi-line, with response headers) as one line naming the endpoint."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as err:
        raise SubmitError(_api_error_message(endpoint, err, token)) from err
    except urllib3.exceptions.HTTPError as err:  # refused, DNS, timeouts: wrapped in MaxRetryError
        reason = getattr(err, "reason", None) or err
        # "HTTPConnection(host=..., port=...): Failed to establish a new connection: [Errno 111] ..."
        detail = str(reason).split(": ", 1)[-1]
        raise SubmitError(f"cannot reach Kubeflow Pipelines at {endpoint}: {detail}") from err


def _api_error_message(endpoint: str, err, token: str | None) -> str:
    status = err.status or 0
    message = _server_message(err)
    if status in (401, 403):
        if not token:
            return (
                f"{endpoint} refused the request ({status} {err.reason}): it needs a token; give --token-file or "
                f"set {TOKEN_ENV}" + (f" ({message})" if message else "")
            )
        return f"{endpoint} refused the token ({status} {err.reason})" + (f": {message}" if message else "")
    if status == 404:
        return f"no Kubeflow Pipelines v2 API at {endpoint} (404 {err.reason}" + (f": {message})" if message else ")")
    if status == 0:  # TLS failures come as status 0
        return f"cannot reach Kubeflow Pipelines at {endpoint}: {err.reason}"
    return f"{endpoint} rejected the run ({status} {err.reason})" + (f": {message}" if message else "")


def _server_message(err) -> str:
    """The API's own explanation: grpc-gateway errors are JSON {"code", "message", "details"}
    (older servers also send "error"); anything else is shown as text, on one line."""
    body = err.body.decode("utf-8", "replace") if isinstance(err.body, bytes) else (err.body or "")
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            body = parsed.get("message") or parsed.get("error") or body
    except ValueError:
        pass
    text = " ".join(str(body).split())
    return text[:500] + ("..." if len(text) > 500 else "")
