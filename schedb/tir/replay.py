"""Replay: apply a MetaSchedule trace to a workload, adapting decisions that do not fit.

A trace is TVM's :class:`~tvm.s_tir.schedule.Trace` or its JSON form as MetaSchedule
stores it, ``[[instructions], [[inst_index, decision], ...]]``. Its sampling decisions
are what schedules of one structure differ by: tile factors (``SamplePerfectTile``),
a candidate index (``SampleCategorical``) and a compute-at location
(``SampleComputeLocation``). Replaying on a workload of another shape keeps the
instructions and moves each decision to the nearest one that is valid there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator, NamedTuple

TILE, CATEGORICAL, LOCATION = "SamplePerfectTile", "SampleCategorical", "SampleComputeLocation"
SAMPLING = (TILE, CATEGORICAL, LOCATION)
_SEED = 1  # only decisions that a trace lacks are sampled; a fixed seed keeps that repeatable


class DecisionPoint(NamedTuple):
    index: int  # of the instruction in the trace
    kind: str  # one of SAMPLING
    decision: Any  # list[int] (tile), int (categorical index, compute location)
    attrs: list  # tile: [n, max_innermost_factor]; categorical: [candidates, probs]


@dataclass
class Replayed:
    schedule: Any | None  # tvm.s_tir.Schedule, postprocessed; None on error
    trace: Any | None  # the new Trace, holding the decisions as actually used
    adapted: int = 0  # decisions that had to change to fit the workload
    error: str | None = None
    locations: dict[int, list[int]] = field(default_factory=dict)  # valid compute-at choices

    @property
    def mod(self):
        return self.schedule.mod if self.schedule is not None else None

    @property
    def ok(self) -> bool:
        return self.error is None


# --------------------------------------------------------------------------- traces as JSON
@lru_cache(maxsize=1024)  # bounded: hostile logs can name any number of kinds
def registered_kind(name: str) -> bool:
    """Whether this TVM knows the instruction kind ``name`` (a trace using another cannot replay)."""
    from tvm.s_tir.schedule import InstructionKind

    try:
        InstructionKind.get(name)
    except Exception:  # TVM raises its own error types for an unknown kind
        return False
    return True



def as_json(trace) -> list:
    """Plain-Python JSON of a trace (``Trace.as_json`` leaves IntImm / FloatImm in it)."""
    return _plain(trace.as_json() if hasattr(trace, "as_json") else trace)


def _plain(obj):
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if hasattr(obj, "items"):  # dict, tvm Map
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if hasattr(obj, "value"):  # IntImm, FloatImm (their dtype is ``.ty`` in 0.27)
        return bool(obj.value) if str(obj.ty) == "bool" else obj.value
    if hasattr(obj, "__iter__"):  # list, tuple, tvm Array
        return [_plain(v) for v in obj]
    return str(obj)


def schedule_part(trace) -> list:
    """The JSON instructions before ``EnterPostproc``: what a replay applies (the
    postprocessors are run again), and the structure that two traces share or not."""
    insts = as_json(trace)[0]
    return insts[:next((k for k, inst in enumerate(insts) if inst[0] == "EnterPostproc"), len(insts))]


def decision_points(trace) -> list[DecisionPoint]:
    """The sampling decisions of a trace (object or JSON), in instruction order."""
    insts, decisions = as_json(trace)
    out = []
    for index, decision in sorted(decisions, key=lambda d: d[0]):
        kind = insts[index][0]
        if kind in SAMPLING:
            out.append(DecisionPoint(index, kind, decision, insts[index][2]))
    return out


# --------------------------------------------------------------------------- tile factors
@lru_cache(maxsize=4096)
def _factorizations(extent: int, n: int, max_innermost: int) -> tuple[tuple[int, ...], ...]:
    if n == 1:
        return ((extent,),) if max_innermost <= 0 or extent <= max_innermost else ()
    return tuple(
        (d, *rest)
        for d in range(1, extent + 1) if extent % d == 0
        for rest in _factorizations(extent // d, n - 1, max_innermost)
    )


def factorizations(extent: int, n: int, max_innermost: int | None = None) -> list[tuple[int, ...]]:
    """Every ``n``-tuple of positive factors whose product is ``extent`` and whose last
    (innermost) factor is at most ``max_innermost`` (None or <= 0: no limit)."""
    return list(_factorizations(int(extent), int(n), int(max_innermost or 0)))


def _primes(x: int) -> list[int]:
    out, p = [], 2
    while p * p <= x:
        if x % p == 0:
            out.append(p)
            while x % p == 0:
                x //= p
        p += 1
    return out + ([x] if x > 1 else [])


def tile_moves(factors, max_innermost: int | None = None) -> Iterator[tuple[int, ...]]:
    """Neighbours of a tiling: one prime factor moved between two adjacent levels,
    either way. The product stays the same, so every neighbour is a valid split."""
    f = [int(x) for x in factors]
    for i in range(len(f) - 1):
        for src, dst in ((i, i + 1), (i + 1, i)):
            for p in _primes(f[src]):
                g = list(f)
                g[src] //= p
                g[dst] *= p
                if not max_innermost or max_innermost <= 0 or g[-1] <= max_innermost:
                    yield tuple(g)


def nearest_factorization(factors, extent: int, max_innermost: int | None = None) -> tuple[int, ...] | None:
    """The valid factorization of ``extent`` closest to ``factors`` in summed
    log-distance per level (tile sizes matter by ratio, not difference)."""
    options = factorizations(extent, len(factors), max_innermost)
    if not options:
        return None
    logs = [math.log(max(int(x), 1)) for x in factors]
    return min(options, key=lambda o: sum(abs(math.log(x) - w) for x, w in zip(o, logs)))


# --------------------------------------------------------------------------- replay
_POSTPROCS: dict[str, list] = {}


def postprocs(target, mod) -> list:
    """The postprocessors MetaSchedule's default space generator uses for ``target``.

    ``TuneContext.__init__`` initializes them; it needs a module (without one it fails
    with "Back optional access"), but what they do depends on the target only."""
    key = str(target)
    if key not in _POSTPROCS:
        from tvm.s_tir import meta_schedule as ms

        ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply",
                             task_name="replay")
        _POSTPROCS[key] = list(ctx.space_generator.postprocs)
    return _POSTPROCS[key]


def apply_trace(trace, mod, target, decisions: dict[int, Any] | None = None) -> Replayed:
    """Apply ``trace`` (Trace or its JSON) to ``mod``, then the target's postprocessors.

    ``decisions`` overrides decisions by instruction index (before adaptation). Decisions
    that do not fit ``mod`` are adapted (see module doc); a trace whose instructions do
    not apply at all comes back with ``error`` set, never as an exception."""
    from tvm import s_tir

    try:
        bound, given = _bind(trace, mod)
        sch = s_tir.Schedule(mod, seed=_SEED, error_render_level="fast")
    except Exception as e:  # TVM raises its own error types; any means "does not apply"
        return Replayed(None, None, error=f"trace does not apply: {_short(e)}")
    given.update(decisions or {})
    index = {inst.__chandle__(): i for i, inst in enumerate(bound.insts)}
    state = {"adapted": 0, "locations": {}}

    def provide(inst, inputs, attrs, decision):
        kind = inst.kind.name
        if kind not in SAMPLING:
            return decision
        i = index[inst.__chandle__()]
        want = _plain(given.get(i, decision))
        if want is None:
            return None
        attrs = _plain(attrs)
        if kind == TILE:
            extent = int(sch.get(inputs[0]).extent)
            got = list(want)
            if len(got) != attrs[0]:
                raise ValueError(f"tile decision {got} for a {attrs[0]}-way split")
            if math.prod(got) != extent or (attrs[1] > 0 and got[-1] > attrs[1]):
                near = nearest_factorization(got, extent, attrs[1])
                if near is None:
                    raise ValueError(f"no {attrs[0]}-way tiling of {extent}")
                got = list(near)
        elif kind == CATEGORICAL:
            got = min(max(int(want), 0), len(attrs[0]) - 1)
        else:
            valid = _locations(sch, inputs[0])
            state["locations"][i] = valid
            lower = [v for v in valid if v <= int(want)]
            got = lower[-1] if lower else -1  # what TVM itself falls back to
        state["adapted"] += got != want
        return got

    try:
        bound.apply_to_schedule(sch, remove_postproc=True, decision_provider=provide)
        sch.enter_postproc()
        for p in postprocs(target, mod):
            if not p.apply(sch):
                return Replayed(None, None, state["adapted"], f"postproc {type(p).__name__} failed")
    except Exception as e:
        return Replayed(None, None, state["adapted"], f"replay failed: {_short(e)}")
    return Replayed(sch, sch.trace, state["adapted"], None, state["locations"])


def _bind(trace, mod):
    """(Trace object, {index: plain decision}).

    TVM 0.27 has no Trace-from-JSON: JSON is only applied to a schedule. It is applied
    here without its decisions (so nothing can mismatch) and without postprocessing;
    the schedule's recorded trace then has the same instructions at the same indices."""
    if hasattr(trace, "insts"):
        return trace, {i: d for i, d in as_json(trace)[1]}
    from tvm import s_tir

    insts, decisions = schedule_part(trace), _plain(trace)[1]
    sch = s_tir.Schedule(mod, seed=_SEED, error_render_level="fast")
    s_tir.schedule.Trace.apply_json_to_schedule([insts, []], sch)
    bound = sch.trace
    if [i.kind.name for i in bound.insts] != [inst[0] for inst in insts]:
        raise ValueError("recorded trace differs from the JSON instructions")
    return bound, {i: d for i, d in decisions if i < len(insts)}


def _locations(sch, block) -> list[int]:
    """Valid compute-at locations of ``block`` (-2 inline, -1 root, k: k-th loop).

    TVM does not expose this list; asking for location d returns d if valid, else the
    largest valid one below d (else -1), so walking down from the top enumerates it."""
    probe = sch.copy()  # sampling adds to the trace, not the IR: one copy serves every probe
    found: list[int] = []
    d = 1 << 30
    while d >= -2:
        probe.sample_compute_location(block, decision=d)
        got = int(probe.trace.get_decision(probe.trace.insts[-1]))
        if got in found:
            break
        found.append(got)
        d = got - 1
    return sorted(found)


def _short(e: Exception, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(e).__name__
    return msg if len(msg) <= limit else msg[:limit] + " ..."
