"""The container image every facectx component runs in (built from infra/Dockerfile by `make image`).

The components are declared with a placeholder image; `facectx pipeline compile` (pipelines.compile)
writes the real one into every step: --image, else $FACECTX_IMAGE, else default_image() -- the tag
`make image` (scripts/build-image.sh) gives an image built from this checkout.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

IMAGE_REPOSITORY = "ghcr.io/facectx/facectx"
IMAGE_ENV = "FACECTX_IMAGE"  # your registry's image: read by pipelines.compile when it compiles
# What the components are declared with; never left in a compiled pipeline (pipelines.compile
# replaces it in every step), so a step can never run an image nobody built.
PLACEHOLDER_IMAGE = f"{IMAGE_REPOSITORY}:set-when-compiled"
CHECKOUT = Path(__file__).resolve().parents[1]
# The paths scripts/build-image.sh checks for uncommitted changes (the files the image is built
# from); a change there tags the image -dirty. tests/test_pipeline_submit.py holds the two together.
IMAGE_SOURCES = (
    "infra/Dockerfile",
    "infra/constraints.txt",
    "pyproject.toml",
    "README.md",
    "src",
    "params.yaml",
    "dvc.yaml",
    "components",
    "pipelines",
)


def default_image(checkout: str | Path = CHECKOUT) -> str:
    """The tag `make image` gives an image built from `checkout` now:
    ghcr.io/facectx/facectx:<pyproject version>-<git short sha>[-dirty]."""
    checkout = Path(checkout)
    pyproject = checkout / "pyproject.toml"

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            done = subprocess.CompletedProcess(args, 1, "", str(err))
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot tell which image `make image` built from {checkout} (git {' '.join(args)}: "
                f"{done.stderr.strip() or 'failed'}): give --image or set {IMAGE_ENV}"
            )
        return done.stdout.strip()

    # A checkout of facectx, not an installed copy that happens to lie inside some other repository.
    if not pyproject.is_file() or Path(git("rev-parse", "--show-toplevel")).resolve() != checkout.resolve():
        raise RuntimeError(
            f"{checkout} is not a git checkout of facectx, so the image `make image` built from it is unknown: "
            f"give --image or set {IMAGE_ENV}"
        )
    short = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--", *IMAGE_SOURCES):
        short += "-dirty"
    return f"{IMAGE_REPOSITORY}:{_project_version(pyproject)}-{short}"


def _project_version(pyproject: Path) -> str:
    """pyproject's [project] version, as scripts/build-image.sh reads it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed package's version (pip install -e . wrote it)
        from importlib.metadata import version

        return version("facectx")
    with open(pyproject, "rb") as file:
        return tomllib.load(file)["project"]["version"]
