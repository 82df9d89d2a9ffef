"""Where the steps run and what they reach: settings that compile into the pipeline YAML (ignored
by kfp.local). Services are named by their full in-cluster DNS names: Kubeflow runs the pipeline's
pods in the user's profile namespace, not in `facectx` where infra/k8s puts the services."""

from kfp import dsl, kubernetes

GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by NVIDIA's GPU feature discovery
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; created in the profile namespace (infra/README.md).
S3_SECRET = "facectx-s3"
MLFLOW_URI = "http://mlflow.facectx.svc.cluster.local:5000"  # default of the mlflow_tracking_uri parameter
S3_ENDPOINT = "http://object-store.facectx.svc.cluster.local:8333"
RESUME_URI = "s3://facectx-runs"  # default of the resume_uri parameter: training resume state per run
# A preempted or evicted training pod starts again and resumes from its state in object storage.
TRAIN_RETRIES = 3


def with_services(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Object-store credentials from the secret (never in the YAML) and its endpoint."""
    kubernetes.use_secret_as_env(
        task,
        secret_name=S3_SECRET,
        secret_key_to_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
    )
    task.set_env_variable("AWS_ENDPOINT_URL", S3_ENDPOINT)
    task.set_env_variable("MLFLOW_S3_ENDPOINT_URL", S3_ENDPOINT)
    return task


def on_gpu(task: dsl.PipelineTask, gpus: int = 1, memory_per_gpu_gib: int = 64) -> dsl.PipelineTask:
    """A training step on a GPU node: `gpus` GPUs (one DDP process each), CPU and memory to match."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    task.set_cpu_request(str(8 * gpus)).set_memory_request(f"{memory_per_gpu_gib * gpus}G")
    kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    # DDP's processes talk through shared memory; the container default (64 MiB) is too small.
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    task.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2)
    return with_services(task)
