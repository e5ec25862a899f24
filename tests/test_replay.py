"""Replay: tile factorizations and moves, and real traces of tiny_cnn's two convolutions
moved between them: they apply, build, run, and compute what the unscheduled kernel does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from schedb.tir.replay import (
    CATEGORICAL, LOCATION, TILE, apply_trace, as_json, decision_points, factorizations,
    nearest_factorization, tile_moves,
)


# --------------------------------------------------------------------------- factors
def test_factorizations_are_all_ordered_splits():
    assert factorizations(12, 2) == [(1, 12), (2, 6), (3, 4), (4, 3), (6, 2), (12, 1)]
    assert factorizations(7, 3) == [(1, 1, 7), (1, 7, 1), (7, 1, 1)]
    assert factorizations(1, 4) == [(1, 1, 1, 1)]
    fs = factorizations(64, 4)
    assert len(fs) == len(set(fs)) == math.comb(6 + 3, 3)  # 2^6 over 4 levels
    assert all(math.prod(f) == 64 for f in fs)


def test_factorizations_respect_max_innermost():
    assert factorizations(12, 2, max_innermost=3) == [(4, 3), (6, 2), (12, 1)]
    assert factorizations(12, 2, max_innermost=-1) == factorizations(12, 2)  # MetaSchedule's "none"
    assert factorizations(7, 1, max_innermost=4) == []


def test_tile_moves_move_one_prime_between_adjacent_levels():
    start = (2, 12, 1, 5)
    moves = list(tile_moves(start))
    assert len(moves) == len(set(moves)) and start not in moves
    for m in moves:
        assert math.prod(m) == math.prod(start)
        changed = [i for i in range(4) if m[i] != start[i]]
        assert len(changed) == 2 and changed[1] == changed[0] + 1
        ratio = max(m[changed[0]], start[changed[0]]) // min(m[changed[0]], start[changed[0]])
        assert ratio in (2, 3, 5)
    # both directions: 2 down (level 0 -> 1), 2 and 3 up (1 -> 0), 5 up (3 -> 2)
    assert {(1, 24, 1, 5), (4, 6, 1, 5), (6, 4, 1, 5), (2, 12, 5, 1), (2, 6, 2, 5)} <= set(moves)
    assert set(moves) == {
        (1, 24, 1, 5), (4, 6, 1, 5), (6, 4, 1, 5), (2, 6, 2, 5), (2, 4, 3, 5), (2, 12, 5, 1),
    }


def test_tile_moves_respect_max_innermost():
    assert set(tile_moves((1, 8, 4), max_innermost=4)) == {(2, 4, 4), (1, 16, 2)}
    assert (1, 4, 8) in set(tile_moves((1, 8, 4)))
    assert list(tile_moves((1, 1, 1))) == []


def test_nearest_factorization_in_log_space():
    assert nearest_factorization([4, 2], 3) == (3, 1)
    assert nearest_factorization([1, 1, 16, 1], 8) == (1, 1, 8, 1)
    assert nearest_factorization([1, 64], 128, max_innermost=16) == (8, 16)
    assert nearest_factorization([1, 1], 7, max_innermost=-1) in {(1, 7), (7, 1)}


# --------------------------------------------------------------------------- real traces
@pytest.fixture(scope="module")
def setup():
    """(target, conv task A, conv task B of another shape, matmul task, design-space traces of A)."""
    from tvm.s_tir import meta_schedule as ms

    from schedb.models import load_model
    from schedb.tir.target import load_intrinsics, parse_target
    from schedb.tir.tasks import extract_tasks, lower

    target = parse_target(None)
    load_intrinsics(target)
    tasks = extract_tasks(lower(load_model("tiny_cnn"), target), target)
    a, b = [t.func for t in tasks if "conv2d" in t.name]
    mm = next(t.func for t in tasks if "matmul" in t.name)
    ctx = ms.TuneContext(mod=a, target=target, space_generator="post-order-apply", task_name="a",
                         rand_state=0)
    return target, a, b, mm, [s.trace for s in ctx.generate_design_space()]


def _decisions(trace):
    return [p.decision for p in decision_points(trace)]


def test_decision_points(setup):
    _, _, _, _, traces = setup
    points = decision_points(traces[0])
    assert points == decision_points(as_json(traces[0]))
    assert {p.kind for p in points} == {TILE, CATEGORICAL, LOCATION}
    insts = as_json(traces[0])[0]
    for p in points:
        assert insts[p.index][0] == p.kind
        if p.kind == TILE:
            assert len(p.decision) == p.attrs[0]
        if p.kind == CATEGORICAL:
            assert 0 <= p.decision < len(p.attrs[0])


def test_same_workload_keeps_every_decision(setup):
    target, a, _, _, traces = setup
    for tr in traces:
        r = apply_trace(tr, a, target)
        assert r.ok and r.adapted == 0
        assert _decisions(r.trace) == _decisions(tr)
        assert any(i[0] == "EnterPostproc" for i in as_json(r.trace)[0])  # postprocessed


def test_json_and_object_forms_agree(setup):
    import tvm_ffi

    target, _, b, _, traces = setup
    text = json.loads(json.dumps(as_json(traces[0])))  # as MetaSchedule's JSON database stores it
    r1, r2 = apply_trace(traces[0], b, target), apply_trace(text, b, target)
    assert r1.ok and r2.ok and r1.adapted == r2.adapted
    assert _decisions(r1.trace) == _decisions(r2.trace)
    assert tvm_ffi.structural_equal(r1.mod, r2.mod)


def test_other_shape_adapts_and_the_result_replays_exactly(setup):
    target, _, b, _, traces = setup
    r = apply_trace(traces[0], b, target)
    assert r.ok and r.adapted > 0
    again = apply_trace(as_json(r.trace), b, target)  # full trace, postprocessing included
    assert again.ok and again.adapted == 0 and _decisions(again.trace) == _decisions(r.trace)


def test_overrides_are_clamped(setup):
    target, a, _, _, traces = setup
    points = {p.kind: p for p in decision_points(traces[0])}
    cat, loc = points[CATEGORICAL], points[LOCATION]
    valid = apply_trace(traces[0], a, target).locations[loc.index]
    gap = next(v for v in range(valid[0], valid[-1]) if v not in valid)  # e.g. 7 between 6 and 8
    r = apply_trace(traces[0], a, target, {cat.index: 99, loc.index: gap})
    got = {p.index: p.decision for p in decision_points(r.trace)}
    assert r.ok and r.adapted == 2
    assert got[cat.index] == len(cat.attrs[0]) - 1
    assert got[loc.index] == max(v for v in valid if v < gap)


def test_a_trace_that_does_not_fit_is_an_error_not_an_exception(setup):
    target, a, _, mm, traces = setup
    r = apply_trace(traces[0], mm, target)
    assert not r.ok and r.schedule is None and r.mod is None and "block" in r.error
    assert not apply_trace(as_json(traces[0]), mm, target).ok
    tile = next(p for p in decision_points(traces[0]) if p.kind == TILE)
    bad = apply_trace(traces[0], a, target, {tile.index: [1, 1]})
    assert not bad.ok and "4-way" in bad.error


def _run(mod, target, args):
    import tvm

    out = [tvm.runtime.tensor(x) for x in args]
    tvm.compile(mod, target=target)["main"](*out)
    return out[-1].numpy()


def test_replayed_kernels_build_run_and_match(setup):
    from schedb.search.measure import Engine
    from schedb.tir.signature import prim_func

    target, a, b, _, traces = setup
    rng = np.random.default_rng(0)
    mods = []
    for mod in (a, b):
        r = apply_trace(traces[0], mod, target)
        args = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype))
                for p in prim_func(mod).params]  # 0.27: params are buffers
        np.testing.assert_allclose(_run(r.mod, target, args), _run(mod, target, args), rtol=1e-5, atol=1e-5)
        mods.append(r.mod)
    measured = Engine(target, repeat=3).measure(mods)
    assert all(m.ok and len(m.samples) == 3 and 0 < m.mean < 1 for m in measured), measured
