"""Progress of long steps: periodic log lines with counts, rate and ETA off a terminal, a tqdm bar
on one, nothing on a quiet rank; and the CLI's logging set-up keeps MLflow's chatter out."""

from __future__ import annotations

import io
import logging

import pytest

from facectx.progress import QUIET, Progress, ProgressStyle, duration


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "facectx.progress"]


def test_log_lines_come_every_interval_with_counts_rate_and_eta(caplog):
    clock = FakeClock()
    style = ProgressStyle(bar=False, every_s=30.0, clock=clock)
    caplog.set_level(logging.INFO, logger="facectx.progress")
    with Progress(100, "train 16px", "step", style, per_unit=("images", 8)) as progress:
        for _ in range(100):
            clock.now += 1.0  # one step a second
            progress.advance(1)
            if progress.done == 50:
                progress.figures(loss_l1=0.25, loss_adv=1.5)
    lines = progress_lines(caplog)
    assert lines[0] == "train 16px: 100 steps to do"
    # 100 steps at one a second, a line every 30 s and the last: at 30, 60, 90 and 100 steps.
    assert [line.split(":")[1].split()[0] for line in lines[1:]] == ["30/100", "60/100", "90/100", "100/100"]
    assert lines[1] == "train 16px: 30/100 steps (30%), 1 steps/s, 8 images/s, elapsed 30 s, ETA 1m10s"
    assert "loss_l1 0.25, loss_adv 1.5" in lines[2]
    assert lines[-1].endswith("done in 1m40s")


def test_no_line_between_intervals(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="facectx.progress")
    progress = Progress(1000, "prepare", "photo", ProgressStyle(every_s=30.0, clock=clock))
    for _ in range(10):
        clock.now += 2.9
        progress.advance(1)
    assert len(progress_lines(caplog)) == 1  # only the "to do" line: 29 s have passed


def test_terminal_mode_renders_a_bar():
    stream = io.StringIO()
    with Progress(40, "evaluate cascade", "photo", ProgressStyle(bar=True, stream=stream)) as progress:
        progress.figures(loss=0.5)
        progress.advance(10)
    text = stream.getvalue()
    assert "evaluate cascade" in text and "10/40" in text and "25%" in text and "|" in text


def test_quiet_shows_nothing(caplog):
    caplog.set_level(logging.INFO, logger="facectx.progress")
    with Progress(3, "train", "step", QUIET) as progress:
        progress.advance(3)
    assert progress_lines(caplog) == []


@pytest.mark.parametrize(
    "seconds, shown", [(4.2, "4 s"), (125, "2m05s"), (3720, "1h02m"), (float("inf"), "?"), (float("nan"), "?")]
)
def test_duration(seconds, shown):
    assert duration(seconds) == shown


def test_logging_setup_quiets_mlflow_chatter(monkeypatch):
    import mlflow  # noqa: F401  (importing mlflow configures its own loggers: the set-up must survive it)
    from mlflow.system_metrics import system_metrics_monitor

    from facectx.cli.main import configure_logging

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    names = ("facectx", "mlflow.system_metrics", "mlflow.store.db.utils", "alembic", "alembic.runtime.migration")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        configure_logging(verbose=False)
        assert not system_metrics_monitor._logger.isEnabledFor(logging.INFO)  # "Started monitoring system metrics."
        assert not logging.getLogger("mlflow.store.db.utils").isEnabledFor(
            logging.INFO
        )  # "Creating initial ... tables"
        assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)  # "Running upgrade ..."
        assert logging.getLogger("facectx.progress").isEnabledFor(logging.INFO)  # our own progress still shows
        # "View run ... at" is printed by MLflow to stdout; this is MLflow's switch for it.
        from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

        assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
