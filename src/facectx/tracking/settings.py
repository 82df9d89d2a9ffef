"""Where tracking goes: the tracking URI, the experiment and the outage spool, each an argument of
the functions that need it. The experiment and the spool folder are settings (params' tracking
section); the tracking server is the user's: when no URI is given, MLFLOW_TRACKING_URI decides, read here and only here, when it is
needed (never at import); so are the user's cache and temp folders, where the spool falls back to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DEFAULT_EXPERIMENT = "facectx"
KEY_TAG = "facectx.pipeline_key"


def tracking_uri(uri: str | None = None) -> str:
    """`uri`, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory, made
    absolute so temporary copies (`dvc exp run --temp`) log to the same store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def experiment_name(name: str | None = None) -> str:
    """`name` (params' tracking.experiment), else "facectx": the MLflow experiment runs go to."""
    return name or DEFAULT_EXPERIMENT


SPOOL_DIR = "mlflow-spool"


def spool_root(spool_folder: str | os.PathLike | None = None, tracking_folder: str | os.PathLike = "runs") -> Path:
    """Where the MLflow backend keeps what a stage logs while the server does not answer (absolute).

    `spool_folder` (params' tracking.spool_folder), when given, is used as is, and must be writable:
    an error naming it otherwise, when the stage starts, not when an outage needs it. When not
    given: <tracking_folder>/mlflow-spool, made absolute; where that cannot be written (the image's
    user in a root-owned working directory), the user's cache folder ($XDG_CACHE_HOME or
    ~/.cache)/facectx/mlflow-spool; failing that, <temp folder>/facectx-<uid>/mlflow-spool. The
    choice depends only on the machine, so the next stage there finds the spool to send."""
    if spool_folder:
        path = Path(spool_folder).expanduser().absolute()
        if not _writable(path):
            raise ValueError(f"tracking.spool_folder {str(spool_folder)!r}: {path} cannot be written by this user")
        return path
    candidates = [
        Path(tracking_folder).absolute() / SPOOL_DIR,
        *[Path(cache).absolute() / "facectx" / SPOOL_DIR for cache in _user_cache()],
        Path(tempfile.gettempdir()) / f"facectx-{os.getuid()}" / SPOOL_DIR,
    ]
    return next((path for path in candidates if _writable(path)), candidates[-1])


def _user_cache() -> list[str | Path]:
    """The user's cache folder, if the user has one (a uid without a home has none)."""
    if os.environ.get("XDG_CACHE_HOME"):
        return [os.environ["XDG_CACHE_HOME"]]
    try:
        return [Path.home() / ".cache"]
    except RuntimeError:
        return []


def _writable(path: Path) -> bool:
    """Can this user create `path` (or write into it, where it exists)? Nothing is created here."""
    existing = next(parent for parent in [path, *path.parents] if parent.exists())
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
