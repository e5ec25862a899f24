"""Droplet search: acceptance rule, determinism, budgets and failures with a fake engine
(synthetic samples; real replays), its false-acceptance rate and power under the
measurement noise recorded on each machine kind it has run on
(benchmarks/results/noise*.json), and one short real search on tiny_cnn's conv."""

from __future__ import annotations

import json
import math
import random

import pytest

from pathlib import Path

from schedb.errors import SchedbError
from schedb.search.droplet import (FINAL_ROUNDS, MOVE_ROUNDS, Droplet, DropletParams, droplet, refine_many,
                                   significantly_faster)
from schedb.search.measure import Measurement
from schedb.tir.replay import apply_trace, as_json

SPREAD = [1.0, 1.02, 0.98, 1.01, 0.99]  # +-2% noise, one sample a round
# One recording per machine kind (noise.json: Intel Xeon; noise_epyc.json: AMD EPYC): every
# rate is asserted on each, whatever CPU the suite runs on.
RECORDINGS = sorted((Path(__file__).parents[1] / "benchmarks" / "results").glob("noise*.json"))
# The largest per-round log-ratio sd a noise recording has measured (Intel, at 8160350): the
# searches are also run with each recording's noise widened to it.
NOISIEST_SD = 0.174


def _samples(level: float, shift: int = 0, rounds: int = 5) -> list[float]:
    return [level * SPREAD[(r + shift) % len(SPREAD)] for r in range(rounds)]


class FakeEngine:
    """``Engine.measure`` with synthetic samples: ``cost(structural hash) -> Measurement``
    (its samples repeated to ``rounds``, scaled to keep their mean), each kernel of a call
    with the noise pattern shifted by its place in the call, so paired rounds differ."""

    def __init__(self, cost):
        self.cost, self.count = cost, 0

    def measure(self, mods, rounds=None):
        import tvm_ffi

        self.count += len(mods)
        out = []
        for i, m in enumerate(mods):
            got = self.cost(int(tvm_ffi.structural_hash(m)))
            if not got.ok:
                out.append(got)
                continue
            n = rounds or len(got.samples)
            cycled = [got.samples[(r + i) % len(got.samples)] for r in range(n)]
            # any number of rounds keeps the kernel's mean (they may cover the pattern unevenly)
            out.append(Measurement([x * got.mean * n / sum(cycled) for x in cycled]))
        return out


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
def test_paired_test_rejects_noise_and_accepts_a_clear_gain():
    base = _samples(1.0)
    assert significantly_faster(_samples(0.999, 1), base, 0.05)[0] is False  # lower mean, within the noise
    ok, p = significantly_faster(_samples(0.5, 1), base, 0.05)
    assert ok and p < 1e-6
    assert significantly_faster(_samples(1.2, 1), base, 0.05) == (False, 1.0)  # slower: no test
    assert significantly_faster([0.9], [1.0], 0.05)[0] is False  # one round: no test, never accepted
    # Paired by round: a drift that slows both alike is no difference, and a gain under it is one.
    drift = [1.0, 1.5, 2.0, 2.5, 3.0]
    assert significantly_faster([d * 1.001 for d in drift], drift, 0.05)[0] is False
    assert significantly_faster([d * x * 0.9 for d, x in zip(drift, SPREAD)], drift, 0.05)[0] is True
    with pytest.raises(ValueError, match="unpaired"):
        significantly_faster([1.0, 1.0], [1.0, 1.0, 1.0], 0.05)


def _relative(start_hash, level):
    """The start at level 1, every other kernel at ``level``."""
    return lambda h: Measurement(_samples(1.0 if h == start_hash else level))


def test_noise_level_gain_is_not_a_move(setup):
    target, conv, traces, start_hash = setup
    res = droplet(conv, target, traces[0], FakeEngine(_relative(start_hash, 0.999)), trials=9,
                  params=DropletParams(batch=4))
    assert res.trials <= 9 and res.best_mean == res.start_mean and res.pvalue is None and not res.accepted
    assert as_json(res.best_trace) == as_json(apply_trace(traces[0], conv, target).trace)


