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

Every comparison is paired: the kernels compared are measured in one call, one sample
of each per round in a rotating order (``Engine.measure(..., rounds=)``), so load drift
during the call hits all of them alike, and the test is a one-sided t-test on the
per-round log ratios (:func:`significantly_faster`). The final test also asks for a minimum
gain: two builds of one kernel differ within a call by an offset that its rounds cannot
average away, so a gain below ``min_gain`` is not told apart from it. A move asks for less,
``move_gain``: it only steers the search, and a wasted move costs trials, not a false
acceptance; but without any margin that offset alone moved about 5% of batches of equal
kernels on the noisier machine recorded (benchmarks/results/noise_epyc.json).
Acceptance is decided in one place, :meth:`Droplet.finish`: the search's best end point
and the start it is judged against, ``FINAL_ROUNDS`` rounds, kept only if p <= ``pvalue``
against ``min_gain``; ``DropletResult.accepted`` says so, and callers use nothing else.
The gain of an accepted end point is measured afresh after that decision, so the samples
that won the test do not also report their win.
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


@dataclass(frozen=True)
class DropletParams:
    """How a droplet search moves and decides, checked on construction."""

    pvalue: float = 0.05  # of every paired test (a move's is divided by the neighbours tested)
    # Smallest gain the final test accepts: about twice the sd (~1.3%) of the offset between
    # two builds of one kernel within a call here (benchmarks/results/noise.json).
    min_gain: float = 0.02
    # Smallest gain a move asks for: half of min_gain halves the moves among equal kernels
    # on the noisier recording (tests/test_droplet.py: 42 to 22 of 800 batches) and costs
    # little power (searches reaching a 10% faster neighbour: 44 to 43 of 50).
    move_gain: float = 0.01
    batch: int = 8  # neighbours measured per batch, beside the incumbent
    seed: int = 0
    max_neighbours: int | None = None  # points queued per radius (None: 4 x batch)
    max_radius: int = 4  # steps per coordinate the neighbourhood may widen to
    patience: int = 2  # batches without a move before the next start is searched

    def __post_init__(self):
        if not 0 < self.pvalue < 1:
            raise SchedbError(f"`pvalue` must lie between 0 and 1, not {self.pvalue}")
        for name in ("min_gain", "move_gain"):
            if not 0 <= getattr(self, name) < 1:
                raise SchedbError(f"`{name}` must lie in [0, 1), not {getattr(self, name)}")
        for name in ("batch", "max_radius", "patience"):
            if getattr(self, name) < 1:
                raise SchedbError(f"`{name}` must be at least 1, not {getattr(self, name)}")
        if self.max_neighbours is not None and self.max_neighbours < 1:
            raise SchedbError(f"`max_neighbours` must be at least 1, not {self.max_neighbours}")


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
    pvalue: float | None  # one-sided paired p of the final head-to-head; None: there was none
    visited: list[Visit] = field(default_factory=list)
    elapsed: float = 0.0
    start_samples: list[float] = field(default_factory=list)
    accepted: bool = False  # best beat the start measured beside it at the search's pvalue
    start: int = 0  # index of the start trace the result is judged against (the first that ran)

    @property
    def speedup(self) -> float:
        return self.start_mean / self.best_mean


def log_ratios(candidate: list[float], incumbent: list[float]) -> list[float]:
    """log(candidate / incumbent) round by round (samples taken in the same rounds)."""
    if len(candidate) != len(incumbent):
        raise ValueError(f"unpaired samples: {len(candidate)} and {len(incumbent)} rounds")
    return [math.log(c / i) for c, i in zip(candidate, incumbent)]


def significantly_faster(candidate: list[float], incumbent: list[float], pvalue: float,
                         min_gain: float = 0.0) -> tuple[bool, float]:
    """(accept, p) for samples paired by round: the candidate is more than ``min_gain``
    faster, i.e. the mean log ratio candidate / incumbent lies below log(1 - min_gain) and a
    one-sided one-sample t-test of the log ratios against that margin gives p <= pvalue.
    With fewer than two rounds no test is possible: never accepted (p is nan)."""
    from scipy.stats import ttest_1samp

    d = log_ratios(candidate, incumbent)
    margin = math.log1p(-min_gain)
    if sum(d) >= margin * len(d):
        return False, 1.0
    if len(d) < 2:
        return False, math.nan
    if max(d) == min(d):  # no spread at all (synthetic samples): the sign decides
        return True, 0.0
    p = float(ttest_1samp(d, margin, alternative="less").pvalue)
    return p <= pvalue, p


