#!/usr/bin/env bash
# Write infra/constraints.txt: the exact versions of everything `pip install .` (plus the image's
# extra requirements) pulls in, taken from a venv where they work together (default .venv, made by
# scripts/install.sh, where `make test` passes). The image installs with these as constraints:
#  - a fresh resolve of facectx's ranges backtracks for a very long time (boto3 1.44 needs a
#    botocore newer than aiobotocore, via s3fs/dvc-s3, allows: pip tried for 15+ minutes here),
#  - and an image built next month should hold the versions that were tested, not the newest.
# The torch stack (torch, torchvision, triton, nvidia-*, cuda-*) is left out: TORCH_SPEC picks it.
# Run after changing dependencies in pyproject.toml:  bash scripts/image-constraints.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
"$VENV/bin/python" - "$@" <<'EOF' > infra/constraints.txt
import re
from importlib import metadata

from packaging.requirements import Requirement

EXTRA = ["psycopg2-binary"]  # the Dockerfile's `pip install . <these>`
SKIP = re.compile(r"^(facectx|torch|torchvision|triton|nvidia-.*|cuda-.*|pip|setuptools|wheel)$")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


# facectx's requirements and their requirements, with the extras asked for, as installed here.
# A requirement's marker is evaluated once, when it is queued, with the extras of its requirer.
def applies(requirement, extras=frozenset()):
    return requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in set(extras) | {""})


top = [Requirement(r) for r in [*metadata.requires("facectx"), *EXTRA]]
seen, todo = {}, [r for r in top if applies(r)]
while todo:
    requirement = todo.pop()
    name = canonical(requirement.name)
    extras = set(requirement.extras)
    if name in seen and extras <= seen[name]:
        continue
    seen[name] = seen.get(name, set()) | extras
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{name} is required but not installed in this venv: install it first")
    todo += [sub for sub in map(Requirement, dist.requires or []) if applies(sub, extras)]

print("# Versions the image installs facectx with (pip --constraint). Written by")
print("# scripts/image-constraints.sh from a tested venv; the torch stack is chosen by TORCH_SPEC.")
for name in sorted(seen):
    if not SKIP.match(name):
        print(f"{name}=={metadata.version(name)}")
EOF
echo "wrote infra/constraints.txt ($(grep -vc '^#' infra/constraints.txt) pins) from $VENV"