def test_clear_gain_is_a_move(setup):
    target, conv, traces, start_hash = setup
    res = droplet(conv, target, traces[0], FakeEngine(_relative(start_hash, 0.5)), trials=9,
                  params=DropletParams(batch=4))
    assert res.best_mean == pytest.approx(0.5, rel=0.01) and res.start_mean == pytest.approx(1.0, rel=0.01)
    assert res.accepted and res.pvalue < 1e-6 and res.speedup == pytest.approx(2.0, rel=0.02)


def test_params_are_checked_on_construction():
    with pytest.raises(SchedbError, match="`pvalue` must lie between 0 and 1"):
        DropletParams(pvalue=1.5)
    with pytest.raises(SchedbError, match="`min_gain` must lie in"):
        DropletParams(min_gain=1.0)
    with pytest.raises(SchedbError, match="`move_gain` must lie in"):
        DropletParams(move_gain=-0.01)
    with pytest.raises(SchedbError, match="`batch` must be at least 1"):
        DropletParams(batch=0)


# --------------------------------------------------------------------------- search
def _path(res):
    return [(json.dumps(v.trace), v.mean) for v in res.visited]


def test_same_seed_same_path(setup):
    target, conv, traces, _ = setup
    runs = [droplet(conv, target, traces[0], FakeEngine(landscape), trials=14, params=DropletParams(batch=4, seed=s))
            for s in (0, 0, 1)]
    assert _path(runs[0]) == _path(runs[1])
    assert _path(runs[0]) != _path(runs[2])
    assert runs[0].best_mean == pytest.approx(min(v.mean for v in runs[0].visited))  # the landscape has no noise


def test_trial_and_time_budgets(setup):
    target, conv, traces, _ = setup
    engine = FakeEngine(landscape)
    res = droplet(conv, target, traces[0], engine, trials=10, params=DropletParams(batch=4))
    # Every measurement of the search counts: the start, the incumbent's re-measurement in
    # each batch and the final head-to-head of the end point with the start; the budget is
    # never exceeded. An accepted end point's gain is measured once more, outside the budget.
    assert res.trials <= 10 and engine.count == res.trials + 2 * res.accepted
    assert 2 <= len(res.visited) < res.trials
    given_engine = FakeEngine(landscape)
    given = droplet(conv, target, traces[0], given_engine, trials=6, params=DropletParams(batch=4),
                    start_samples=_samples(3.0))
    assert given.trials <= 6 and given_engine.count == given.trials + 2 * given.accepted
    assert len(given.visited) >= 2
    quick = droplet(conv, target, traces[0], FakeEngine(landscape), trials=100, time_budget=0.0)
    assert quick.trials == 1 and len(quick.visited) == 1


def test_failures_are_counted_and_skipped(setup):
    target, conv, traces, start_hash = setup

    def flaky(h):
        return Measurement(None, "boom") if h % 3 == 0 and h != start_hash else landscape(h)

    res = droplet(conv, target, traces[0], FakeEngine(flaky), trials=16, params=DropletParams(batch=4))
    errors = [v for v in res.visited if v.error is not None]
    assert res.failed == len(errors) > 0 and all(v.mean is None for v in errors)
    assert res.trials <= 16 and res.best_mean == pytest.approx(min(v.mean for v in res.visited if v.mean is not None))


def test_neighbourhood_exhaustion_and_radius_growth(setup):
    target, conv, traces, start_hash = setup
    flat = _relative(start_hash, 1.0)  # nothing is ever faster: the search only widens
    r1 = droplet(conv, target, traces[0], FakeEngine(flat), trials=1000, params=DropletParams(batch=4, max_radius=1))
    r2 = droplet(conv, target, traces[0], FakeEngine(flat), trials=1000, params=DropletParams(batch=4, max_radius=2))
    assert 16 < r1.trials < 1000  # all single-axis moves, beyond max_neighbours = 16
    assert len(r2.visited) == len(r1.visited) + 16  # radius 2 adds max_neighbours more points
    assert len({json.dumps(v.trace) for v in r2.visited}) == len(r2.visited)  # nothing twice


