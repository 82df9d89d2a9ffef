"""`facectx pipeline compile/submit/retry` against a Kubeflow Pipelines API stand-in on loopback.

The stand-in answers the KFP v2beta1 REST calls that kfp.Client 2.17 makes to submit a compiled
package (kfp/client/client.py: create_run_from_pipeline_package -> create_experiment ->
get_experiment -> run_pipeline) and the run retry (POST /apis/v2beta1/runs/{run_id}:retry, as
kubeflow/pipelines' backend/api/v2beta1/run.proto maps RetryRun; the backend retries only a run
whose workflow failed), at the paths and with the JSON field names of kfp_server_api
(api/healthz_service_api.py, experiment_service_api.py, run_service_api.py; the models'
attribute_map). It keeps experiments and runs, records every request, and checks the bearer
token like an authenticating gateway.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from conftest import REPO
from facectx.cli import main
from servers import refusing_port

API = "/apis/v2beta1"
RUN_PARAMETERS = {
    "source",
    "profile",
    "compare",
    "params_yaml",
    "mlflow_tracking_uri",
    "s3_endpoint",
    "resume_uri",
    "dvc_remote",
}
TOKEN = "kfp-token-sentinel-7d1f"
AWS_SECRET = "aws-secret-sentinel-93ab"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, message: str) -> dict:
    """grpc-gateway's error body (google.rpc.Status), as the KFP API server sends it."""
    return {"code": code, "message": message, "details": []}


