"""Progress of a long run: a bar (tqdm) on a terminal, a plain log line every `every_s` seconds
otherwise (CI, Kubeflow logs)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("facectx.hallucinate")


class Progress:
    def __init__(self, total: int, what: str, every_s: float = 30.0, bar: bool | None = None):
        self.total, self.what, self.every_s, self.done = total, what, every_s, 0
        self.started = self._last = time.monotonic()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="photo", desc=what)

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d photos, %.1f photos/s, ETA %.0f s", self.what, self.done, self.total, rate, eta)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