def test_refine_many_moves_on_to_the_next_start(setup):
    target, conv, traces, start_hash = setup
    broken = json.loads(json.dumps(as_json(traces[0])).replace('"conv2d_nchw"', '"no_such_block"'))
    engine = FakeEngine(_relative(start_hash, 1.0))  # nothing is faster: each start gives up after a batch
    res = refine_many([broken, traces[0], traces[1]], conv, target, engine, trials=12,
                      params=DropletParams(batch=4, patience=1))
    assert res.trials == engine.count <= 12 and res.failed == 1  # the broken start
    starts = [as_json(apply_trace(t, conv, target).trace) for t in traces[:2]]
    assert all(any(v.trace == s for v in res.visited) for s in starts)  # both starts measured
    assert res.start == 1 and not res.accepted  # judged against the first start that ran
    assert as_json(res.best_trace) == starts[0]


# --------------------------------------------------------------------------- false acceptance
class EmpiricalEngine:
    """``Engine.measure`` with a machine's recorded noise around a true time per kernel
    (``truth(structural hash)``): each call replays a call recorded by
    benchmarks/bench_noise.py on copies of one real kernel (the same number of rounds,
    kernels assigned to its copies at random), its samples divided by that call's
    geometric mean. So the drift within a call, each copy's offset and the per-sample
    spread are the measured ones; the recorded calls are drawn with replacement.
    ``widen`` scales every sample's log deviation from that mean (1: as recorded)."""

    def __init__(self, truth, seed: int, noise: dict, widen: float = 1.0):
        self.truth, self.rng, self.count, self.widen = truth, random.Random(seed), 0, widen
        self.calls = {noise["final_rounds"]: [c["samples"] for c in noise["final"]],
                      noise["move_rounds"]: [c["samples"] for c in noise["batch"]]}

    def measure(self, mods, rounds=None):
        import tvm_ffi

        self.count += len(mods)
        pool = [c for c in self.calls[rounds or MOVE_ROUNDS] if len(c) >= len(mods)]
        call = self.rng.choice(pool)
        scale = math.exp(sum(math.log(x) for col in call for x in col) / sum(len(col) for col in call))
        cols = self.rng.sample(call, len(mods))
        return [Measurement([self.truth(int(tvm_ffi.structural_hash(m))) * (x / scale) ** self.widen for x in col])
                for m, col in zip(mods, cols)]


@pytest.fixture(scope="module", params=RECORDINGS, ids=lambda p: p.stem)
def noise(request) -> dict:
    return json.loads(request.param.read_text())


@pytest.fixture(scope="module", params=["recorded", "noisiest"])
def widen(request, noise) -> float:
    """1, then the factor that widens the recording's per-round log-ratio sd to the
    noisiest recorded (the rounds are sized for it)."""
    if request.param == "recorded":
        return 1.0
    return max(1.0, NOISIEST_SD / noise["summary"]["log_ratio_sd_per_round"])  # bench_noise's, from these samples


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


def test_the_final_test_holds_its_rate_on_the_recorded_calls(noise):
    """Droplet's final test with its default minimum gain, on every call that
    benchmarks/bench_noise.py recorded of two copies of one real kernel: each acceptance is
    a false one, at most 5% (the bare t-test, no minimum gain, accepted 7.4% of such calls:
    the copies' offset within a call is not averaged away by the rounds). The same calls
    with the candidate's samples made 10% faster are accepted in at least 80%."""
    params, calls = DropletParams(), [c["samples"] for c in noise["final"]]
    assert len(calls) >= 200 and all(len(a) == FINAL_ROUNDS for a, _ in calls)
    false = sum(significantly_faster(b, a, params.pvalue, params.min_gain)[0] for a, b in calls)
    true = sum(significantly_faster([0.9 * x for x in b], a, params.pvalue, params.min_gain)[0] for a, b in calls)
    print(f"{false} of {len(calls)} equal pairs and {true} with a 10% gain accepted")
    assert false <= 0.05 * len(calls)
    assert true >= 0.8 * len(calls)