class FakeKfp(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.token: str | None = None  # when set, any other bearer token gets 401
        self.multi_user = False
        self.fail: dict[tuple[str, str], tuple[int, dict]] = {}  # (method, path) -> (status, body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def run_bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests if (r["method"], r["path"]) == ("POST", f"{API}/runs")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 expects of the real gateway

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _reply(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        server: FakeKfp = self.server
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        server.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
            return self._reply(401, _status(16, "Unauthenticated: invalid bearer token"))
        if (self.command, url.path) in server.fail:
            return self._reply(*server.fail[(self.command, url.path)])
        query = {key: values[0] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        route = (self.command, url.path)
        if route == ("GET", f"{API}/healthz"):
            return self._reply(200, {"multi_user": server.multi_user})
        if route == ("GET", f"{API}/experiments"):
            return self._reply(200, self._list_experiments(query))
        if route == ("POST", f"{API}/experiments"):
            experiment = json.loads(body)
            experiment.update(experiment_id=str(uuid.uuid4()), created_at=_now(), storage_state="AVAILABLE")
            server.experiments[experiment["experiment_id"]] = experiment
            return self._reply(200, experiment)
        if route == ("POST", f"{API}/runs"):
            run = json.loads(body)
            if run.get("experiment_id") not in server.experiments:
                return self._reply(404, _status(5, f"experiment {run.get('experiment_id')} not found"))
            if not run.get("pipeline_spec") and not run.get("pipeline_version_reference"):
                return self._reply(
                    400, _status(3, "Invalid input error: a run needs a pipeline spec or a pipeline version")
                )
            run.update(run_id=str(uuid.uuid4()), state="PENDING", created_at=_now(), storage_state="AVAILABLE")
            server.runs[run["run_id"]] = run
            return self._reply(200, run)
        if self.command == "POST" and url.path.startswith(f"{API}/runs/") and url.path.endswith(":retry"):
            run = server.runs.get(url.path[len(f"{API}/runs/") : -len(":retry")])
            if run is None:
                return self._reply(404, _status(5, "run not found"))
            if run["state"] not in ("FAILED", "CANCELED"):
                return self._reply(400, _status(3, "Workflow must be Failed/Error to retry"))
            run["state"] = "RUNNING"
            return self._reply(200, {})
        if self.command == "GET" and url.path.startswith(f"{API}/runs/"):
            run = server.runs.get(url.path.rsplit("/", 1)[1])
            return self._reply(200, run) if run else self._reply(404, _status(5, "run not found"))
        return self._reply(404, _status(5, "Not Found"))

    def _list_experiments(self, query: dict) -> dict:
        # kfp looks an experiment up by name: filter={"predicates": [{"operation": 1 (EQUALS),
        # "key": "display_name", "stringValue": NAME}]}, plus namespace= (empty when single-user).
        predicates = json.loads(query.get("filter", "{}")).get("predicates", [])
        found = [
            e
            for e in self.server.experiments.values()
            if all(e.get(p["key"]) == p["stringValue"] for p in predicates)
            and e.get("namespace", "") == query.get("namespace", e.get("namespace", ""))
        ]
        return {"experiments": found, "total_size": len(found)} if found else {}

    do_GET = do_POST = do_DELETE = _handle


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    # kfp.Client reads (and may write) ~/.config/kfp/context.json: keep the user's out of the tests.
    from kfp.client.client import Client

    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    monkeypatch.delenv("FACECTX_IMAGE", raising=False)
    monkeypatch.chdir(REPO)  # the CLI's default params.yaml
    server = FakeKfp()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("facectx pipeline: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _tasks(spec: dict):
    """Every task of every DAG: the root's and those inside ParallelFor sub-DAGs."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return [(name, task) for dag in dags for name, task in dag["tasks"].items()]


def test_compile_writes_the_image_into_every_step(tmp_path, monkeypatch):
    from components.image import PLACEHOLDER_IMAGE, default_image

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("FACECTX_IMAGE", raising=False)
    # By default: the tag `make image` gives an image of this checkout (test below: the two agree).
    assert re.fullmatch(
        rf"ghcr\.io/facectx/facectx:{re.escape(version('facectx'))}-[0-9a-f]{{7,}}(-dirty)?", default_image()
    )
    plain = tmp_path / "plain.yaml"
    assert main(["pipeline", "compile", "--out", str(plain)]) == 0
    assert PLACEHOLDER_IMAGE not in plain.read_text()
    assert _images(plain) == {default_image()}
    # FACECTX_IMAGE, read when compiling (never when the components are imported), names every step's image.
    monkeypatch.setenv("FACECTX_IMAGE", "registry.example/facectx:override")
    from_env = tmp_path / "from-env.yaml"
    assert main(["pipeline", "compile", "--out", str(from_env)]) == 0
    assert _images(from_env) == {"registry.example/facectx:override"}

    out = tmp_path / "nested" / "training.yaml"
    assert (
        main(["pipeline", "compile", "--out", str(out), "--image", "registry.example/facectx:9", "--parallelism", "3"])
        == 0
    )
    text = out.read_text()
    assert text.startswith("# PIPELINE DEFINITION")  # kfp's header survives the rewrite
    spec = next(yaml.safe_load_all(text))
    assert _images(out) == {"registry.example/facectx:9"}
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= RUN_PARAMETERS
    loops = [t for _, t in _tasks(spec) if "iteratorPolicy" in t]
    assert [t["iteratorPolicy"]["parallelismLimit"] for t in loops] == [3]
    assert [p.name for p in out.parent.iterdir()] == ["training.yaml"]  # no temp file left behind


def _images(path) -> set[str]:
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"].values()
    return {e["container"]["image"] for e in executors if "container" in e}


def test_default_image_is_the_tag_make_image_builds(tmp_path):
    """components.image.default_image and scripts/build-image.sh (what `make image` runs) give the
    same tag, clean and with uncommitted changes, in a fresh clone (Docker stood in for by a
    client that records its arguments: only the tag is under test)."""
    from components.image import default_image

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=60)
    docker = tmp_path / "docker"
    calls = tmp_path / "calls"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    docker.chmod(0o755)

    def make_image_tag() -> str:
        calls.write_text("")
        env = {k: v for k, v in os.environ.items() if k != "IMAGE"} | {"DOCKER": str(docker)}
        done = subprocess.run(
            ["make", "--no-print-directory", "image"], cwd=clone, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        [build] = [line.split() for line in calls.read_text().splitlines() if line.startswith("build ")]
        return build[build.index("-t") + 1]

    assert default_image(clone) == make_image_tag() and not default_image(clone).endswith("-dirty")
    (clone / "tests" / "scratch.txt").write_text("not part of the image\n")
    assert default_image(clone) == make_image_tag() and not default_image(clone).endswith("-dirty")
    with open(clone / "src" / "facectx" / "__init__.py", "a") as file:
        file.write("# changed\n")
    assert default_image(clone) == make_image_tag() and default_image(clone).endswith("-dirty")

    with pytest.raises(RuntimeError, match="give --image or set FACECTX_IMAGE"):
        default_image(tmp_path)  # not a checkout


def test_submit_sends_the_compiled_pipeline_arguments_and_token(kfp_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    kfp_server.token = TOKEN
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    rc = main(
        [
            "pipeline",
            "submit",
            "--endpoint",
            kfp_server.url + "/",
            "--namespace",
            "team-faces",
            "--experiment",
            "context-gan",
            "--run-name",
            "paper-run-1",
            "--image",
            "registry.example/facectx:7",
            "--profile",
            "quick",
            "--compare",
            "progan,l2_loss",
            "--source",
            "s3://photos/lfw",
            "--parallelism",
            "1",
            "--gpus-per-stage",
            "2",
            "--mlflow-uri",
            "http://mlflow.test:5000",
            "--resume-uri",
            "s3://resume-bucket",
            "--s3-endpoint",
            "https://s3.test:9000",
            "--dvc-remote",
            "s3://versions/facectx",
            "--node-selector",
            "pool=gpu-train",
            "--toleration",
            "dedicated=ml:NoSchedule",
            "--token-file",
            str(token_file),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    [run] = kfp_server.runs.values()
    assert f"submitted run {run['run_id']} (paper-run-1, experiment context-gan)" in out
    assert f"{kfp_server.url}/#/runs/details/{run['run_id']}" in out

    # A namespace given: kfp.Client skips its own healthz; ours checks the endpoint first.
    assert kfp_server.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    lookup = kfp_server.requests[1]["query"]
    assert lookup["namespace"] == ["team-faces"]
    assert json.loads(lookup["filter"][0])["predicates"][0]["stringValue"] == "context-gan"
    [experiment] = kfp_server.experiments.values()
    assert (experiment["display_name"], experiment["namespace"]) == ("context-gan", "team-faces")

    [body] = kfp_server.run_bodies()
    assert body["experiment_id"] == experiment["experiment_id"] and body["display_name"] == "paper-run-1"
    assert body["runtime_config"]["parameters"] == {
        "source": "s3://photos/lfw",
        "profile": "quick",
        "compare": "progan,l2_loss",
        "mlflow_tracking_uri": "http://mlflow.test:5000",
        "resume_uri": "s3://resume-bucket",
        "s3_endpoint": "https://s3.test:9000",
        "dvc_remote": "s3://versions/facectx",
    }
    # The compiled package, inline: pipeline spec + Kubernetes platform spec (secrets by name only).
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "facectx-training"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= RUN_PARAMETERS
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {"registry.example/facectx:7"}
    assert {e["container"].get("resources", {}).get("accelerator", {}).get("resourceCount") for e in executors} >= {"2"}
    assert [t["iteratorPolicy"]["parallelismLimit"] for _, t in _tasks(spec) if "iteratorPolicy" in t] == [1]
    # Caching off, in every DAG: kfp sends enableCache false as an empty cachingOptions.
    assert all(not task.get("cachingOptions", {}).get("enableCache", False) for _, task in _tasks(spec))
    # The placement options reach the GPU steps' Kubernetes settings, and only theirs.
    platform = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    placed = {label for label, config in platform.items() if "nodeSelector" in config}
    gpu_steps = {
        label
        for label, e in spec["deploymentSpec"]["executors"].items()
        if "accelerator" in e["container"].get("resources", {})
    }
    assert placed == gpu_steps and len(gpu_steps) > 1
    for label in gpu_steps:
        assert platform[label]["nodeSelector"]["labels"] == {"pool": "gpu-train"}
        assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in platform[label][
            "tolerations"
        ]

    # The token travels only in the Authorization header; no secret in any body, query or path.
    for request in kfp_server.requests:
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
        headers = {k: v for k, v in request["headers"].items() if k != "authorization"}
        for secret in (TOKEN, AWS_SECRET):
            assert secret not in request["body"] + request["path"] + json.dumps(request["query"]) + json.dumps(headers)
    assert TOKEN not in out + err and AWS_SECRET not in out + err


def test_submit_defaults(kfp_server, monkeypatch, capsys):
    from components.image import default_image

    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    kfp_server.token = TOKEN
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://photos/lfw"]) == 0
    # No namespace: kfp.Client asks healthz itself too (multi-user or not), then looks the experiment up.
    assert kfp_server.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    [experiment] = kfp_server.experiments.values()
    assert experiment["display_name"] == "facectx"
    [body] = kfp_server.run_bodies()
    assert body["runtime_config"]["parameters"] == {"source": "s3://photos/lfw"}  # compiled defaults for the rest
    assert body["display_name"].startswith("facectx-training ")
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {default_image()}
    assert [t["iteratorPolicy"]["parallelismLimit"] for _, t in _tasks(spec) if "iteratorPolicy" in t] == [2]
    assert all(not task.get("cachingOptions", {}).get("enableCache", False) for _, task in _tasks(spec))
    platform = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert not [label for label, config in platform.items() if "nodeSelector" in config]  # no node label needed

    kfp_server.requests.clear()
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://photos/lfw"]) == 0
    assert ("POST", f"{API}/experiments") not in kfp_server.calls()  # the experiment is found by name, reused
    assert kfp_server.run_bodies()[0]["experiment_id"] == experiment["experiment_id"]
    assert len(kfp_server.runs) == 2
    assert TOKEN not in "".join(capsys.readouterr())


@pytest.mark.parametrize("source", ["/data/photos", "photos", "s3://"])
def test_source_must_be_an_s3_prefix(kfp_server, capsys, source):
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", source]) == 1
    assert "must be an S3 prefix, s3://bucket/prefix" in _error_line(capsys.readouterr().err)
    assert kfp_server.requests == []
    endpoint = ["--s3-endpoint", "object-store:8333"]  # no scheme: boto3 would refuse it in every pod
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://a/b", *endpoint]) == 1
    assert "--s3-endpoint 'object-store:8333' must start with http://" in _error_line(capsys.readouterr().err)
    remote = ["--dvc-remote", "/srv/dvc"]  # a folder: no pod mounts one
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://a/b", *remote]) == 1
    assert "--dvc-remote '/srv/dvc' must be an S3 prefix" in _error_line(capsys.readouterr().err)
    assert kfp_server.requests == []


def _failed_run(server: FakeKfp, state: str = "FAILED") -> str:
    run_id = str(uuid.uuid4())
    server.runs[run_id] = {"run_id": run_id, "display_name": "paper-run-1", "state": state, "created_at": _now()}
    return run_id


def test_retry_asks_the_backend_to_rerun_a_failed_run(kfp_server, monkeypatch, capsys):
    """A preempted training pod fails its run (KFP's retryStrategy has no retryPolicy, so Argo does
    not retry a deleted pod): `facectx pipeline retry` sends the backend's run retry, which reruns
    the failed steps under the same run id, so training resumes from resume_uri/<run id>/."""
    kfp_server.token = TOKEN
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    run_id = _failed_run(kfp_server)
    assert main(["pipeline", "retry", run_id, "--endpoint", kfp_server.url + "/"]) == 0
    assert kfp_server.calls() == [("GET", f"{API}/runs/{run_id}"), ("POST", f"{API}/runs/{run_id}:retry")]
    retry = kfp_server.requests[1]
    assert retry["body"] == "" and retry["query"] == {}  # the run id, in the path, is all it takes
    assert retry["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert kfp_server.runs[run_id]["state"] == "RUNNING"
    out = capsys.readouterr().out
    assert f"retrying run {run_id} (was FAILED)" in out and "resume" in out


def test_retry_refuses_a_run_that_has_not_failed(kfp_server, capsys):
    running = _failed_run(kfp_server, state="RUNNING")
    assert main(["pipeline", "retry", running, "--endpoint", kfp_server.url]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"run {running} at {kfp_server.url} is RUNNING: only a failed or terminated run can be retried" in line
    assert ("POST", f"{API}/runs/{running}:retry") not in kfp_server.calls()

    assert main(["pipeline", "retry", "no-such-run", "--endpoint", kfp_server.url]) == 1
    assert f"no run no-such-run at {kfp_server.url}: run not found" in _error_line(capsys.readouterr().err)


def test_refused_endpoint_is_named(kfp_server, capsys):
    # The port refuses for as long as the block runs (servers.refusing_port): picked here, at the
    # moment of use, and held, so no other test's server can answer on it meanwhile.
    with refusing_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        assert main(["pipeline", "submit", "--endpoint", endpoint, "--source", "s3://photos/lfw"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"cannot reach Kubeflow Pipelines at {endpoint}" in line and "Connection refused" in line


def test_unresolvable_endpoint_is_named(kfp_server, capsys):
    endpoint = "http://facectx-no-such-host.invalid:8888"
    assert main(["pipeline", "submit", "--endpoint", endpoint, "--source", "s3://photos/lfw"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"cannot reach Kubeflow Pipelines at {endpoint}" in line and "Failed to resolve" in line


def test_refused_token(kfp_server, monkeypatch, capsys):
    kfp_server.token = TOKEN
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "wrong-token-sentinel")
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://photos/lfw"]) == 1
    err = capsys.readouterr().err
    line = _error_line(err)
    assert f"{kfp_server.url} refused the token (401" in line and "Unauthenticated" in line
    assert "wrong-token-sentinel" not in err
    assert kfp_server.calls() == [("GET", f"{API}/healthz")]  # no retry loop, nothing submitted

    monkeypatch.delenv("KF_PIPELINES_TOKEN")
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://photos/lfw"]) == 1
    assert "it needs a token; give --token-file or set KF_PIPELINES_TOKEN" in _error_line(capsys.readouterr().err)


def test_forbidden_namespace(kfp_server, capsys):
    # Healthz passes but the API's authorization refuses the namespace (Kubeflow profiles' RBAC).
    kfp_server.fail[("GET", f"{API}/experiments")] = (
        403,
        _status(7, "User 'me@example.com' is not authorized to list experiments in namespace 'team-x'"),
    )
    assert (
        main(
            ["pipeline", "submit", "--endpoint", kfp_server.url, "--namespace", "team-x", "--source", "s3://photos/lfw"]
        )
        == 1
    )
    line = _error_line(capsys.readouterr().err)
    assert kfp_server.url in line and "403" in line and "not authorized to list experiments" in line


def test_rejected_run_shows_the_servers_message(kfp_server, capsys):
    message = "Invalid input error: pipeline spec is invalid:\n  executor image is not allowed"
    kfp_server.fail[("POST", f"{API}/runs")] = (400, {"error": message, **_status(3, message)})
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://photos/lfw"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"{kfp_server.url} rejected the run (400" in line
    assert "pipeline spec is invalid: executor image is not allowed" in line  # the message, on one line


def test_multi_user_endpoint_needs_a_namespace(kfp_server, capsys):
    kfp_server.multi_user = True
    assert main(["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://photos/lfw"]) == 1
    assert "give --namespace" in _error_line(capsys.readouterr().err)
    assert kfp_server.calls() == [("GET", f"{API}/healthz")]


def test_misspelt_variant_fails_before_any_request(kfp_server, capsys):
    assert (
        main(
            [
                "pipeline",
                "submit",
                "--endpoint",
                kfp_server.url,
                "--source",
                "s3://photos/lfw",
                "--compare",
                "progan,no_such_variant",
            ]
        )
        == 1
    )
    assert "no_such_variant" in _error_line(capsys.readouterr().err)
    assert kfp_server.requests == []


def test_submit_the_hallucinate_pipeline(kfp_server, tmp_path, capsys):
    """--pipeline hallucinate: facectx-hallucinate compiled and submitted with the same endpoint and
    token handling; its own run parameters (out, model, parallelism: GPU steps at once) sent, the
    rest left to the compiled defaults."""
    kfp_server.token = TOKEN
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    common = ["pipeline", "submit", "--pipeline", "hallucinate", "--endpoint", kfp_server.url, "--token-file"]
    rc = main(
        [
            *common,
            str(token_file),
            "--source",
            "s3://photos/casia",
            "--out",
            "s3://frames/casia-hallucinated",
            "--model",
            "models:/facectx-cascade/3",
            "--parallelism",
            "4",
            "--image",
            "registry.example/facectx:7",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    [body] = kfp_server.run_bodies()
    assert body["runtime_config"]["parameters"] == {
        "source": "s3://photos/casia",
        "out": "s3://frames/casia-hallucinated",
        "model": "models:/facectx-cascade/3",
        "parallelism": 4,
    }
    assert body["display_name"].startswith("facectx-hallucinate ") and body["display_name"] in out
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "facectx-hallucinate"
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {"registry.example/facectx:7"}
    gpus = [e["container"].get("resources", {}).get("accelerator", {}).get("resourceCount") for e in executors]
    assert sorted(gpus, key=str) == ["1", None, None]  # the group step alone asks for a GPU
    assert all(r["headers"]["authorization"] == f"Bearer {TOKEN}" for r in kfp_server.requests)
    assert TOKEN not in json.dumps(body) + out + err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--source", "s3://a/in"], "--out is required for the hallucinate pipeline"),
        (["--source", "s3://a/in", "--out", "/data/frames"], "--out '/data/frames' must be an S3 prefix"),
        (["--source", "s3://a/in", "--out", "s3://a/in/"], "--out 's3://a/in/' is the source"),
        (["--source", "s3://a/in", "--out", "s3://a/o", "--model", "models/cascade"], "the pods take the model from"),
        (["--source", "s3://a/in", "--out", "s3://a/o", "--profile", "quick"], "--profile does not apply to the hall"),
        (["--source", "s3://a/in", "--out", "s3://a/o", "--parallelism", "0"], "--parallelism 0: give 1 or more"),
        (["--source", "/photos", "--out", "s3://a/o"], "--source '/photos' must be an S3 prefix"),
    ],
)
def test_hallucinate_submit_options_are_checked_before_any_request(kfp_server, capsys, options, message):
    argv = ["pipeline", "submit", "--pipeline", "hallucinate", "--endpoint", kfp_server.url, *options]
    assert main(argv) == 1
    assert message in _error_line(capsys.readouterr().err)
    assert kfp_server.requests == []


def test_hallucinate_options_do_not_apply_to_training(kfp_server, capsys):
    argv = ["pipeline", "submit", "--endpoint", kfp_server.url, "--source", "s3://a/in", "--out", "s3://a/o"]
    assert main(argv) == 1
    assert "--out does not apply to the training pipeline" in _error_line(capsys.readouterr().err)
    assert kfp_server.requests == []
