"""Where the GPU stages run: settings that compile into the pipeline YAML (ignored by kfp.local)."""
from kfp import dsl, kubernetes

GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by NVIDIA's GPU feature discovery
S3_SECRET = "facectx-s3"  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, created out of band
MLFLOW_URI = "http://mlflow.facectx:5000"  # default of the pipelines' mlflow_tracking_uri parameter
S3_ENDPOINT = "http://object-store.facectx:8333"


def with_services(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Object-store credentials from the secret (never in the YAML) and its endpoint."""
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env={
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
    task.set_env_variable("AWS_ENDPOINT_URL", S3_ENDPOINT)
    task.set_env_variable("MLFLOW_S3_ENDPOINT_URL", S3_ENDPOINT)
    # One MLflow parent run per Kubeflow run.
    task.set_env_variable("FACECTX_PIPELINE_RUN", dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    return task


def on_gpu(task: dsl.PipelineTask, memory: str = "64G") -> dsl.PipelineTask:
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    task.set_cpu_request("8").set_memory_request(memory)
    kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    return with_services(task)
