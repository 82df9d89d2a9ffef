"""The container image every facectx component runs in (built from infra/Dockerfile)."""
import os

# Set FACECTX_IMAGE when compiling to point at your registry; the default is the image tag that
# infra/Dockerfile is built as.
FACECTX_IMAGE = os.environ.get("FACECTX_IMAGE", "ghcr.io/facectx/facectx:0.1.0")
