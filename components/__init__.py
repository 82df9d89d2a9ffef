"""Kubeflow components: thin wrappers that call facectx.steps inside the facectx image."""
