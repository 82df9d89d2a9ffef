"""A tracking server that fails (an http(s) tracking URI): probing it before a step starts, telling
an outage from a real error, and MLflow's HTTP settings while a stage runs.

- Down when a step starts: the step stops at once with TrackingUnavailable, one line naming the
  URI, before anything is trained or written (a /health probe with a short timeout).
- While a stage runs, MLflow's HTTP client retries for seconds, not minutes (HTTP_DEFAULTS, used
  where the environment does not set them): MLflow's own defaults (7 retries with growing
  back-off, 120 s per request) would stall a training step for minutes on every call, and with
  the spool (spool.py) nothing is lost by giving up early.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

from facectx.tracking.settings import tracking_uri
from facectx.tracking.util import one_line

# MLflow's HTTP client while a stage runs, unless the environment says otherwise: ~6 s of retries
# (back-off 0, 2, 4 s) ride out a blip; a longer outage is spooled, so waiting longer gains nothing.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
PROBE_TIMEOUT_S = 5.0


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer, or cannot serve requests (its database is down)."""


def redacted(uri: str) -> str:
    """The URI without a user:password@ part: what logs, messages and spool files may show."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def unreachable_reason(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an http(s) tracking server cannot be reached (None when it answers, or for other URIs).
    Any answer counts, even 401 or 403 (its /health needs no credentials) or a TLS handshake this
    probe cannot verify (MLflow's client has its own TLS settings): something is up there."""
    if not uri.startswith(("http://", "https://")):
        return None
    probe = redacted(uri).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(probe, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as err:  # refused, unknown host, timed out
        reason = getattr(err, "reason", err)
        return None if isinstance(reason, ssl.SSLError) else one_line(reason)


def check_reachable(uri: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable (one line naming the URI) when an http(s) tracking server does not
    answer; uri: default tracking_uri()."""
    uri = tracking_uri(uri)
    reason = unreachable_reason(uri, timeout)
    if reason:
        raise TrackingUnavailable(
            f"MLflow tracking server {redacted(uri)} is not reachable ({reason}): start it, or "
            "point MLFLOW_TRACKING_URI at a running one; nothing was run"
        )


def server_unavailable(err: BaseException) -> bool:
    """Did an MLflow call fail because the server (or its database, or its artifact store) did not
    answer -- no connection, a timeout, or only transient errors (5xx, 429) until the retries ran
    out? Other errors (a bad request) are real, and are raised where they happen."""
    # requests (and botocore) come with mlflow, which an air-gapped node lacks: imported when MLflow failed.
    import requests

    kinds: tuple[type, ...] = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
    )
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError  # artifacts sent to S3 directly

        kinds += (BotoConnectionError,)
    except ImportError:
        pass
    seen = set()
    while err is not None and id(err) not in seen:  # MLflow wraps the requests error (as __context__)
        if isinstance(err, kinds):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def env(values: dict[str, str], only_unset: bool = False):
    """These environment variables for the block (MLflow reads its HTTP settings per request).
    Environment variables, not arguments: MLflow's HTTP client takes these settings only from there."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if not (only_unset and saved[name] is not None):
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def http_defaults():
    """HTTP_DEFAULTS for the block, where the environment does not set them."""
    return env(HTTP_DEFAULTS, only_unset=True)