@dataclass
class _Point:
    key: tuple  # decision values in coordinate order (tiles as tuples)
    trace: Any
    samples: list[float]
    locations: dict[int, list[int]]
    mod: Any  # the scheduled module, to measure it again

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


CONFIRM = 2  # trials of the final head-to-head: the start and the end point in one call
# Rounds of a batch (each kernel one sample per round) and of the final head-to-head,
# sized for power at the noisiest per-round log-ratio sd recorded on this machine, 0.17
# (0.05 to 0.17 across benchmarks/bench_noise.py runs): there, a 10% faster neighbour
# seldom passed a 5-round batch's test at pvalue / batch size (about half the searches
# that met one moved to it; 15 rounds: nearly nine in ten), and the final test at the 2%
# minimum gain passes it in about 84% of head-to-heads at 28 rounds, 92% at 42. Rounds
# cost wall time, not trials: 10 more rounds of a batch of 9 add about 2 s to its builds.
MOVE_ROUNDS, FINAL_ROUNDS = 15, 42


def droplet(mod, target, start_trace, engine, trials: int = 64, time_budget: float | None = None,
            params: DropletParams = DropletParams(), start_samples: list[float] | None = None) -> DropletResult:
    """Refine ``start_trace`` (Trace or JSON, for ``mod`` or a workload like it) on ``mod``:
    :func:`refine_many` from this one start. ``start_samples`` (the start's repeat times, if
    already measured) saves measuring it again. Raises SchedbError if the start does not
    apply or run."""
    return refine_many([start_trace], mod, target, engine, trials, time_budget, params, start_samples)


def refine_many(starts: Iterable, mod, target, engine, trials: int = 64, time_budget: float | None = None,
                params: DropletParams = DropletParams(), start_samples: list[float] | None = None) -> DropletResult:
    """A :class:`Droplet` search within ``trials`` candidates measured (the final
    head-to-head included) and ``time_budget`` seconds (the head-to-head after it).
    Starts that do not apply or run are skipped (and counted as failed); SchedbError if
    none does. Deterministic for a given ``seed`` and measurements."""
    deadline = math.inf if time_budget is None else time.perf_counter() + time_budget
    search = Droplet(starts, mod, target, engine, params, start_samples)
    search.begin()
    while time.perf_counter() < deadline and search.step(trials - CONFIRM - search.trials):
        pass
    return search.finish()


def spend(searches: dict, allocator) -> dict:
    """Spend ``allocator``'s budget (schedb.search.allocate) on ``searches`` (key -> Droplet,
    the keys it was given), one batch at a time to the task it picks; then finish every
    search whose start ran. -> {key: DropletResult}."""
    while (pick := allocator.next()) is not None:
        key, limit = pick
        s = searches[key]
        t0, moves = time.perf_counter(), s.moves
        used = s.step(s.batch + CONFIRM if limit is None else limit)
        # A task that cannot use what is left is done too, or the same pick would repeat.
        allocator.charge(key, used, time.perf_counter() - t0, s.best_mean, s.moves > moves,
                         s.exhausted or used == 0)
    return {k: s.finish() for k, s in searches.items() if s.base is not None}


@dataclass
class _Run:
    """The descent from one start: its start point, incumbent and neighbourhood."""

    index: int  # which start
    first: _Point
    points: list[DecisionPoint]
    done: set  # visited keys of this trace structure (shared by runs of the same structure)
    inc: _Point
    queue: list
    radius: int = 1
    stale: int = 0  # batches since its last move

    @property
    def moved(self) -> bool:
        return self.inc.trace is not self.first.trace


