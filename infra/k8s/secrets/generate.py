"""Write the secret files infra/k8s's kustomizations read, with fresh random values.

    python3 infra/k8s/secrets/generate.py          # standard library only

Each `*.env.example` names its keys; its `.env` (git-ignored) is written where missing, an
existing one is kept (so re-running never rotates a credential behind a running cluster's back).
Then object-store/s3.json, SeaweedFS's S3 identities, is written again from the env files: the
admin, the MLflow server and the pipeline, each key pair allowed only its own buckets. The S3 key
pairs therefore live in one place, the env files, and s3.json always agrees with them.
Another Kubeflow profile gets an identity of its own: add it to IDENTITIES (and its env folder).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Keys that name someone rather than hold a secret.
FIXED_VALUES = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_TRACKING_USERNAME": "facectx-pipeline"}

# SeaweedFS identity -> (its env file, the buckets it may use; None: all, as the admin).
# The object store creates these buckets when it starts (BUCKETS in ../object-store.yaml).
IDENTITIES = {
    "admin": ("object-store/admin.env", None),
    "mlflow": ("mlflow-s3/mlflow-s3.env", ["mlflow-artifacts"]),
    "facectx-pipeline": ("s3/facectx-s3.env", ["facectx-data", "facectx-runs"]),
}
# What a bucket's user may do there: read, write and delete objects, list, tag. Not Admin: no
# bucket creation or deletion, no other bucket.
BUCKET_ACTIONS = ("Read", "Write", "List", "Tagging")


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            if "=" not in line:
                raise ValueError(f"{path}:{number}: expected KEY=value, got {line!r}")
            key, value = line.split("=", 1)
            values[key] = value
    return values


def write_private(path: Path, text: str) -> None:
    """Owner-only file, written under a temporary name and renamed."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def new_value(key: str) -> str:
    if key in FIXED_VALUES:
        return FIXED_VALUES[key]
    if key == "AWS_ACCESS_KEY_ID":
        return "FCX" + secrets.token_hex(8).upper()
    return secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: safe in env files, URIs and JSON alike


def write_env_files(root: Path) -> list[Path]:
    """The missing env files, from their examples; returns those written."""
    written = []
    for example in sorted(root.glob("*/*.env.example")):
        target = example.with_name(example.name.removesuffix(".example"))
        if target.exists():
            continue
        keys = list(read_env(example))
        write_private(target, "".join(f"{key}={new_value(key)}\n" for key in keys))
        written.append(target)
    return written


def identities(root: Path) -> dict:
    """SeaweedFS's s3.json (its -s3.config) from the env files."""
    result = []
    for name, (env_file, buckets) in IDENTITIES.items():
        env = read_env(root / env_file)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if not env.get(key):
                raise ValueError(f"{root / env_file}: {key} is empty")
        if buckets is None:
            actions = ["Admin", *BUCKET_ACTIONS]
        else:
            actions = [f"{action}:{bucket}" for bucket in buckets for action in BUCKET_ACTIONS]
        credentials = [{"accessKey": env["AWS_ACCESS_KEY_ID"], "secretKey": env["AWS_SECRET_ACCESS_KEY"]}]
        result.append({"name": name, "credentials": credentials, "actions": actions})
    keys = [identity["credentials"][0]["accessKey"] for identity in result]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{root}: two identities share an access key: each needs its own pair")
    return {"identities": result}


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else HERE
    for path in write_env_files(root):
        print(f"wrote {path}", file=sys.stderr)
    write_private(root / "object-store" / "s3.json", json.dumps(identities(root), indent=2) + "\n")
    print(f"wrote {root / 'object-store' / 's3.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