def test_equal_kernels_are_almost_never_accepted(small, noise, widen):
    """The null: every candidate as fast as the start in truth. Multi-start searches (the
    transfer and ``schedb droplet`` path) accept something in at most 5% of 100 seeds, at the
    recorded noise and at the noisiest recorded."""
    target, func, traces = small
    accepted = 0
    for seed in range(100):
        engine = EmpiricalEngine(lambda h: 1e-4, seed, noise, widen)
        res = refine_many(traces, func, target, engine, trials=16, params=DropletParams(batch=4, seed=seed))
        assert res.accepted == (res.pvalue is not None and res.pvalue <= 0.05)
        accepted += res.accepted
    print(f"{accepted} of 100 null searches accepted")
    assert accepted <= 5, f"{accepted} of 100 null searches accepted"


def test_noise_rarely_moves_the_search(small, noise):
    """The null again, batch by batch: the fastest of a batch of equal kernels is tested
    at pvalue over the batch size against ``move_gain``, so at most ~5% of batches move
    (untested for the selection, 115 of these 800 batches moved, 14%, and the search
    wandered after the noise; tested against no gain, 42 on the AMD recording)."""
    target, func, traces = small
    batches = moves = 0
    for seed in range(100):
        search = Droplet(traces, func, target, EmpiricalEngine(lambda h: 1e-4, seed, noise),
                         params=DropletParams(batch=4, seed=seed))
        search.begin()
        while search.trials < 40 and search.step(5):
            batches += 1
        moves += search.moves
    print(f"{moves} moves in {batches} null batches")
    assert batches > 500
    assert moves <= 0.05 * batches, f"{moves} moves in {batches} null batches"


def test_a_truly_faster_neighbour_is_accepted(small, noise, widen):
    """The positive control: a quarter of the kernels truly 10% faster than the start;
    the same searches accept one in at least 80% of the seeds, and only truly faster ones, at
    the recorded noise and at the noisiest recorded."""
    import tvm_ffi

    target, func, traces = small
    start = int(tvm_ffi.structural_hash(apply_trace(traces[0], func, target).mod))

    def truth(h):
        return 1e-4 if h == start or h % 4 else 0.9e-4

    runs = [refine_many(traces, func, target, EmpiricalEngine(truth, seed, noise, widen), trials=16,
                        params=DropletParams(batch=4, seed=seed))
            for seed in range(50)]
    print(f"{sum(r.accepted for r in runs)} of {len(runs)} searches accepted a truly faster neighbour")
    assert sum(r.accepted for r in runs) >= 40
    for r in runs:
        if r.accepted:
            kernel = int(tvm_ffi.structural_hash(apply_trace(as_json(r.best_trace), func, target).mod))
            assert truth(kernel) < 1e-4 and r.pvalue <= 0.05


# --------------------------------------------------------------------------- real
def test_real_search_on_tiny_conv(setup):
    from schedb.search.measure import Engine

    target, conv, traces, _ = setup
    res = droplet(conv, target, traces[0], Engine(target), trials=16, params=DropletParams(batch=8))
    print(f"droplet on {conv['main'].params[0].shape}: start {res.start_mean * 1e6:.1f} us, "
          f"best {res.best_mean * 1e6:.1f} us, x{res.speedup:.2f}, p={res.pvalue}, "
          f"{res.trials} trials, {res.failed} failed, {res.elapsed:.1f} s")
    # Trials count the incumbent's re-measurement in each batch; visited points do not.
    assert res.trials <= 16 and 2 <= len(res.visited) < res.trials and res.failed == 0
    assert len(res.best_samples) in (MOVE_ROUNDS, FINAL_ROUNDS)
    stored = json.loads(json.dumps(as_json(res.best_trace)))  # what a database keeps
    again = apply_trace(stored, conv, target)
    assert again.ok and again.adapted == 0
