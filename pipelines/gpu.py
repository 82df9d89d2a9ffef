"""Where the steps run and what they reach: settings that compile into the pipeline YAML (ignored
by kfp.local). Services are named by their full in-cluster DNS names: Kubeflow runs the pipeline's
pods in the user's profile namespace, not in `facectx` where infra/k8s puts the services.

GPU steps are placed by their GPU limit alone: any node whose device plugin offers the resource
(`nvidia.com/gpu`: NVIDIA's plain device plugin, the GPU Operator, GKE's and EKS's defaults) takes
them, with no label to add. A node selector, more tolerations or another accelerator resource
(a MIG slice, another vendor) are options of `facectx pipeline compile/submit` (GpuPlacement).
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl, kubernetes

# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; created in the profile namespace (infra/README.md).
S3_SECRET = "facectx-s3"
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: the pipeline's MLflow login (MLflow runs
# behind its basic-auth app), created in the profile namespace beside facectx-s3 (infra/README.md).
MLFLOW_SECRET = "facectx-mlflow"
# Defaults of the run parameters mlflow_tracking_uri, s3_endpoint, resume_uri and dvc_remote.
MLFLOW_URI = "http://mlflow.facectx.svc.cluster.local:5000"
S3_ENDPOINT = "http://object-store.facectx.svc.cluster.local:8333"
RESUME_URI = "s3://facectx-runs"  # training resume state, per run
DVC_REMOTE = "s3://facectx-data/dvc"  # default of the dvc_remote parameter: the run's data versions
GPU_RESOURCE = "nvidia.com/gpu"
# Tries per training step after its container fails (a crash, OOMKilled). KFP writes Argo's
# retryStrategy without a retryPolicy, so Argo's default (OnFailure) applies: a pod that is deleted
# (preempted, drained, evicted) is not retried; `facectx pipeline retry RUN_ID` starts the run's
# failed steps again, and training resumes from its state under resume_uri.
TRAIN_RETRIES = 3
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Toleration:
    key: str
    value: str | None = None  # None: any value (operator Exists)
    effect: str | None = None  # None: every effect

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """kubectl's taint notation: KEY[=VALUE][:EFFECT], e.g. `dedicated=gpu:NoSchedule`."""
        rest, _, effect = text.partition(":")
        key, has_value, value = rest.partition("=")
        if not key or (has_value and not value) or (effect and effect not in TAINT_EFFECTS):
            raise ValueError(
                f"toleration {text!r}: expected KEY[=VALUE][:EFFECT] with EFFECT one of {', '.join(TAINT_EFFECTS)}"
            )
        return cls(key, value if has_value else None, effect or None)


@dataclass(frozen=True)
class GpuPlacement:
    """Where the GPU steps (training, evaluation) land. The default asks only for the GPU limit, and
    tolerates the taint `<resource>:NoSchedule` (what Kubernetes' ExtendedResourceToleration
    admission adds to any pod that requests the resource, and how clusters commonly keep other pods
    off GPU nodes): it cannot pull a pod onto a node without the resource, which the limit already
    requires, so it never narrows placement."""

    node_selector: tuple[tuple[str, str], ...] = ()  # (label, value) pairs the node must carry
    tolerations: tuple[Toleration, ...] = ()  # beyond the resource's own taint
    accelerator: str = GPU_RESOURCE  # the extended resource the GPU limit is in

    @staticmethod
    def parse_label(text: str) -> tuple[str, str]:
        key, has_value, value = text.partition("=")
        if not key or not has_value:
            raise ValueError(
                f"node selector {text!r}: expected LABEL=VALUE, e.g. cloud.google.com/gke-accelerator=nvidia-h100-80gb"
            )
        return key, value


def with_s3_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Object-store credentials from the secret, by name: never in the YAML. (The endpoint is the
    run parameter s3_endpoint, an input of the steps: components/endpoints.py.)"""
    kubernetes.use_secret_as_env(
        task,
        secret_name=S3_SECRET,
        secret_key_to_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
    )
    return task


def with_services(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A step that tracks in MLflow: the object store's credentials and the MLflow login, both from
    secrets by name."""
    kubernetes.use_secret_as_env(
        with_s3_credentials(task),
        secret_name=MLFLOW_SECRET,
        secret_key_to_env={name: name for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")},
    )
    return task


def on_gpu(
    task: dsl.PipelineTask, gpus: int, placement: GpuPlacement, memory_per_gpu_gib: int = 64
) -> dsl.PipelineTask:
    """`gpus` GPUs for a step, CPU and memory to match, placed as `placement` says (0: a CPU step)."""
    if gpus == 0:
        return with_services(task.set_cpu_request("8").set_memory_request(f"{memory_per_gpu_gib}G"))
    task.set_accelerator_type(placement.accelerator).set_accelerator_limit(gpus)
    task.set_cpu_request(str(8 * gpus)).set_memory_request(f"{memory_per_gpu_gib * gpus}G")
    for label, value in placement.node_selector:
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for toleration in (Toleration(placement.accelerator, effect="NoSchedule"), *placement.tolerations):
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator="Equal" if toleration.value is not None else "Exists",
            value=toleration.value,
            effect=toleration.effect,
        )
    return with_services(task)


def for_training(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A training step: shared memory for DDP, retried when its container fails."""
    # DDP's processes talk through shared memory; the container default (64 MiB) is too small.
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    task.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2)
    return task
