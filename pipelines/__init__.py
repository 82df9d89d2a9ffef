"""Kubeflow pipelines of facectx, facectx-training and facectx-hallucinate: `facectx pipeline
compile` writes a pipeline's YAML (pipelines.compile), `facectx pipeline submit` starts a run of it
(pipelines.submit, its parameters checked by pipelines.run_arguments) and `facectx pipeline retry`
runs a failed run's failed steps again."""

DEFAULT_OUT = "build/pipelines/training.yaml"  # where `facectx pipeline compile` writes
DEFAULT_EXPERIMENT = "facectx"  # the Kubeflow experiment runs are submitted to
TOKEN_ENV = "KF_PIPELINES_TOKEN"  # the Kubeflow endpoint's bearer token, from the user's environment
