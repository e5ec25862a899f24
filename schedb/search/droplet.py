"""Droplet search over the sampling decisions of a MetaSchedule trace.

After Canesche et al., "The Droplet Search Algorithm for Kernel Scheduling" (ACM TACO
2024; AutoTVM's ``DropletTuner``, TVM PR #14683): a descent that measures the
neighbourhood of the best point in batches, moves only when a t-test says the new
point is faster, and widens the neighbourhood when it runs out of points.

Coordinates are the trace's decisions: tile factor vectors (a step moves one prime
factor between adjacent levels, :func:`schedb.tir.replay.tile_moves`), categorical indices
and compute-at locations (a step is the next valid index either way). The trace's
instructions stay fixed; every candidate is the start trace with other decisions,
replayed by :func:`schedb.tir.replay.apply_trace`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schedb.errors import SchedbError
from schedb.tir.replay import (
    LOCATION, TILE, DecisionPoint, Replayed, apply_trace, as_json, decision_points, schedule_part, tile_moves,
)


@dataclass
class Visit:
    """One point of the search path: its trace (plain JSON) and mean time or error."""

    trace: list
    mean: float | None
    error: str | None = None


@dataclass
class DropletResult:
    start_mean: float
    best_mean: float
    best_trace: Any  # tvm Trace (with postprocessing); replay.as_json() gives plain JSON
    best_samples: list[float]
    trials: int  # candidates measured, the start included when it was measured here
    failed: int  # candidates that did not replay, build or run
    pvalue: float | None  # Welch one-sided, best faster than start; None: best is the start
    visited: list[Visit] = field(default_factory=list)
    elapsed: float = 0.0
    start_samples: list[float] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.start_mean / self.best_mean


def significantly_faster(candidate: list[float], incumbent: list[float], pvalue: float) -> tuple[bool, float]:
    """(accept, p): the candidate's mean is lower and Welch's one-sided t-test
    (alternative "less": candidate < incumbent) over the repeat samples gives p <= pvalue.
    With fewer than two samples on a side no test is possible and the means decide."""
    from scipy.stats import ttest_ind

    mean_c, mean_i = sum(candidate) / len(candidate), sum(incumbent) / len(incumbent)
    if mean_c >= mean_i:
        return False, 1.0
    if len(candidate) < 2 or len(incumbent) < 2:
        return True, math.nan
    # Two constant sample sets with different means give p = 0, so p is never nan here.
    p = float(ttest_ind(candidate, incumbent, equal_var=False, alternative="less").pvalue)
    return p <= pvalue, p


@dataclass
class _Point:
    key: tuple  # decision values in coordinate order (tiles as tuples)
    trace: Any
    samples: list[float]
    locations: dict[int, list[int]]

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples)


def _options(p: DecisionPoint, value, radius: int, locations: dict[int, list[int]]) -> list:
    """Values of one coordinate 1..radius steps away from ``value``, nearest first."""
    if p.kind == TILE:
        seen, frontier, out = {value}, [value], []
        for _ in range(radius):  # breadth first: one more step per round
            frontier = [g for g in dict.fromkeys(g for f in frontier for g in tile_moves(f, p.attrs[1]))
                        if g not in seen]
            seen.update(frontier)
            out += frontier
        return out
    valid = locations.get(p.index, [value]) if p.kind == LOCATION else list(range(len(p.attrs[0])))
    if value not in valid:
        return []
    at = valid.index(value)
    return [valid[at + s * k] for k in range(1, radius + 1) for s in (-1, 1) if 0 <= at + s * k < len(valid)]


def _neighbours(points: list[DecisionPoint], at: _Point, radius: int, limit: int, rng: random.Random,
               exclude: set) -> list[tuple]:
    """Unvisited points within ``radius`` steps per coordinate, in the order to measure them.

    The full neighbourhood is the product of every coordinate's (stay | move) choices,
    3^n at radius 1 for n coordinates: far too many to measure, so it is sampled. First
    come all single-axis moves (shuffled, so a batch spans several coordinates); at
    radius 1 they are all kept even beyond ``limit``, since they are the only way to
    see each coordinate's own effect. Then multi-axis points are drawn, each coordinate
    staying with probability 1/3 as in the {-1, 0, +1}^n cube, until ``limit``. So a
    neighbourhood holds at most max(limit, single moves) points at radius 1 and ``limit``
    beyond: linear in the number of coordinates, not exponential."""
    opts = [_options(p, v, radius, at.locations) for p, v in zip(points, at.key)]
    singles = [at.key[:i] + (o,) + at.key[i + 1:] for i, os in enumerate(opts) for o in os]
    rng.shuffle(singles)
    out: list[tuple] = []
    taken = set(exclude)
    cap = max(limit, len(singles)) if radius == 1 else limit
    for s in singles:
        if len(out) < cap and s not in taken:
            out.append(s)
            taken.add(s)
    if sum(bool(os) for os in opts) < 2:
        return out
    for _ in range(20 * limit):  # bounded: draws repeat once the space is nearly exhausted
        if len(out) >= cap:
            break
        cand = tuple(v if not os or rng.random() < 1 / 3 else rng.choice(os) for v, os in zip(at.key, opts))
        if sum(c != v for c, v in zip(cand, at.key)) >= 2 and cand not in taken:
            out.append(cand)
            taken.add(cand)
    return out


def _key(points: list[DecisionPoint], trace) -> tuple:
    got = {p.index: p.decision for p in decision_points(trace)}
    return tuple(_hashable(got.get(p.index)) for p in points)


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _with_decisions(trace, points: list[DecisionPoint], key: tuple) -> list:
    insts, decisions = as_json(trace)
    new = {p.index: list(v) if isinstance(v, tuple) else v for p, v in zip(points, key)}
    return [insts, [[i, new.get(i, d)] for i, d in decisions]]


def droplet(mod, target, start_trace, engine, trials: int = 64, time_budget: float | None = None,
            pvalue: float = 0.05, batch: int = 8, seed: int = 0, start_samples: list[float] | None = None,
            max_neighbours: int | None = None, max_radius: int = 4) -> DropletResult:
    """Refine ``start_trace`` (Trace or JSON, for ``mod`` or a workload like it) on ``mod``.

    Measures batches of ``batch`` neighbours of the incumbent with ``engine``; the batch's
    fastest replaces the incumbent if :func:`significantly_faster`. When fewer than a
    batch of unvisited neighbours remain, the radius grows by one (up to ``max_radius``);
    after a move it is 1 again. Stops when the neighbourhood is exhausted, ``trials``
    candidates are measured or ``time_budget`` seconds are spent. ``start_samples``
    (the start's repeat times, if already measured) saves measuring it again.
    Deterministic for a given ``seed`` and measurements. Raises SchedbError if the
    start does not apply or run."""
    search = _Search(mod, target, engine, pvalue, batch, max_neighbours or 4 * batch, max_radius, seed)
    return search.run(start_trace, trials, time_budget, start_samples)


def refine_many(starts: Iterable, mod, target, engine, trials: int = 64, time_budget: float | None = None,
                pvalue: float = 0.05, batch: int = 8, seed: int = 0, max_neighbours: int | None = None,
                max_radius: int = 4) -> DropletResult:
    """Droplet from each start trace in turn, within one budget of ``trials`` and
    ``time_budget``: each start gets an even share of what is left, so budget that a
    start leaves unused goes to the next. Visited points are shared, so no point is
    measured twice. Starts that do not apply or run are skipped (and counted as failed).

    The result holds the best point over all runs against the best start, and trials,
    failures and the visited path of all runs."""
    starts = list(starts)
    t0 = time.perf_counter()
    search = _Search(mod, target, engine, pvalue, batch, max_neighbours or 4 * batch, max_radius, seed)
    runs: list[DropletResult] = []
    for k, start in enumerate(starts):
        left_time = None if time_budget is None else time_budget - (time.perf_counter() - t0)
        if search.trials >= trials or (left_time is not None and left_time <= 0):
            break
        share = len(starts) - k
        try:
            runs.append(search.run(start, search.trials + max(1, (trials - search.trials) // share),
                                   None if left_time is None else left_time / share, None))
        except SchedbError:
            continue
    if not runs:
        raise SchedbError(f"none of the {len(starts)} start traces applies and runs")
    best = min(runs, key=lambda r: r.best_mean)
    base = min(runs, key=lambda r: r.start_mean)
    p = best.pvalue if best is base else significantly_faster(best.best_samples, base.start_samples, 1.0)[1]
    return DropletResult(base.start_mean, best.best_mean, best.best_trace, best.best_samples,
                         search.trials, search.failed, p, search.visits, time.perf_counter() - t0,
                         base.start_samples)


class _Search:
    """One task's search state, shared by the runs from several starts: visited points
    (per trace structure, so traces of other instructions never collide), the RNG, and
    the running totals of trials, failures and the visited path."""

    def __init__(self, mod, target, engine, pvalue, batch, limit, max_radius, seed):
        self.mod, self.target, self.engine = mod, target, engine
        self.pvalue, self.batch, self.limit, self.max_radius = pvalue, batch, limit, max_radius
        self.rng = random.Random(seed)
        self.visited: dict[str, set] = {}
        self.trials = self.failed = 0
        self.visits: list[Visit] = []

    def run(self, start_trace, trials: int, time_budget: float | None, start_samples) -> DropletResult:
        """Search from one start until ``self.trials`` reaches ``trials`` (a total)."""
        t0 = time.perf_counter()
        deadline = math.inf if time_budget is None else t0 + time_budget
        trials0, failed0, visits0 = self.trials, self.failed, len(self.visits)
        start, points, done, first = self._start(start_trace, start_samples)
        base, inc, inc_mod, radius = first.trace, first, start.mod, 1
        queue = _neighbours(points, inc, 1, self.limit, self.rng, done)
        search_trials = trials - 2  # two kept for the final head-to-head with the start
        while search_trials - self.trials >= 2 and time.perf_counter() < deadline:  # incumbent + one
            while len(queue) < self.batch and radius < self.max_radius:  # speculation
                radius += 1
                queue += _neighbours(points, inc, radius, self.limit, self.rng, done | set(queue))
            if not queue:
                break
            chosen = self._replay_batch(queue, base, points, done, search_trials - 1)
            if not chosen:
                continue
            inc, best = self._measure_batch(chosen, inc, inc_mod)
            if best is not None and significantly_faster(best[2].samples, inc.samples, self.pvalue)[0]:
                inc = _Point(best[0], best[1].trace, best[2].samples, best[1].locations)
                inc_mod, radius = best[1].mod, 1
                queue = _neighbours(points, inc, 1, self.limit, self.rng, done)
        inc, p, start_samples = self._head_to_head(start.mod, first, inc, inc_mod)
        return DropletResult(sum(start_samples) / len(start_samples), inc.mean, inc.trace, inc.samples,
                             self.trials - trials0, self.failed - failed0, p, self.visits[visits0:],
                             time.perf_counter() - t0, list(start_samples))

    def _start(self, start_trace, start_samples):
        """Replay (and, without ``start_samples``, measure) the start:
        (its Replayed, decision points, the set of visited keys, the start point)."""
        start = apply_trace(start_trace, self.mod, self.target)
        if not start.ok:
            self.failed += 1
            raise SchedbError(f"start trace does not apply: {start.error}")
        base = start.trace
        points = decision_points(base)
        done = self.visited.setdefault(repr(schedule_part(base)), set())
        if start_samples is None:
            m = self.engine.measure([start.mod])[0]
            self.trials += 1
            if not m.ok:
                self.failed += 1
                self.visits.append(Visit(as_json(base), None, m.error))
                raise SchedbError(f"start trace does not run: {m.error}")
            start_samples = m.samples
        first = _Point(_key(points, base), base, list(start_samples), start.locations)
        self.visits.append(Visit(as_json(base), first.mean))
        done.add(first.key)
        return start, points, done, first

    def _measure_batch(self, chosen, inc: "_Point", inc_mod):
        """Measure a batch with the incumbent re-measured in the same call, so the t-test
        compares samples taken under the same machine load, not a stale baseline:
        (the incumbent with fresh samples, the batch's fastest as (key, Replayed, Measurement))."""
        measured = self.engine.measure([inc_mod] + [r.mod for _, r in chosen])
        if measured[0].ok:
            inc = _Point(inc.key, inc.trace, measured[0].samples, inc.locations)
        best = None
        for (key, r), m in zip(chosen, measured[1:]):
            self.visits.append(Visit(as_json(r.trace), m.mean if m.ok else None, m.error))
            if not m.ok:
                self.failed += 1
            elif best is None or m.mean < best[2].mean:
                best = (key, r, m)
        self.trials += len(chosen) + 1
        return inc, best

    def _head_to_head(self, start_mod, first: "_Point", inc: "_Point", inc_mod):
        """A chain of moves each judged against a fresh incumbent can drift under changing
        load: keep the end point only if it beats the start measured beside it.
        -> (the kept point, its p-value or None, the start's samples)."""
        if inc.trace is first.trace:
            return inc, None, first.samples
        final = self.engine.measure([start_mod, inc_mod])
        self.trials += 2
        if not (final[0].ok and final[1].ok):
            return inc, None, first.samples
        keep, p = significantly_faster(final[1].samples, final[0].samples, self.pvalue)
        if keep:
            return _Point(inc.key, inc.trace, final[1].samples, inc.locations), p, final[0].samples
        return _Point(first.key, first.trace, list(final[0].samples), first.locations), None, final[0].samples

    def _replay_batch(self, queue: list, base, points, done: set, trials: int
                      ) -> list[tuple[tuple, Replayed]]:
        """Pop unvisited points off ``queue`` and replay them until a batch is ready;
        points that do not replay are counted as failed."""
        chosen: list[tuple[tuple, Replayed]] = []
        while queue and len(chosen) < min(self.batch, trials - self.trials):
            key = queue.pop(0)
            if key in done:
                continue
            done.add(key)
            r = apply_trace(base, self.mod, self.target,
                            {p.index: list(v) if isinstance(v, tuple) else v for p, v in zip(points, key)})
            if not r.ok:
                self.failed += 1
                self.visits.append(Visit(_with_decisions(base, points, key), None, r.error))
                continue
            actual = _key(points, r.trace)  # differs if a compute location had to fall back
            if actual != key and actual in done:
                continue
            done.add(actual)
            chosen.append((actual, r))
        return chosen
