"""Small helpers every backend shares: flattened params, times, one-line messages."""

from __future__ import annotations

import time


def flatten(prefix: str, value) -> dict[str, str]:
    """Nested dicts -> {"a.b.c": value} for mlflow.log_params."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value if not isinstance(value, (list, tuple)) else list(value)}


def now_ms() -> int:
    return int(time.time() * 1000)


def one_line(err: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."
