"""Phases of a long pipeline call, reported to the caller (the CLI formats them).

``on_phase(name, event, seconds)`` with event ``"start"`` (seconds 0) when a phase starts,
``"end"`` when it ends and ``"failed"`` when it raised (the exception goes on): loading a
model, lowering it, extracting its tasks, building the index, the search, each compile
and the timing."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

PhaseCallback = Callable[[str, str, float], None]


@contextmanager
def phase(on_phase: PhaseCallback | None, name: str):
    if on_phase is None:
        yield
        return
    t0 = time.perf_counter()
    on_phase(name, "start", 0.0)
    try:
        yield
    except BaseException:
        on_phase(name, "failed", time.perf_counter() - t0)
        raise
    on_phase(name, "end", time.perf_counter() - t0)
