"""Kubeflow pipelines of facectx; `python -m pipelines.compile` writes their YAML, and
`facectx pipeline compile/submit` (pipelines.submit) compiles and starts runs."""

DEFAULT_OUT = "build/pipelines/training.yaml"  # where `facectx pipeline compile` writes
DEFAULT_EXPERIMENT = "facectx"  # the Kubeflow experiment runs are submitted to
TOKEN_ENV = "KF_PIPELINES_TOKEN"  # the Kubeflow endpoint's bearer token, from the user's environment
