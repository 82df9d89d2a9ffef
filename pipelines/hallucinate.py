"""The facectx-hallucinate pipeline: the paper's use of a registered model on a whole dataset.

start (list the source, stamp OUT with the model) -> dsl.ParallelFor: one GPU step per group of
shards, at most `parallelism` groups (shard i goes to group i % parallelism) -> gather the shards'
manifests and quarantine tables into one and record the MLflow run. The model comes from the
registry by alias or version (models:/NAME@alias, models:/NAME/VERSION). A group step is retried
when its container fails, and any re-run (a retry, `facectx pipeline retry`, the same submit again)
redoes only unfinished shards: finished ones are whole in OUT, and OUT refuses another model.
"""

from kfp import dsl

from components.hallucinate import hallucinate_gather, hallucinate_group, hallucinate_start
from facectx.config import DEFAULT_PARAMS_FILE, pipeline_params_text
from pipelines.gpu import MLFLOW_URI, S3_ENDPOINT, TRAIN_RETRIES, GpuPlacement, on_gpu, with_services
from pipelines.training import _caching_off_by_default

NAME = "facectx-hallucinate"


def build_hallucinate_pipeline(params_file=DEFAULT_PARAMS_FILE, gpus: int = 1, placement: GpuPlacement | None = None):
    """gpus: GPUs of each group step (0: CPUs only, a kfp.local rehearsal)."""
    placement = placement or GpuPlacement()
    default_params = pipeline_params_text(params_file)

    def hallucinate_pipeline(
        source: str,
        out: str,
        model: str = "models:/facectx-cascade@champion",
        parallelism: int = 8,
        params_yaml: str = default_params,
        mlflow_tracking_uri: str = MLFLOW_URI,
        s3_endpoint: str = S3_ENDPOINT,
    ):
        """source, out: s3://bucket/prefix (kfp.local also takes folders); model: a registry alias or
        version; parallelism: GPU steps at once (the groups of shards)."""
        common = dict(params_yaml=params_yaml, source=source, out=out, model=model)
        services = dict(mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint=s3_endpoint)
        started = with_services(hallucinate_start(**common, **services, groups=parallelism))
        started.set_display_name("list source")
        with dsl.ParallelFor(items=started.output, parallelism=0) as group:
            task = hallucinate_group(**common, **services, group=group, groups=parallelism)
            on_gpu(task.set_display_name("hallucinate shards"), gpus, placement, memory_per_gpu_gib=32)
            task.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2)
        gathered = hallucinate_gather(**common, **services, group_reports=dsl.Collected(task.output))
        with_services(gathered.set_display_name("gather manifests"))

    with _caching_off_by_default():
        return dsl.pipeline(name=NAME, description="Hallucinated context for every photo of a dataset")(
            hallucinate_pipeline
        )
