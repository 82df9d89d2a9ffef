#!/usr/bin/env bash
# System packages the tests need: headless Chromium renders the evaluation report; PostgreSQL's
# server binaries back the MLflow server the infra test starts with the manifest's arguments.
set -euo pipefail
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
if [ ${#packages[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${packages[@]}"
fi
