"""Phases of a long pipeline call, reported to the caller (the CLI formats them).

``on_phase(name, None)`` when a phase starts and ``on_phase(name, seconds)`` when it ends:
lowering a model, extracting its tasks, building the index, the search, each compile and
timing. A phase that fails reports no end; the exception says why."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

PhaseCallback = Callable[[str, "float | None"], None]


@contextmanager
def phase(on_phase: PhaseCallback | None, name: str):
    if on_phase is None:
        yield
        return
    t0 = time.perf_counter()
    on_phase(name, None)
    yield
    on_phase(name, time.perf_counter() - t0)
