"""Kubeflow pipelines of facectx; `python -m pipelines.compile` writes their YAML."""
