"""Every method's outputs on the test photos: the trained models on this process's device, the
classical baselines spread over the CPU cores."""

from __future__ import annotations

import logging
import multiprocessing
import os

import numpy as np

from facectx.evaluation.photo_sets import TestSet
from facectx.inference import Hallucinator
from facectx.progress import LOG_LINES, Progress, ProgressStyle

log = logging.getLogger("facectx.evaluation.evaluate")  # the name evaluate's log lines have always carried


def batched(fn, n: int, batch: int, progress: Progress | None = None) -> np.ndarray:
    """fn on consecutive slices of n rows, `batch` rows at most each, its results concatenated;
    progress advances by each slice's rows."""
    parts = []
    for i in range(0, n, batch):
        parts.append(fn(slice(i, min(n, i + batch))))
        if progress is not None:
            progress.advance(len(parts[-1]))
    return np.concatenate(parts)


_BASELINE_JOB: tuple = ()  # (method, masked, hard mask), set before the pool forks: the workers inherit it


def _baseline_slice(rows: slice) -> np.ndarray:
    method, masked, hard_mask = _BASELINE_JOB
    return method(masked[rows], hard_mask[rows])


def method_outputs(
    methods: dict, test: TestSet, batch: int, progress_style: ProgressStyle = LOG_LINES
) -> dict[str, np.ndarray]:
    """Every method's uint8 outputs (progress: photos of all methods, the method being run). The
    classical baselines run on the CPU, one photo at a time (biharmonic ~0.15 s a photo), so they
    are spread over every core: on a 16-core GPU machine the whole LFW test split's baselines take
    seconds, not minutes."""
    global _BASELINE_JOB
    size, n = test.target.shape[1], len(test.target)
    hard_mask = (test.mask[size] > 127).astype(np.uint8)
    workers = min(len(os.sched_getaffinity(0)), max(1, n // batch))
    outputs, progress = {}, Progress(n * len(methods), "evaluate: running methods", "photo", progress_style)
    for name, method in methods.items():
        log.info("evaluate: running %s on %d photos", name, n)
        progress.figures(method=name)
        if isinstance(method, Hallucinator):
            # The lambdas below run within their loop iteration (batched calls them at once): B023 is moot.
            outputs[name] = batched(
                lambda s: method.from_pyramid(  # noqa: B023
                    {r: v[s] for r, v in test.masked.items()},
                    {r: v[s] for r, v in test.mask.items()},
                ),
                n,
                batch,
                progress,
            )
        elif workers == 1:
            outputs[name] = batched(lambda s: method(test.masked[size][s], hard_mask[s]), n, batch, progress)  # noqa: B023
        else:
            # fork: the workers share the arrays and the method (a closure) without pickling them;
            # they never touch torch, so a CUDA context in this process does not matter.
            _BASELINE_JOB = (method, test.masked[size], hard_mask)
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    slices = [slice(i, min(n, i + batch)) for i in range(0, n, batch)]
                    outputs[name] = np.concatenate(
                        [progress.advance(len(out)) or out for out in pool.imap(_baseline_slice, slices)]
                    )
            finally:  # the job's arrays must not outlive the call in this process
                _BASELINE_JOB = ()
    progress.close()
    return outputs
