#!/usr/bin/env bash
# What the tests need beyond the project's venv:
# - system packages: headless Chromium renders the evaluation report; PostgreSQL's server binaries
#   back the MLflow server the infra test starts with the manifest's arguments;
# - one small venv per Kubeflow Pipelines backend the floor test parses the compiled pipeline under
#   (tests/kfp_floor/kfp-backend-<version>.txt: that backend's kfp-pipeline-spec / kfp-kubernetes,
#   which cannot share a Python process with the project's newer ones), in build/kfp-floor/<version>.
#   A venv whose stamp matches its requirements file is left alone, so a second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
if [ ${#packages[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${packages[@]}"
fi

python=.venv/bin/python
[ -x "$python" ] || python=python3
for requirements in tests/kfp_floor/kfp-backend-*.txt; do
  version=$(basename "$requirements" .txt); version=${version#kfp-backend-}
  venv=build/kfp-floor/$version
  if cmp -s "$requirements" "$venv/requirements.txt"; then
    continue
  fi
  rm -rf "$venv"
  # No pip of its own (4 MB instead of 30, seconds instead of half a minute): this pip fills it.
  "$python" -m venv --without-pip "$venv"
  # --no-deps: the pins are the whole closure (kfp-kubernetes would pull in kfp and its newer protos).
  "$python" -m pip --python "$venv/bin/python" install -q --disable-pip-version-check --no-deps -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"  # the stamp, written last: a half-built venv is redone
done
