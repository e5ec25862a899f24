"""Records of another vector ISA in a transfer: their adapted twins, what a task's measured
batch says about them, and the report's summary.

A record tuned for another vector unit (schedb.tir.target.vector_unit: lanes, registers) is
replayed as tuned and adapted to this one (schedb.tir.isa); both are candidates measured in
the same batch, so what adapting gained is read off that batch, and what the native search
(schedb.pipeline.native) gained off its side-by-side choice.
"""

from __future__ import annotations

from schedb.tir.isa import adapt
from schedb.tir.replay import apply_trace, as_json
from schedb.tir.target import VectorUnit, vector_unit


def other_isa(record_target: str, unit: VectorUnit | None) -> str | None:
    """The vector ISA of a record's target when its unit is not ``unit`` (None: the same
    lanes and registers, or either unknown)."""
    theirs = vector_unit(record_target)
    return theirs.isa if theirs and unit and theirs[1:] != unit[1:] else None


def adapted_twin(replayed, record_target: str, unit: VectorUnit, func, target):
    """(JSON trace, Replayed) of a record of another ISA, as ``replayed`` fitted it to ``func``,
    adapted to ``unit`` and replayed again; None when nothing in it encodes the vector unit.
    The Replayed may have failed (``ok`` False)."""
    a = adapt(as_json(replayed.trace), vector_unit(record_target), unit)
    if not a.changed:
        return None
    return a.trace, apply_trace(a.trace, func, target)


def task_fields(res, ranked: list, untuned, unit: VectorUnit | None):
    """Set the ISA fields of a TaskResult from its batch ``ranked`` ((measurement, candidate,
    replayed), fastest first; a candidate has ``row`` and ``adapted``): the winner's ISA, and
    the fastest record of another ISA as tuned and adapted. -> (measurement, replayed) of the
    fastest candidate as tuned when an adapted one won and it beats the untuned kernel
    (what the model runs without adapting), else None."""
    _, cand, _ = ranked[0]
    res.source_isa = other_isa(cand.row["target"], unit)
    foreign = [(m, c) for m, c, _ in ranked if other_isa(c.row["target"], unit)]
    if not any(c.adapted for _, c in foreign):
        return None
    res.isa_adapted = cand.adapted
    res.adapted_us = next(m.mean * 1e6 for m, c in foreign if c.adapted)
    res.unadapted_us = next((m.mean * 1e6 for m, c in foreign if not c.adapted), None)
    if not cand.adapted:
        return None
    plain = next(((m, r) for m, c, r in ranked if not c.adapted), None)
    return plain if plain and (not untuned.ok or plain[0].mean < untuned.mean) else None


def summary(results: list, unit: VectorUnit | None, native) -> dict:
    """How many tasks ran on records of another ISA and what adapting and the native search
    (its NativeOutcome, or None) gained, in estimated model latency (weight x kernel time, the
    kernels compared measured side by side): {} when no record of another ISA won."""
    other = [r for r in results if r.source_isa]
    if not other:
        return {}
    both = [r for r in other if r.unadapted_us and r.adapted_us]
    out = {"host": unit.isa if unit else None, "sources": sorted({r.source_isa for r in other}),
           "tasks": len(other), "adapted_tried": sum(r.isa_adapted is not None for r in results),
           "adapted_won": sum(bool(r.isa_adapted) for r in results),
           "adapting_gain": gain([(r.weight, r.unadapted_us, min(r.unadapted_us, r.adapted_us)) for r in both])}
    if native is not None:
        searched = [r for r in results if r.native_us and r.native_from_us]
        out["native"] = {**native.as_dict(), "gain": gain([(r.weight, r.native_from_us, r.native_us) for r in searched])}
    return out


def gain(rows: list[tuple]) -> float | None:
    """sum(weight x before) / sum(weight x after) over (weight, before_us, after_us) rows."""
    after = sum(w * a for w, _, a in rows)
    return round(sum(w * b for w, b, _ in rows) / after, 3) if after else None
