"""The container image every facectx component runs in (built from infra/Dockerfile)."""

from importlib.metadata import PackageNotFoundError, version

IMAGE_REPOSITORY = "ghcr.io/facectx/facectx"
IMAGE_ENV = "FACECTX_IMAGE"  # your registry's image: read by pipelines.compile when it compiles


def default_image() -> str:
    """The image built from this version of the code: the tag follows the installed package's
    version, so a release never compiles pipelines that run an older image."""
    try:
        return f"{IMAGE_REPOSITORY}:{version('facectx')}"
    except PackageNotFoundError:
        raise RuntimeError(
            f"facectx is not installed (pip install -e .), so the image tag cannot follow its version; set {IMAGE_ENV}"
        ) from None


FACECTX_IMAGE = default_image()
