"""Make sure the pipeline's MLflow user exists with the password of its Secret.

Run by the MLflow server's container as a postStart hook (infra/k8s/mlflow.yaml), on every start:
it waits for the server, then, as the admin, creates the user or sets its password again (a
rotated Secret takes effect on the next restart). The pipeline's pods log in as this user, never
as the admin. Credentials come from the environment, the Secrets' only way into the container:

  MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   the admin (Secret mlflow-admin)
  PIPELINE_MLFLOW_TRACKING_USERNAME / _PASSWORD              the pipeline's user (Secret facectx-mlflow)

    python3 /opt/mlflow/ensure_user.py http://127.0.0.1:5000 [--wait-seconds 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request


def wait_for_health(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"ensure_user: {url}/health did not answer within {seconds:.0f} s")
        time.sleep(2)


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"ensure_user: the environment variable {name} is empty or unset (its Secret?)")
    return value


def ensure_user(url: str, admin: tuple[str, str], user: tuple[str, str]) -> str:
    """Create `user` or reset its password; returns what was done."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    # The auth client reads the caller's credentials from these two variables only.
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = admin
    client = AuthServiceClient(url)
    try:
        client.create_user(*user)
        return "created"
    except RestException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    client.update_user_password(*user)
    return "password set"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the MLflow server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--wait-seconds", type=float, default=600, help="how long to wait for /health")
    args = parser.parse_args(argv)
    admin = (required("MLFLOW_AUTH_ADMIN_USERNAME"), required("MLFLOW_AUTH_ADMIN_PASSWORD"))
    user = (required("PIPELINE_MLFLOW_TRACKING_USERNAME"), required("PIPELINE_MLFLOW_TRACKING_PASSWORD"))
    if user[0] == admin[0]:
        raise SystemExit(f"ensure_user: the pipeline's user must not be the admin ({admin[0]!r})")
    wait_for_health(args.url, args.wait_seconds)
    print(f"ensure_user: {user[0]}: {ensure_user(args.url, admin, user)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
