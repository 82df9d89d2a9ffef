"""The run's service endpoints, handed to the libraries inside a step's pod.

The S3 endpoint is a run parameter (pipelines/training.py), but a Kubernetes `env:` entry of a
compiled KFP pipeline is a constant (the backend copies it as is), so each step that reaches the
object store takes the endpoint as an input and sets it in its own process's environment before
facectx runs: boto3, s3fs, DVC and MLflow's S3 artifact store all read it there
(AWS_ENDPOINT_URL, MLFLOW_S3_ENDPOINT_URL). Credentials never pass through here: they come from
the `facectx-s3` Secret as environment variables.
"""

import os


def use_s3_endpoint(endpoint: str) -> None:
    """Point this step's S3 clients at `endpoint`; '' keeps the pod's environment (AWS, or kfp.local's)."""
    if endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"s3_endpoint {endpoint!r} must start with http:// or https://")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = endpoint
