"""Every method's outputs on the test photos: the trained models on this process's device, the
classical baselines spread over the CPU cores."""

from __future__ import annotations

import logging
import multiprocessing
import os

import numpy as np

from facectx.evaluation.photo_sets import TestSet
from facectx.inference import Hallucinator

log = logging.getLogger("facectx.evaluation.evaluate")  # the name evaluate's log lines have always carried


def batched(fn, n: int, batch: int) -> np.ndarray:
    """fn on consecutive slices of n rows, `batch` rows at most each, its results concatenated."""
    return np.concatenate([fn(slice(i, min(n, i + batch))) for i in range(0, n, batch)])


_BASELINE_JOB: tuple = ()  # (method, masked, hard mask), set before the pool forks: the workers inherit it


def _baseline_slice(rows: slice) -> np.ndarray:
    method, masked, hard_mask = _BASELINE_JOB
    return method(masked[rows], hard_mask[rows])


def method_outputs(methods: dict, test: TestSet, batch: int) -> dict[str, np.ndarray]:
    """Every method's uint8 outputs. The classical baselines run on the CPU, one photo at a time
    (biharmonic ~0.15 s a photo), so they are spread over every core: on a 16-core GPU machine the
    whole LFW test split's baselines take seconds, not minutes."""
    global _BASELINE_JOB
    size, n = test.target.shape[1], len(test.target)
    hard_mask = (test.mask[size] > 127).astype(np.uint8)
    workers = min(len(os.sched_getaffinity(0)), max(1, n // batch))
    outputs = {}
    for name, method in methods.items():
        log.info("evaluate: running %s on %d photos", name, n)
        if isinstance(method, Hallucinator):
            # The lambdas below run within their loop iteration (batched calls them at once): B023 is moot.
            outputs[name] = batched(
                lambda s: method.from_pyramid(  # noqa: B023
                    {r: v[s] for r, v in test.masked.items()},
                    {r: v[s] for r, v in test.mask.items()},
                ),
                n,
                batch,
            )
        elif workers == 1:
            outputs[name] = batched(lambda s: method(test.masked[size][s], hard_mask[s]), n, batch)  # noqa: B023
        else:
            # fork: the workers share the arrays and the method (a closure) without pickling them;
            # they never touch torch, so a CUDA context in this process does not matter.
            _BASELINE_JOB = (method, test.masked[size], hard_mask)
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    outputs[name] = np.concatenate(
                        pool.map(_baseline_slice, [slice(i, min(n, i + batch)) for i in range(0, n, batch)])
                    )
            finally:  # the job's arrays must not outlive the call in this process
                _BASELINE_JOB = ()
    return outputs
