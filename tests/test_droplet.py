"""Droplet search: acceptance rule, determinism, budgets and failures with a fake engine
(synthetic repeat samples; real replays), its false-acceptance rate under noise and drift,
and one short real search on tiny_cnn's conv."""

from __future__ import annotations

import json
import math
import random

import pytest

from schedb.search.droplet import Droplet, droplet, refine_many, significantly_faster
from schedb.search.measure import Measurement
from schedb.tir.replay import apply_trace, as_json

SPREAD = [1.0, 1.02, 0.98, 1.01, 0.99]  # 5 repeats, +-2% noise


def _samples(level: float) -> list[float]:
    return [level * s for s in SPREAD]


class FakeEngine:
    """``Engine.measure`` with synthetic samples: ``cost(structural hash) -> Measurement``."""

    def __init__(self, cost):
        self.cost, self.count = cost, 0

    def measure(self, mods):
        import tvm_ffi

        self.count += len(mods)
        return [self.cost(int(tvm_ffi.structural_hash(m))) for m in mods]


def landscape(h: int) -> Measurement:
    """A fixed random level in [1, 2) per kernel: far apart compared with the noise."""
    return Measurement(_samples(1 + random.Random(h).random()))


@pytest.fixture(scope="module")
def setup():
    """(target, conv task, design-space traces of the conv, hash of trace 0 replayed on it)."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from schedb.models import load_model
    from schedb.tir.target import load_intrinsics, parse_target
    from schedb.tir.tasks import extract_tasks, lower

    target = parse_target(None)
    load_intrinsics(target)
    tasks = extract_tasks(lower(load_model("tiny_cnn"), target), target)
    conv = next(t.func for t in tasks if "conv2d" in t.name)
    ctx = ms.TuneContext(mod=conv, target=target, space_generator="post-order-apply", task_name="c",
                         rand_state=0)
    traces = [s.trace for s in ctx.generate_design_space()]
    start_hash = int(tvm_ffi.structural_hash(apply_trace(traces[0], conv, target).mod))
    return target, conv, traces, start_hash


# --------------------------------------------------------------------------- acceptance
def test_t_test_rejects_noise_and_accepts_a_clear_gain():
    base = _samples(1.0)
    assert significantly_faster(_samples(0.999), base, 0.05)[0] is False  # lower mean, p ~ 0.47
    ok, p = significantly_faster(_samples(0.5), base, 0.05)
    assert ok and p < 1e-6
    assert significantly_faster(_samples(1.2), base, 0.05) == (False, 1.0)  # slower: no test
    assert significantly_faster([0.9], base, 0.05)[0] is False  # one sample: no test, never accepted


def _relative(start_hash, level):
    """The start at level 1, every other kernel at ``level``."""
    return lambda h: Measurement(_samples(1.0 if h == start_hash else level))


def test_noise_level_gain_is_not_a_move(setup):
    target, conv, traces, start_hash = setup
    res = droplet(conv, target, traces[0], FakeEngine(_relative(start_hash, 0.999)), trials=9, batch=4)
    assert res.trials <= 9 and res.best_mean == res.start_mean and res.pvalue is None and not res.accepted
    assert as_json(res.best_trace) == as_json(apply_trace(traces[0], conv, target).trace)


def test_clear_gain_is_a_move(setup):
    target, conv, traces, start_hash = setup
    res = droplet(conv, target, traces[0], FakeEngine(_relative(start_hash, 0.5)), trials=9, batch=4)
    assert res.best_mean == pytest.approx(0.5) and res.start_mean == pytest.approx(1.0)
    assert res.accepted and res.pvalue < 1e-6 and res.speedup == pytest.approx(2.0)


# --------------------------------------------------------------------------- search
def _path(res):
    return [(json.dumps(v.trace), v.mean) for v in res.visited]


def test_same_seed_same_path(setup):
    target, conv, traces, _ = setup
    runs = [droplet(conv, target, traces[0], FakeEngine(landscape), trials=14, batch=4, seed=s)
            for s in (0, 0, 1)]
    assert _path(runs[0]) == _path(runs[1])
    assert _path(runs[0]) != _path(runs[2])
    assert runs[0].best_mean == min(v.mean for v in runs[0].visited)  # the landscape has no noise


def test_trial_and_time_budgets(setup):
    target, conv, traces, _ = setup
    engine = FakeEngine(landscape)
    res = droplet(conv, target, traces[0], engine, trials=10, batch=4)
    # Every measurement counts: the start, the incumbent's re-measurement in each batch and
    # the final head-to-head of the end point with the start; the budget is never exceeded.
    assert res.trials == engine.count <= 10
    assert 2 <= len(res.visited) < res.trials
    given_engine = FakeEngine(landscape)
    given = droplet(conv, target, traces[0], given_engine, trials=6, batch=4, start_samples=_samples(3.0))
    assert given.trials == given_engine.count <= 6 and len(given.visited) >= 2
    quick = droplet(conv, target, traces[0], FakeEngine(landscape), trials=100, time_budget=0.0)
    assert quick.trials == 1 and len(quick.visited) == 1


def test_failures_are_counted_and_skipped(setup):
    target, conv, traces, start_hash = setup

    def flaky(h):
        return Measurement(None, "boom") if h % 3 == 0 and h != start_hash else landscape(h)

    res = droplet(conv, target, traces[0], FakeEngine(flaky), trials=16, batch=4)
    errors = [v for v in res.visited if v.error is not None]
    assert res.failed == len(errors) > 0 and all(v.mean is None for v in errors)
    assert res.trials <= 16 and res.best_mean == min(v.mean for v in res.visited if v.mean is not None)


def test_neighbourhood_exhaustion_and_radius_growth(setup):
    target, conv, traces, start_hash = setup
    flat = _relative(start_hash, 1.0)  # nothing is ever faster: the search only widens
    r1 = droplet(conv, target, traces[0], FakeEngine(flat), trials=1000, batch=4, max_radius=1)
    r2 = droplet(conv, target, traces[0], FakeEngine(flat), trials=1000, batch=4, max_radius=2)
    assert 16 < r1.trials < 1000  # all single-axis moves, beyond max_neighbours = 16
    assert len(r2.visited) == len(r1.visited) + 16  # radius 2 adds max_neighbours more points
    assert len({json.dumps(v.trace) for v in r2.visited}) == len(r2.visited)  # nothing twice


def test_refine_many_moves_on_to_the_next_start(setup):
    target, conv, traces, start_hash = setup
    broken = json.loads(json.dumps(as_json(traces[0])).replace('"conv2d_nchw"', '"no_such_block"'))
    engine = FakeEngine(_relative(start_hash, 1.0))  # nothing is faster: each start gives up after a batch
    res = refine_many([broken, traces[0], traces[1]], conv, target, engine, trials=12, batch=4, patience=1)
    assert res.trials == engine.count <= 12 and res.failed == 1  # the broken start
    starts = [as_json(apply_trace(t, conv, target).trace) for t in traces[:2]]
    assert all(any(v.trace == s for v in res.visited) for s in starts)  # both starts measured
    assert res.start == 1 and not res.accepted  # judged against the first start that ran
    assert as_json(res.best_trace) == starts[0]


# --------------------------------------------------------------------------- false acceptance
class NoisyEngine:
    """``Engine.measure`` as this shared 2-core machine behaves, around a true time per
    kernel (``truth(structural hash)``): every repeat sample with lognormal noise (CV
    ``cv``), every call (a batch) under a slowly wandering load factor (a multiplicative
    random walk, ``drift`` per call), and each kernel in a batch under its own small load
    offset (``jitter``), the case the final head-to-head has to survive."""

    def __init__(self, truth, seed: int, cv: float = 0.04, drift: float = 0.03, jitter: float = 0.005, repeat=5):
        self.truth, self.rng, self.count = truth, random.Random(seed), 0
        self.cv, self.drift, self.jitter, self.repeat, self.load = cv, drift, jitter, repeat, 1.0

    def measure(self, mods):
        import tvm_ffi

        self.count += len(mods)
        self.load *= math.exp(self.rng.gauss(0, self.drift))
        out = []
        for m in mods:
            level = self.truth(int(tvm_ffi.structural_hash(m))) * self.load * math.exp(self.rng.gauss(0, self.jitter))
            out.append(Measurement([level * math.exp(self.rng.gauss(0, self.cv)) for _ in range(self.repeat)]))
        return out


@pytest.fixture(scope="module")
def small():
    """(target, tiny_mlp's matmul + bias + ReLU, its design-space traces): replays in ~3 ms,
    so hundreds of searches fit in a test."""
    from tvm.s_tir import meta_schedule as ms

    from schedb.models import load_model
    from schedb.tir.target import load_intrinsics, parse_target
    from schedb.tir.tasks import extract_tasks, lower

    target = parse_target(None)
    load_intrinsics(target)
    tasks = extract_tasks(lower(load_model("tiny_mlp"), target), target)
    func = next(t.func for t in tasks if t.name == "fused_matmul_add_relu")
    ctx = ms.TuneContext(mod=func, target=target, space_generator="post-order-apply", task_name="m", rand_state=0)
    return target, func, [s.trace for s in ctx.generate_design_space()]


def test_equal_kernels_are_almost_never_accepted(small):
    """The null: every candidate as fast as the start in truth. Multi-start searches (the
    transfer and ``schedb droplet`` path) accept something in at most 5% of 200 seeds."""
    target, func, traces = small
    accepted = 0
    for seed in range(200):
        res = refine_many(traces, func, target, NoisyEngine(lambda h: 1e-4, seed), trials=16, batch=4, seed=seed)
        assert res.accepted == (res.pvalue is not None and res.pvalue <= 0.05)
        accepted += res.accepted
    assert accepted <= 10, f"{accepted} of 200 null searches accepted"


def test_noise_rarely_moves_the_search(small):
    """The null again, batch by batch: the fastest of a batch of equal kernels is tested
    at pvalue over the batch size, so at most ~5% of batches move (untested for the
    selection, 115 of these 800 batches moved, 14%, and the search wandered after the noise)."""
    target, func, traces = small
    batches = moves = 0
    for seed in range(100):
        search = Droplet(traces, func, target, NoisyEngine(lambda h: 1e-4, seed), batch=4, seed=seed)
        search.begin()
        while search.trials < 40 and search.step(5):
            batches += 1
        moves += search.moves
    assert batches > 500
    assert moves <= 0.05 * batches, f"{moves} moves in {batches} null batches"


def test_a_truly_faster_neighbour_is_accepted(small):
    """The positive control: a quarter of the kernels truly 20% faster than the start;
    the same searches accept one in most seeds, and only truly faster ones."""
    import tvm_ffi

    target, func, traces = small
    start = int(tvm_ffi.structural_hash(apply_trace(traces[0], func, target).mod))

    def truth(h):
        return 1e-4 if h == start or h % 4 else 0.8e-4

    runs = [refine_many(traces, func, target, NoisyEngine(truth, seed), trials=16, batch=4, seed=seed)
            for seed in range(30)]
    assert sum(r.accepted for r in runs) >= 24
    for r in runs:
        if r.accepted:
            kernel = int(tvm_ffi.structural_hash(apply_trace(as_json(r.best_trace), func, target).mod))
            assert truth(kernel) < 1e-4 and r.pvalue <= 0.05


# --------------------------------------------------------------------------- real
def test_real_search_on_tiny_conv(setup):
    from schedb.search.measure import Engine

    target, conv, traces, _ = setup
    res = droplet(conv, target, traces[0], Engine(target), trials=16, batch=8)
    print(f"droplet on {conv['main'].params[0].shape}: start {res.start_mean * 1e6:.1f} us, "
          f"best {res.best_mean * 1e6:.1f} us, x{res.speedup:.2f}, p={res.pvalue}, "
          f"{res.trials} trials, {res.failed} failed, {res.elapsed:.1f} s")
    # Trials count the incumbent's re-measurement in each batch; visited points do not.
    assert res.trials <= 16 and 2 <= len(res.visited) < res.trials and res.failed == 0
    assert len(res.best_samples) == 5
    stored = json.loads(json.dumps(as_json(res.best_trace)))  # what a database keeps
    again = apply_trace(stored, conv, target)
    assert again.ok and again.adapted == 0
