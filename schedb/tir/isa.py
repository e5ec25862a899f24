"""Adapt a trace tuned for one vector unit to another (say, AVX-512 records serving AVX2).

A MetaSchedule trace replays on any CPU of its kind, but three of its decisions encode the
vector unit it was tuned on (schedb.tir.target.VectorUnit: lanes and register count):

- the **innermost tile of the vectorized loop** (multi-level tiling's last spatial level
  of the last spatial loop), a whole number of the tuned CPU's vectors;
- the **register tile**: the innermost spatial level of every spatial loop, the
  accumulators that live in registers across the inner reduction;
- the **explicit unroll** step (``meta_schedule.unroll_explicit``), whose code size grows
  with the register tile.

Replayed unchanged where vectors are half as wide and half as many, a 16-lane inner tile
is split in two by LLVM and the register tile needs four times the registers there are:
it spills. ``adapt`` rewrites those decisions for the other unit: the inner vector tile
becomes the same number of the new unit's vectors, the register tile is scaled to the
register file, and the unroll step by the ratio of the register counts; the factors taken out of (or put into) a
level go to the level just outside it, so every tile still multiplies to its loop's
extent and the cache-level tiling stays as tuned. Traces are the JSON form of
schedb.tir.replay; the result is replayed (and fitted to the task) by ``apply_trace``.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field

from schedb.tir.replay import CATEGORICAL, TILE, as_json, schedule_part
from schedb.tir.target import VectorUnit

UNROLL = ("meta_schedule.unroll_explicit", "meta_schedule.unroll_implicit")
STRUCTURE = "meta_schedule.tiling_structure"


@dataclass
class Tiling:
    """One multi-level-tiled block of a trace: instruction indices of its tile decisions."""

    spatial: list[int]  # SamplePerfectTile of the spatial loops, in loop order
    vector: int  # the one whose innermost level is the innermost loop (vectorized)


@dataclass
class Adapted:
    trace: list  # JSON trace with the adapted decisions
    changes: dict[int, tuple] = field(default_factory=dict)  # instruction index -> (old, new) decision

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def tilings(trace) -> tuple[list[Tiling], list[int]]:
    """The multi-level tilings of a trace and its unroll decisions (instruction indices).

    A tiling is read off the trace's dataflow: a ``Reorder`` of loops that ``Split``\\ s made
    from ``SamplePerfectTile`` decisions in a block annotated with a tiling structure. Its
    spatial tiles have as many levels as the structure has ``S`` (4 in CPU's ``SSRSRS``),
    and the tile of the last loop reordered is the vectorized one."""
    insts = schedule_part(trace)
    levels = _spatial_levels(insts)
    made_by, sampled_by, var_of = {}, {}, {}
    out, unroll = [], []
    for k, (kind, inputs, attrs, outputs) in enumerate(insts):
        if kind == TILE:
            for v in outputs:
                sampled_by[v] = k
        elif kind == "Split" and inputs and inputs[1] in sampled_by:
            for level, loop in enumerate(outputs):
                made_by[loop] = (sampled_by[inputs[1]], level)
        elif kind == CATEGORICAL and outputs:
            var_of[outputs[0]] = k
        elif kind == "Annotate" and attrs and attrs[0] in UNROLL and len(inputs) > 1 and inputs[1] in var_of:
            unroll.append(var_of[inputs[1]])
        elif kind == "Reorder" and levels and inputs and inputs[-1] in made_by:
            tiles = [made_by[x][0] for x in inputs if x in made_by]
            spatial = sorted({t for t in tiles if insts[t][2][0] == levels})
            vector = made_by[inputs[-1]][0]
            if vector in spatial:
                out.append(Tiling(spatial, vector))
    return out, unroll


def _spatial_levels(insts) -> int | None:
    """How many levels the spatial loops are tiled into (the structure's S count)."""
    for kind, inputs, attrs, _ in insts:
        if kind == "Annotate" and attrs == [STRUCTURE] and len(inputs) > 1:
            structure = json.loads(inputs[1]) if inputs[1].startswith('"') else inputs[1]
            if "S" in structure and "R" in structure:
                return structure.count("S")
    return None


def adapt(trace, src: VectorUnit, dst: VectorUnit) -> Adapted:
    """``trace`` (Trace or JSON) with its vector-width decisions moved from ``src`` to ``dst``;
    ``changes`` is empty when nothing encodes the unit (or the units are alike)."""
    plain = as_json(trace)
    decisions = {i: copy.deepcopy(d) for i, d in plain[1]}
    out = Adapted([plain[0], plain[1]])
    if (src.lanes, src.registers) == (dst.lanes, dst.registers):
        return out
    found, unroll = tilings(plain)
    for tiling in found:
        if all(i in decisions for i in tiling.spatial):
            _adapt_tiling(tiling, decisions, src, dst)
    scale = dst.registers / src.registers  # unrolled bodies spill beyond the register file
    for i in unroll:
        if i in decisions:
            decisions[i] = unroll_step(int(decisions[i]), plain[0][i][2][0], scale)
    old = dict((i, d) for i, d in plain[1])
    out.changes = {i: (old[i], d) for i, d in decisions.items() if d != old[i]}
    out.trace = [plain[0], [[i, decisions[i]] for i, _ in plain[1]]]
    return out


def _adapt_tiling(tiling: Tiling, decisions: dict, src: VectorUnit, dst: VectorUnit) -> None:
    """Rescale one tiling's inner vector tile to ``dst``'s lanes, then its register tile to
    ``dst``'s register file, in place."""
    vec = decisions[tiling.vector]
    before = _vectors(tiling, decisions, src.lanes)
    inner = vec[-1]
    if inner % src.lanes == 0:  # whole vectors of the tuned CPU: as many of this one's
        _move(vec, inner // src.lanes * dst.lanes)
    want = max(1, before * dst.registers // src.registers)  # vectors of accumulators
    others = [decisions[i] for i in tiling.spatial if i != tiling.vector]
    if _vectors(tiling, decisions, dst.lanes) > want:
        # Shrink the largest other inner tile first; the vector tile last (it is the SIMD width).
        for tile in sorted(others, key=lambda t: -t[-1]) + [vec]:
            while _vectors(tiling, decisions, dst.lanes) > want and tile[-1] > 1:
                if not _move(tile, tile[-1] // _smallest_prime(tile[-1]), floor=dst.lanes if tile is vec else 1):
                    break
    else:
        # Grow the largest other inner tile first (the axis the tuned tile favoured), from the
        # level just outside it: the inverse of the shrinking above.
        for tile in sorted(others, key=lambda t: -t[-1]):
            while tile[-2] > 1:
                p = _smallest_prime(tile[-2])
                if _vectors(tiling, decisions, dst.lanes) * p > want or not _move(tile, tile[-1] * p):
                    break


def _vectors(tiling: Tiling, decisions: dict, lanes: int) -> int:
    """Vector registers the register tile's accumulators take at ``lanes`` lanes."""
    others = math.prod(decisions[i][-1] for i in tiling.spatial if i != tiling.vector)
    return others * -(-decisions[tiling.vector][-1] // lanes)


def _move(tile: list[int], inner: int, floor: int = 1) -> bool:
    """Set the innermost factor of ``tile`` to ``inner`` by moving the difference to or from
    the level outside it (the product stays); False (unchanged) when it does not divide."""
    cur = tile[-1]
    if inner == cur or inner < floor and inner < cur:
        return False
    if inner < cur and cur % inner == 0:
        tile[-2] *= cur // inner
    elif inner > cur and inner % cur == 0 and tile[-2] % (inner // cur) == 0:
        tile[-2] //= inner // cur
    else:
        return False
    tile[-1] = inner
    return True


def _smallest_prime(x: int) -> int:
    return next((p for p in range(2, math.isqrt(x) + 1) if x % p == 0), x)


def unroll_step(index: int, candidates: list, scale: float) -> int:
    """The unroll candidate for a register file ``scale`` times as large: the largest step at
    most the scaled one when it shrinks, the smallest at least it when it grows; no unroll
    stays no unroll, and some unroll stays some."""
    steps = [int(c) for c in candidates]
    step = steps[index]
    if step <= 0 or scale == 1:
        return index
    goal = step * scale
    positive = [(s, i) for i, s in enumerate(steps) if s > 0]
    if scale < 1:
        fit = [x for x in positive if x[0] <= goal]
        return max(fit)[1] if fit else min(positive)[1]
    fit = [x for x in positive if x[0] >= goal]
    return min(fit)[1] if fit else max(positive)[1]