class Droplet:
    """One task's droplet search from one or more start traces, measured a batch at a time.

    Each batch measures neighbours of the incumbent with the incumbent itself, paired by
    round (``MOVE_ROUNDS``), so the test compares samples taken under the same load; the
    batch's fastest replaces the incumbent if :func:`significantly_faster` at ``pvalue``
    over the batch's size. When fewer than a batch of unvisited neighbours remain, the
    radius grows by one (up to ``max_radius``); after a move it is 1 again. Starts are
    searched one after another: the next begins when the current one's neighbourhood is
    exhausted or ``patience`` batches pass without a move. Visited points are shared, so no
    point is measured twice. ``params`` (:class:`DropletParams`) holds these settings.

    A driver calls :meth:`begin`, :meth:`step` while it has budget (``refine_many`` for one
    task, :func:`spend` for a budget shared by many), then :meth:`finish`, the one place
    that decides acceptance."""

    def __init__(self, starts: Iterable, mod, target, engine, params: DropletParams = DropletParams(),
                 start_samples: list[float] | None = None):
        self.starts = list(starts)
        self.mod, self.target, self.engine = mod, target, engine
        self.pvalue, self.batch, self.limit = params.pvalue, params.batch, params.max_neighbours or 4 * params.batch
        self.min_gain, self.move_gain = params.min_gain, params.move_gain
        self.max_radius, self.patience = params.max_radius, params.patience
        self.start_samples = start_samples  # of starts[0], if already measured
        self.rng = random.Random(params.seed)
        self.visited: dict[str, set] = {}  # per trace structure, so other instructions never collide
        self.trials = self.failed = self.moves = 0
        self.visits: list[Visit] = []
        self.elapsed = 0.0
        self.exhausted = False
        self.base: _Run | None = None  # the first start that ran: what every result is judged against
        self.run: _Run | None = None
        self.ends: list[_Run] = []  # closed runs that moved
        self.next_start = 0

    @property
    def best_mean(self) -> float | None:
        """The best time measured so far (the search's estimate), None before a start ran."""
        runs = self.ends + ([self.run] if self.run else []) + ([self.base] if self.base else [])
        return min((r.inc.mean for r in runs), default=None)

    def begin(self) -> None:
        """Open the first start that applies and runs; SchedbError if none does."""
        while self.run is None:
            if self.next_start >= len(self.starts):
                raise SchedbError(f"none of the {len(self.starts)} start traces applies and runs")
            self._open()

    def step(self, limit: int) -> int:
        """Measure the next batch within ``limit`` trials, opening the next start first if
        the current one is closed. -> trials used (0: nothing fits, or ``exhausted``)."""
        t0, before = time.perf_counter(), self.trials
        while not self.exhausted:
            left = limit - (self.trials - before)
            if self.run is None:
                if self.next_start >= len(self.starts):
                    self.exhausted = True
                elif left >= 1:
                    self._open()
                    continue
                break
            if left < 2:  # the incumbent and one neighbour
                break
            chosen = self._next_batch(self.run, left - 1)
            if chosen is None:
                self._close()
            elif chosen:
                self._measure(self.run, chosen)
                break
        self.elapsed += time.perf_counter() - t0
        return self.trials - before

    def finish(self) -> DropletResult:
        """Accept the fastest end point of the runs that moved only if it is
        significantly faster than the first start measured beside it, round by round, in
        one more call: a chain of moves, each judged against a fresh incumbent, can drift
        under changing load, and start times of other calls do not compare. An accepted
        end point's times (and so its speed-up) come from one further paired call; that
        call is not counted in ``trials``, the search's budget."""
        if self.base is None:
            raise SchedbError("no start has run: call begin() or step() first")
        t0 = time.perf_counter()
        if self.run is not None:
            self._close()
        base = self.base.first
        best, start_samples, p, accepted = base, base.samples, None, False
        end = min((r.inc for r in self.ends), key=lambda x: x.mean, default=None)
        if end is not None:
            final = self.engine.measure([base.mod, end.mod], rounds=FINAL_ROUNDS)
            self.trials += CONFIRM
            self.failed += sum(not m.ok for m in final)
            if final[0].ok and final[1].ok:
                accepted, p = significantly_faster(final[1].samples, final[0].samples, self.pvalue,
                                                    self.min_gain)
                if accepted:  # the gain from a measurement that did not decide (no winner's curse)
                    again = self.engine.measure([base.mod, end.mod], rounds=FINAL_ROUNDS)
                    final = again if again[0].ok and again[1].ok else final
                start_samples = final[0].samples
                best = end if accepted else base
                best = _Point(best.key, best.trace, final[1 if accepted else 0].samples, best.locations, best.mod)
        self.elapsed += time.perf_counter() - t0
        return DropletResult(sum(start_samples) / len(start_samples), best.mean, best.trace, best.samples,
                             self.trials, self.failed, p, self.visits, self.elapsed, list(start_samples),
                             accepted, self.base.index)

    def _open(self) -> None:
        """Replay (and measure, unless its samples are given) the next start; on success it
        becomes the current run, on failure it is counted and skipped."""
        index = self.next_start
        self.next_start += 1
        start = apply_trace(self.starts[index], self.mod, self.target)
        if not start.ok:
            self.failed += 1
            return
        trace = start.trace
        samples = self.start_samples if index == 0 else None
        if samples is None:
            m = self.engine.measure([start.mod])[0]
            self.trials += 1
            if not m.ok:
                self.failed += 1
                self.visits.append(Visit(as_json(trace), None, m.error))
                return
            samples = m.samples
        points = decision_points(trace)
        first = _Point(_key(points, trace), trace, list(samples), start.locations, start.mod)
        self.visits.append(Visit(as_json(trace), first.mean))
        done = self.visited.setdefault(repr(schedule_part(trace)), set())
        done.add(first.key)
        self.run = _Run(index, first, points, done, first, _neighbours(points, first, 1, self.limit, self.rng, done))
        self.base = self.base or self.run

    def _close(self) -> None:
        if self.run.moved:
            self.ends.append(self.run)
        self.run = None

    def _next_batch(self, run: _Run, n: int) -> list | None:
        """Up to ``n`` replayed neighbours to measure (widening the radius while fewer than a
        batch are queued); [] if none of those popped replayed; None: the start's
        neighbourhood is exhausted."""
        while len(run.queue) < self.batch and run.radius < self.max_radius:  # speculation
            run.radius += 1
            run.queue += _neighbours(run.points, run.inc, run.radius, self.limit, self.rng,
                                     run.done | set(run.queue))
        if not run.queue:
            return None
        return self._replay_batch(run, min(self.batch, n))

    def _measure(self, run: _Run, chosen) -> None:
        """Measure a batch beside the incumbent; move to its fastest if significantly faster."""
        measured = self.engine.measure([run.inc.mod] + [r.mod for _, r in chosen], rounds=MOVE_ROUNDS)
        inc = run.inc
        paired = measured[0].ok  # the batch's own incumbent samples: otherwise nothing to pair with
        if paired:
            inc = run.inc = _Point(inc.key, inc.trace, measured[0].samples, inc.locations, inc.mod)
        best, ran = None, 0
        for (key, r), m in zip(chosen, measured[1:]):
            self.visits.append(Visit(as_json(r.trace), m.mean if m.ok else None, m.error))
            if not m.ok:
                self.failed += 1
                continue
            ran += 1
            if paired:
                gain = sum(log_ratios(m.samples, inc.samples))
                if best is None or gain < best[3]:
                    best = (key, r, m, gain)
        self.trials += len(chosen) + 1
        # The fastest of ``ran`` is tested: Bonferroni keeps a move's false rate at pvalue
        # (untested, 14% of batches of 4 equal kernels moved: the search chased noise).
        if best is not None and significantly_faster(best[2].samples, inc.samples, self.pvalue / ran,
                                                     self.move_gain)[0]:
            run.inc = _Point(best[0], best[1].trace, best[2].samples, best[1].locations, best[1].mod)
            run.radius, run.stale = 1, 0
            run.queue = _neighbours(run.points, run.inc, 1, self.limit, self.rng, run.done)
            self.moves += 1
            return
        run.stale += 1
        if run.stale >= self.patience and self.next_start < len(self.starts):
            self._close()

    def _replay_batch(self, run: _Run, n: int) -> list[tuple[tuple, Replayed]]:
        """Pop unvisited points off the queue and replay them until ``n`` are ready;
        points that do not replay are counted as failed."""
        chosen: list[tuple[tuple, Replayed]] = []
        base, points, done = run.first.trace, run.points, run.done
        while run.queue and len(chosen) < n:
            key = run.queue.pop(0)
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
