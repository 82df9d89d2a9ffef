"""Progress of a long step, the way a command-line tool shows it: a bar (tqdm) on a terminal, a
plain log line every `every_s` seconds otherwise (CI, Kubeflow logs), with counts, rate and ETA.

Which of the two is a setting (`ProgressStyle`) handed down by the caller: the CLI decides once
from whether stderr is a terminal; code called by Kubeflow or a library gets log lines (the
default). `QUIET` shows nothing (the other ranks of a distributed run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

log = logging.getLogger("facectx.progress")


@dataclass(frozen=True)
class ProgressStyle:
    bar: bool = False  # True: a tqdm bar on `stream`; False: log lines
    every_s: float = 30.0  # seconds between log lines (the first and the last line always show)
    stream: TextIO | None = None  # the bar's stream (None: stderr)
    clock: Callable[[], float] = time.monotonic  # seconds; tests pass a fake one
    quiet: bool = False  # show nothing


LOG_LINES = ProgressStyle()
QUIET = ProgressStyle(quiet=True)


def terminal_style(is_terminal: bool) -> ProgressStyle:
    """The style for a command run by a person (a bar) or by CI / Kubeflow (log lines)."""
    return ProgressStyle(bar=is_terminal)


class Progress:
    """`total` things of `unit` to do under the name `what`; `advance(n)` as they get done.

    per_unit: (name, count) of a second rate to show, e.g. ("images", batch_size) for steps.
    `figures(**values)` sets numbers shown beside the counts (a training stage's latest losses).
    Use as a context manager, or call close().
    """

    def __init__(
        self,
        total: int,
        what: str,
        unit: str = "photo",
        style: ProgressStyle = LOG_LINES,
        per_unit: tuple[str, int] | None = None,
        already: int = 0,  # done before this run (a resumed one): counted, but not in the rate
    ):
        self.total, self.what, self.unit, self.style, self.per_unit = total, what, unit, style, per_unit
        self.done = self.already = already
        self._figures = {}
        self.started = self._last = style.clock()
        self._bar = None
        if style.bar and not style.quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already, unit=unit, desc=what, file=style.stream, dynamic_ncols=True)
        elif not style.quiet:
            log.info("%s: %d %ss to do", what, total - already, unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def figures(self, **values: float) -> None:
        self._figures = values
        if self._bar is not None:
            self._bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=False)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.style.quiet:
            return
        if self._bar is not None:
            self._bar.update(count)
            return
        now = self.style.clock()
        if now - self._last >= self.style.every_s or self.done >= self.total:
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        """The log line: counts, rates, figures and the time left."""
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.already) / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.what}: {self.done}/{self.total} {self.unit}s{share}", f"{rate:.3g} {self.unit}s/s"]
        if self.per_unit:
            parts.append(f"{rate * self.per_unit[1]:.3g} {self.per_unit[0]}/s")
        parts += [f"{k} {_short(v)}" for k, v in self._figures.items()]
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        parts.append(f"elapsed {duration(elapsed)}, ETA {duration(left)}" if self.done < self.total else
                     f"done in {duration(elapsed)}")  # fmt: skip
        return ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def duration(seconds: float) -> str:
    """4 s, 2m05s, 1h02m: what a person reads at a glance."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
