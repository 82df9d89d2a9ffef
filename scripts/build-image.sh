#!/usr/bin/env bash
# Build the facectx image from infra/Dockerfile (what `make image` runs).
#   IMAGE   the tag (default ghcr.io/facectx/facectx:<version from pyproject>-<git short sha>)
#   DOCKER  the docker client to use (default: docker)
# Extra arguments go to `docker build` (e.g. --build-arg TORCH_INDEX_URL=... --platform linux/amd64).
# The commit goes into the image (GIT_COMMIT -> the OCI revision label and FACECTX_GIT_COMMIT, which
# every checkpoint records); a working tree with uncommitted changes is marked "-dirty" in both, so
# an image never claims a commit it was not built from.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER="${DOCKER:-docker}"

die() { echo "build-image: $*" >&2; exit 2; }

# Checked first: without Docker nothing below can work, and the reason should be the first line.
command -v "$DOCKER" > /dev/null 2>&1 \
  || die "'$DOCKER' is not installed: building the image needs Docker (or set DOCKER to a compatible client such as podman). scripts/image-build-check.sh runs the Dockerfile's steps without Docker."
"$DOCKER" info > /dev/null 2>&1 \
  || die "'$DOCKER' cannot reach a Docker daemon ('$DOCKER info' failed): start Docker, or build on a machine that has it."

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
commit=$(git rev-parse HEAD 2>/dev/null) || die "not a git checkout: the image records the commit it was built from"
short=$(git rev-parse --short HEAD)
# Only the paths the Dockerfile copies count (untracked files there too: they enter the image).
if [ -n "$(git status --porcelain -- infra/Dockerfile infra/constraints.txt pyproject.toml README.md src params.yaml dvc.yaml components pipelines)" ]; then
  echo "build-image: the working tree has uncommitted changes: tagging and labelling the image -dirty" >&2
  commit="$commit-dirty"
  short="$short-dirty"
fi
IMAGE="${IMAGE:-ghcr.io/facectx/facectx:$version-$short}"

echo "build-image: $IMAGE (commit $commit)"
"$DOCKER" build -f infra/Dockerfile --build-arg "GIT_COMMIT=$commit" -t "$IMAGE" "$@" .
echo "build-image: built $IMAGE; push it with: $DOCKER push $IMAGE"
