"""Backend features a compiled pipeline can rely on that no protobuf field reveals, or that the
backend accepts long before it carries them out: each with the first Kubeflow Pipelines release
that does, and where that was read (kubeflow/pipelines: commit, pull request, first release tag
containing it; `git tag --contains <commit>`). A parse under old protos cannot catch these: a
2.5 backend accepts a retry policy inside a ParallelFor and ignores it.

Releases between 2.5.0 and 2.14.0 do not exist (the backend jumped to the SDK's numbering).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

JOB_ID_PLACEHOLDER = "{{$.pipeline_job_uuid}}"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    since: str | None  # the first backend release that carries it out; None: none does (avoid it)
    source: str
    find: Callable[[dict, dict], list[str]]  # (pipeline spec, platform spec) -> where it is used

    def supported_by(self, backend: str) -> bool:
        return self.since is not None and version_tuple(self.since) <= version_tuple(backend)


def _dags(spec: dict) -> Iterator[tuple[str, dict]]:
    yield "root", spec["root"]["dag"]
    for name, component in spec.get("components", {}).items():
        if "dag" in component:
            yield name, component["dag"]


def _tasks(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for dag_name, dag in _dags(spec):
        for task_name, task in dag.get("tasks", {}).items():
            yield dag_name, task_name, task


def _executors(platform: dict) -> dict:
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def _is_loop(task: dict) -> bool:
    return "parameterIterator" in task or "artifactIterator" in task


def _retried(root: bool) -> Callable[[dict, dict], list[str]]:
    def find(spec: dict, platform: dict) -> list[str]:
        return [
            f"{dag}/{name}" for dag, name, task in _tasks(spec) if "retryPolicy" in task and (dag == "root") == root
        ]

    return find


def _loop_outputs_taken(spec: dict) -> Iterator[tuple[str, str, str, str]]:
    """(DAG, task, input, loop task): a task's input artifact taken from a loop task's output, that is
    the loop's outputs collected (dsl.Collected)."""
    for dag_name, dag in _dags(spec):
        tasks = dag.get("tasks", {})
        for name, task in tasks.items():
            for key, source in task.get("inputs", {}).get("artifacts", {}).items():
                producer = source.get("taskOutputArtifact", {}).get("producerTask")
                if producer in tasks and _is_loop(tasks[producer]):
                    yield dag_name, name, key, producer


def _collected_artifacts(spec: dict, platform: dict) -> list[str]:
    return [f"{dag}/{name}.{key}" for dag, name, key, _ in _loop_outputs_taken(spec)]


def _job_id_placeholder(spec: dict, platform: dict) -> list[str]:
    return [
        f"{dag}/{name}.{key}"
        for dag, name, task in _tasks(spec)
        for key, value in task.get("inputs", {}).get("parameters", {}).items()
        if value.get("runtimeValue", {}).get("constant") == JOB_ID_PLACEHOLDER
    ]


def _parallelism_limit(spec: dict, platform: dict) -> list[str]:
    return [f"{dag}/{name}" for dag, name, task in _tasks(spec) if "parallelismLimit" in task.get("iteratorPolicy", {})]


def _named_loops_collected(spec: dict, platform: dict) -> list[str]:
    """A loop shown under a name of its own (ParallelFor(name=...)) whose outputs are collected."""
    tasks = {(dag, name): task for dag, name, task in _tasks(spec)}
    named = {
        f"{dag}/{loop}"
        for dag, _, _, loop in _loop_outputs_taken(spec)
        if tasks[dag, loop].get("taskInfo", {}).get("name", loop) != loop
    }
    return sorted(named)


def _secret_entries(platform: dict, field: str) -> list[str]:
    return [
        f"{executor}.{kind}[{index}]"
        for executor, config in _executors(platform).items()
        for kind in ("secretAsEnv", "secretAsVolume", "imagePullSecret", "configMapAsEnv", "configMapAsVolume")
        for index, entry in enumerate(config.get(kind, []))
        if field in entry
    ]


def _empty_dir_mounts(spec: dict, platform: dict) -> list[str]:
    return [executor for executor, config in _executors(platform).items() if config.get("emptyDirMounts")]


FEATURES = (
    Feature(
        "emptyDir volume mounts (kubernetes.empty_dir_mount)",
        "2.3.0",
        "commit 7506a8eafa, #10913 'Update kfp backend and kubernetes sdk to support EmptyDir'; first tag 2.3.0",
        _empty_dir_mounts,
    ),
    Feature(
        "ParallelFor parallelism limit (iteratorPolicy.parallelismLimit)",
        "2.4.0",
        "commit b7d8c97d65, #10798 'Add Parallelism Limit to ParallelFor tasks'; first tag 2.4.0",
        _parallelism_limit,
    ),
    Feature(
        "retry policy of a task in the root DAG",
        "2.4.1",
        "commit 30210e33bf, #11673 'fix execution-level retry on the Argo Workflows backend' "
        "(argocompiler getTaskRetryStrategy reads the root DAG's tasks only); in tags 2.4.1 and 2.5.0",
        _retried(root=True),
    ),
    Feature(
        "secret name as a task input (secretNameParameter: kfp-kubernetes writes it beside secretName)",
        "2.5.0",
        "commit 7838009538, #11621 'Add Input Parameter support for configmap, secrets, ...' "
        "(kubernetes_executor_config.proto and driver); first tag 2.5.0. The 2.3 driver rejects the field",
        lambda spec, platform: _secret_entries(platform, "secretNameParameter"),
    ),
    Feature(
        "run id placeholder (dsl.PIPELINE_JOB_ID_PLACEHOLDER)",
        "2.5.0",
        "commit 6a13f4bad0, #11599 'Add support for job and task placeholders in the KFP backend' "
        "(driver.go resolves {{$.pipeline_job_uuid}}); first tag 2.5.0. Before, the step got the literal text",
        _job_id_placeholder,
    ),
    Feature(
        "retry policy of a task inside a ParallelFor or sub-DAG",
        "2.14.0",
        "commits 9245739f6f (#11861 'parameterize retryStrategy') and beae62fb52 (#11908 'implement "
        "retryStrategy for nested pipelines'): container.go uses each task's own retryPolicy; first tag 2.14.0",
        _retried(root=False),
    ),
    Feature(
        "dsl.Collected over a ParallelFor's output artifacts (fan-in)",
        "2.14.0",
        "commit ed828b513a, #11725 'enable dsl.Collected for parameters & artifacts' (driver.go, "
        "launcher_v2.go); first tag 2.14.0",
        _collected_artifacts,
    ),
    Feature(
        "optional flag of a secret or config map as env (SecretAsEnv.optional, written by kfp-kubernetes >= 2.15)",
        "2.15.0",
        "commit 55ec8469d5, #12216 'Add optional field for the secret/configmap as env vars'; first tag "
        "2.15.0. 2.14's Argo compiler parses the Kubernetes config strictly and refuses the run",
        lambda spec, platform: _secret_entries(platform, "optional"),
    ),
    Feature(
        "a ParallelFor given its own name whose outputs are collected",
        None,
        "issue #13239 'dsl.ParallelFor name= breaks dsl.Collected at runtime' (the driver cannot find the "
        "producer); fixed on the SDK side by #13707 (2026-08), not by a backend: leave ParallelFor unnamed",
        _named_loops_collected,
    ),
)


def used(spec: dict, platform: dict) -> dict[Feature, list[str]]:
    """The features the compiled pipeline uses, with where."""
    found = {feature: feature.find(spec, platform) for feature in FEATURES}
    return {feature: where for feature, where in found.items() if where}
