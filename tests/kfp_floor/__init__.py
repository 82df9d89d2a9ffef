"""The oldest Kubeflow Pipelines backend the compiled pipeline runs on, and how it is checked offline.

FLOOR is what README.md states. The Kubeflow platform releases ship (kubeflow/manifests, now
kubeflow/community-distribution, README "Kubeflow Components Versions" at each release tag):
26.03 -> KFP 2.16.0, 26.03.1 -> 2.16.1 (current), 1.11.0 -> 2.15.0 (previous), 1.10.x -> 2.4.1/2.5.0.
The pipeline needs 2.15.0 (features.py: kfp-kubernetes >= 2.15 writes SecretAsEnv.optional, which a
2.14 backend refuses), so it runs on the current and the previous release, not on 1.10.

Each backend version checked has a venv made by scripts/install-test-deps.sh from
kfp-backend-<version>.txt beside this file (the kfp-pipeline-spec / kfp-kubernetes of that release);
strict_parse.py runs in it, since one Python cannot import two versions of those packages.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

FLOOR = "2.15.0"
BELOW_FLOOR = "2.14.0"  # the release before the floor: must refuse the pipeline, or the floor is not tight

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def backend_python(version: str) -> Path:
    """The venv's Python for a backend version; a clear error when it is missing or stale."""
    requirements = HERE / f"kfp-backend-{version}.txt"
    venv = REPO / "build" / "kfp-floor" / version
    stamp = venv / "requirements.txt"
    if not requirements.is_file():
        raise FileNotFoundError(f"no {requirements.relative_to(REPO)}: which protos KFP {version} ships is unknown")
    if not stamp.is_file() or stamp.read_text() != requirements.read_text():
        raise RuntimeError(
            f"{venv.relative_to(REPO)} is missing or older than {requirements.relative_to(REPO)}: "
            "run `bash scripts/install-test-deps.sh`"
        )
    return venv / "bin" / "python"


def parse_errors(pipeline: dict, platform: dict, version: str) -> list[str]:
    """What the backend `version`'s protobuf definitions refuse in the compiled pipeline (empty: none)."""
    done = subprocess.run(
        # -I: none of this process's PYTHONPATH or site-packages (the project's newer kfp protos).
        [str(backend_python(version)), "-I", str(HERE / "strict_parse.py")],
        input=json.dumps([pipeline, platform]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"strict_parse.py under KFP {version} failed:\n{done.stderr}")
    return json.loads(done.stdout)
