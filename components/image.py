"""The container image every facectx component runs in (built from infra/Dockerfile)."""

import os
from importlib.metadata import PackageNotFoundError, version

IMAGE_REPOSITORY = "ghcr.io/facectx/facectx"


def default_image() -> str:
    """FACECTX_IMAGE when set (your registry), else the image built from this version of the code:
    the tag follows the installed package's version, so a release never compiles pipelines that
    run an older image."""
    if os.environ.get("FACECTX_IMAGE"):
        return os.environ["FACECTX_IMAGE"]
    try:
        return f"{IMAGE_REPOSITORY}:{version('facectx')}"
    except PackageNotFoundError:
        raise RuntimeError(
            "facectx is not installed (pip install -e .), so the image tag cannot follow its version; set FACECTX_IMAGE"
        ) from None


FACECTX_IMAGE = default_image()
