"""The generator first. hallucinate-dataset's one serial stage is the generator; the photo workers
and the thread that encodes and writes frames only feed it or drain it, and have slack. Where the
busy threads outnumber the cores (4 on this 2-core machine), the kernel shares the cores evenly and
the generator loses part of its own; these helpers lower their own CPU priority instead, so they
use what the generator leaves. Nothing else changes: the same work, the same bytes.
"""

from __future__ import annotations

import os
import sys
import threading

HELPER_NICENESS = 19  # the lowest priority: a helper runs only where a core would otherwise idle


def lower_this_threads_priority() -> None:
    """Linux only, where each thread has its own nice value; elsewhere nice applies to the whole
    process (the generator's own with it), so nothing is changed there."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, max(HELPER_NICENESS, os.getpriority(os.PRIO_PROCESS, thread)))
