"""The benchmarks' statistics and tables (benchmarks/report.py and the renderers): the
interval of the median against exact binomial order statistics computed here, its coverage
by simulation, and table cells that recompute from the result dict."""

from __future__ import annotations

import math
import random
import statistics

import pytest

import bench_inference
import bench_pairs
import report


def exact_ranks(n: int, confidence: float = 0.95) -> tuple[int, int, float]:
    """The narrowest symmetric pair of ranks (k, n + 1 - k) whose interval holds the median of
    a continuous distribution with probability >= confidence, and that probability. The count
    B of samples below the median is binomial(n, 1/2); the interval misses when B < k or, the
    same chance, B > n - k. No pair reaches it: (1, n), the widest, with its own coverage."""
    below = [0]  # below[k] = 2^n P(B < k): how many of the 2^n equally likely sides have B < k
    for i in range(n // 2 + 1):
        below.append(below[-1] + math.comb(n, i))

    def coverage(k):
        return 1 - 2 * below[k] / 2**n

    k = max((k for k in range(1, n // 2 + 1) if coverage(k) >= confidence), default=1)
    return k, n + 1 - k, coverage(k)


@pytest.mark.parametrize("n", [*range(1, 41), 57, 100, 101, 333, 1000])
def test_median_ci_is_the_exact_binomial_order_statistics(n):
    samples = random.Random(n).sample(range(1, 10 * n + 1), n)  # distinct: a value names its rank
    ranked = sorted(samples)
    lo, hi, cov = exact_ranks(n)
    c = report.median_ci(samples)
    assert (c["ci_low"], c["ci_high"]) == (ranked[lo - 1], ranked[hi - 1])
    assert c["coverage"] == pytest.approx(cov, abs=1e-12)
    assert c["n"] == n and c["median"] == statistics.median(samples)


def test_below_six_samples_no_interval_covers_95_percent_and_it_says_so():
    # n = 5: the widest interval, [min, max], misses the median only when all 5 samples fall on
    # one side of it: 2 / 32, so it covers 30 / 32 = 93.75%, and nothing narrower does better.
    c = report.median_ci([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (c["ci_low"], c["ci_high"], c["coverage"]) == (1.0, 5.0, 0.9375)
    assert report.fmt_ci(c) == "3 [1, 5] ms (93.75% interval)"
    # n = 6: [min, max] covers 62 / 64, above 95%: no note.
    c6 = report.median_ci([6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
    assert c6["coverage"] == 62 / 64 and report.fmt_ci(c6) == "3.5 [1, 6] ms"
    assert exact_ranks(5)[2] < 0.95 <= exact_ranks(6)[2]


@pytest.mark.parametrize("n", [5, 9, 15, 40])
def test_simulated_coverage_matches_the_stated_coverage(n):
    """2000 seeded samples of n draws from a skewed distribution (lognormal, median exactly 1):
    the share of intervals holding the true median is the stated coverage, within 4 standard
    errors of a binomial proportion (one rank off would move it by 3 to 10 points)."""
    import numpy as np

    rng = np.random.default_rng(18)
    draws = rng.lognormal(mean=0.0, sigma=1.0, size=(2000, n))
    cis = [report.median_ci(row) for row in draws]
    stated = {c["coverage"] for c in cis}
    assert len(stated) == 1
    stated = stated.pop()
    assert stated >= 0.95 or n < 6
    hit = np.mean([c["ci_low"] <= 1.0 <= c["ci_high"] for c in cis])
    assert abs(hit - stated) <= 4 * math.sqrt(stated * (1 - stated) / len(cis)), (hit, stated)


def test_fmt_ci_formats_and_marks_lower_coverage():
    c = {"median": 51.349, "ci_low": 50.5712, "ci_high": 55.2, "n": 15, "coverage": 0.9648}
    assert report.fmt_ci(c) == "51.35 [50.57, 55.2] ms"  # 4 significant digits
    assert report.fmt_ci(c, "x", 2) == "51.35 [50.57, 55.20] x"
    assert report.fmt_ci(c, "") == "51.35 [50.57, 55.2]"  # no unit, no trailing space
    assert report.fmt_ci({**c, "coverage": 0.9375}, "", 1) == "51.3 [50.6, 55.2] (93.75% interval)"
    # Results written before median_ci stored its coverage: recomputed from n.
    old = {k: v for k, v in c.items() if k != "coverage"}
    assert report.fmt_ci(old) == "51.35 [50.57, 55.2] ms"
    assert report.fmt_ci({**old, "n": 5}) == "51.35 [50.57, 55.2] ms (93.75% interval)"


MACHINE = {"cpu": "Test CPU", "cores": 2, "llvm_mcpu": "testcpu", "tvm": "0.27", "python": "3.11",
           "load_average_at_start": [1.0, 0.5, 0.25], "schedb_commit": "abc1234", "dirty": True}


def _table(md: str) -> list[list[str]]:
    """The rows of the markdown table in ``md`` (header and rule left out), cell by cell."""
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("|")]
    return rows[2:]


def test_inference_table_recomputes_from_the_result():
    """bench_inference.render on a result as measure() builds it: cells from median_ci of the
    samples; with 5 rounds every interval says it covers 93.75%, not the header's 95%."""
    samples = {"bound + folded": [52.0, 50.0, 51.0, 55.0, 53.0],
               "params as inputs": [790.0, 801.0, 766.0, 834.0, 800.0], "pytorch eager": [21.0, 20.0, 22.0, 26.0, 21.5]}
    torch = samples["pytorch eager"]
    m = {"model": "alexnet", "rounds": 5, "fixture_weights": "bound",
         "tasks": {"bound + folded": 13, "params as inputs": 20},
         "scheduled": {"bound + folded": 12, "params as inputs": 7},
         "cells": {k: report.median_ci(s) for k, s in samples.items()},
         "over_pytorch": {k: report.median_ci([x / t for x, t in zip(samples[k], torch)])
                          for k in bench_inference.VARIANTS}}
    md, fig = bench_inference.render({"machine": MACHINE, "models": [m]})
    assert fig is None
    note = "(93.75% interval)"
    # Ratios per round: 52/21, 50/20, 51/22, 55/26, 53/21.5 -> sorted 2.115, 2.318, 2.465, 2.476, 2.5.
    assert _table(md) == [
        ["alexnet (bound)", "bound + folded", "13 (12)", f"52 [50, 55] ms {note}", f"2.47 [2.12, 2.50] x {note}"],
        ["alexnet (bound)", "params as inputs", "20 (7)", f"800 [766, 834] ms {note}",
         f"37.21 [32.08, 40.05] x {note}"],
        ["alexnet", "PyTorch eager", "", f"21.5 [20, 26] ms {note}", "1"],
    ]
    assert md.startswith("Machine: Test CPU (2 cores, LLVM mcpu testcpu), TVM 0.27, Python 3.11; "
                         "schedb abc1234 (uncommitted changes); load average at start [1.0, 0.5, 0.25].")
    assert "over 5 interleaved rounds" in md


def test_geomean_ci_over_pairs_of_per_round_ratios():
    """bench_pairs' droplet line: the geometric mean of each pair's median ratio, and an
    interval that excludes 1.0 only when the gain holds across pairs and rounds."""
    exact = report.geomean_ci([[1.0] * 15, [1.21] * 15])
    assert exact["geomean"] == pytest.approx(1.1) and exact["ci_low"] == pytest.approx(exact["ci_high"])
    rng = random.Random(3)
    noise = report.geomean_ci([[rng.gauss(1.0, 0.05) for _ in range(15)] for _ in range(6)])
    assert noise["ci_low"] < 1.0 < noise["ci_high"]
    gain = report.geomean_ci([[rng.gauss(1.15, 0.05) for _ in range(15)] for _ in range(6)])
    assert 1.0 < gain["ci_low"] < 1.15 < gain["ci_high"] and gain["groups"] == 6


def test_pairs_table_recomputes_from_the_result():
    """bench_pairs.render: per-pair cells and droplet gain from the samples, the geometric
    mean over pairs, droplet's time share and the ratio over PyTorch eager round by round."""
    rounds = 7
    samples = {"untuned": [2000.0 + i for i in range(rounds)], "tuned on its own": [80.0 + i for i in range(rounds)],
               "a: transfer": [70.0 + i for i in range(rounds)], "a: transfer+droplet": [63.0 + i for i in range(rounds)],
               "b: transfer": [90.0] * rounds, "b: transfer+droplet": [90.0] * rounds,
               "pytorch eager": [60.0 + i for i in range(rounds)]}
    search = {"search_time_s": 100.0, "measured": 50, "search_wall_s": 150.0, "droplet_wall_s": 50.0,
              "droplet_trials": 64, "accepted": 1, "tasks": 10, "exact": 1, "neighbor": 5, "anchor": 1,
              "searched": 1, "untuned": 2}
    ratios = {s: [x / y for x, y in zip(samples[f"{s}: transfer"], samples[f"{s}: transfer+droplet"])] for s in "ab"}
    t = {"target_model": "m", "rounds": rounds, "samples_ms": samples, "load_average_before": [1.0],
         "cells": {k: report.median_ci(v) for k, v in samples.items()}, "droplet_ratios": ratios,
         "droplet_gain": {s: report.median_ci(r) for s, r in ratios.items()}, "search": {"a": search, "b": search}}
    res = {"machine": MACHINE, "targets": [t], "droplet": bench_pairs.droplet_summary([t])}
    md, _ = bench_pairs.render(res)
    row = _table(md)[0]
    assert row[0] == "a -> m" and row[3] == "73 [70, 76] ms" and row[4] == "66 [63, 69] ms"
    assert row[5].startswith("1.10") and row[7] == "150 s (50 s, 1 accepted)"
    assert row[8] == "1 exact, 5 neighbour, 1 anchor, 1 searched, 2 untuned of 10"
    # a gains 66/73 per round at the median, b nothing: geomean sqrt(median(a) * 1).
    g = math.sqrt(statistics.median(ratios["a"]))
    assert f"geometric mean gain **{g:.3f}x" in md and "a -> m 50%" in md
    # a + droplet over PyTorch per round: (63 + i) / (60 + i), median at i = 3: 66/63.
    assert f"m from a {66 / 63:.2f} [" in md


def test_droplet_reach_splits_the_kernel_time_by_what_droplet_did():
    def task(w, untuned, transferred, refined, trials, accepted, speedup):
        return {"weight": w, "untuned_us": untuned, "transferred_us": transferred, "refined_us": refined,
                "droplet_trials": trials, "refined_accepted": accepted, "droplet_speedup": speedup}

    # The refined kernel beat its start 1.25x in their head-to-head (start 100 us there), whatever
    # the transfer measured earlier in another batch (90 us).
    pair = {"tasks": [task(2, 900.0, 90.0, 80.0, 10, True, 1.25), task(1, 400.0, 50.0, 50.0, 5, False, 1.0),
                      task(1, 10.0, None, None, 0, None, None)]}
    r = bench_pairs.droplet_reach(pair)
    # Kernel time after: 2 x 80 + 50 + 10 = 220 us; before droplet: 2 x 100 + 50 + 10 = 260 us.
    assert r["kernel_sum_ms"] == pytest.approx(0.22) and r["predicted_gain"] == pytest.approx(260 / 220)
    assert r["searched_share"] == pytest.approx(210 / 220) and r["accepted_share"] == pytest.approx(160 / 220)
    assert (r["searched"], r["accepted"]) == (2, 1)


def test_verdicts_judge_the_whole_interval_either_way():
    c = {"median": 1.0, "ci_low": 0.95, "ci_high": 1.05}
    assert [report.verdict(c, g) for g in (1.1, 1.0, 0.9)] == ["met", "not shown", "missed"]
    assert [report.verdict(c, g, at_least=True) for g in (0.9, 1.0, 1.1)] == ["met", "not shown", "missed"]


class _Samples:
    """A built kernel that returns the given samples one per call."""

    def __init__(self, xs):
        self.xs = iter(xs)

    def sample_us(self):
        return next(self.xs)


class _Torch(_Samples):
    """A PyTorch layer: another runtime than _Samples' kernels."""


def test_sampling_settles_first_and_at_each_change_of_runtime(monkeypatch):
    """A runtime's thread pool spins on the cores after its run: sample_each pauses before
    its first sample and before each sample of another runtime than the one before, only."""
    import layers

    out = {n: [] for n in "abcde"}
    timers = {"a": _Samples([1.0]), "b": _Samples([2.0]), "c": _Torch([3.0]), "d": _Torch([4.0]),
              "e": _Samples([5.0])}
    marks = []
    monkeypatch.setattr(layers.time, "sleep", lambda s: marks.append(sum(map(len, out.values()))))
    layers.sample_each((out[n], t) for n, t in timers.items())
    assert out == {"a": [1.0], "b": [2.0], "c": [3.0], "d": [4.0], "e": [5.0]}
    assert marks == [0, 2, 4]  # before a, before c (PyTorch after TVM), before e (TVM after PyTorch)


def test_kernel_goal_is_the_share_of_pytorchs_gflops_round_by_round(monkeypatch):
    """time_kernels takes one sample of each build per round; the share of PyTorch's GFLOP/s
    is PyTorch's time over the kernel's in the same round, and the time-to-latency table
    judges each kernel against 90% on that share's whole interval."""
    import bench_time_to_latency as ttl
    import layers

    last = "schedb 3600 s"
    fast = {"task": "fused_conv2d_add_relu", "weight": 2, "flops": 2e8, "untuned_in": [],
            "_built": {last: _Samples([100.0, 115, 100, 105, 100, 102]),
                       layers.TORCH: _Samples([99.0, 100, 101, 100, 100, 100])}}
    slow = {"task": "fused_conv2d1_add1_relu1", "weight": 1, "flops": 1e8, "untuned_in": [],
            "_built": {last: _Samples([200.0] * 6), layers.TORCH: _Samples([100.0] * 6)}}
    untuned = {"task": "fused_conv2d2_add2", "weight": 1, "flops": 1e8, "untuned_in": [last],
               "_built": {layers.TORCH: _Samples([50.0] * 6)}}
    kernels = [fast, slow, untuned]
    monkeypatch.setattr(layers, "SETTLE_S", 0)
    layers.time_kernels(kernels, rounds=6)
    assert fast["samples_us"][last] == [100.0, 115, 100, 105, 100, 102]
    assert slow["of_pytorch"][last]["median"] == 0.5
    assert slow["gflops"][last] == 1e8 / 200 / 1e3
    rows = _table("\n".join(ttl.kernel_rows(kernels, last)))
    assert [r[-1] for r in rows] == ["not shown", "missed", ""]
    assert rows[2][2] == "untuned" and rows[1][3] == "1000.0"


def test_timing_never_pauses_its_own_process_group(tmp_path, monkeypatch):
    """A script that runs the tuning and then the timing leaves its own process group in the
    pause file: stopping that group would stop the timing itself, for good."""
    import os

    import layers

    stopped = []
    monkeypatch.setattr(layers.os, "killpg", lambda pgid, sig: stopped.append((pgid, sig)))
    (tmp_path / "pgid").write_text(str(os.getpgid(0)))
    monkeypatch.setenv(layers.PAUSE_ENV, str(tmp_path / "pgid"))
    with layers.fixture_tuning_paused() as paused:
        assert paused is None
    assert stopped == []
    (tmp_path / "pgid").write_text(str(os.getpgid(0) + 1))  # another group: paused, then resumed
    with layers.fixture_tuning_paused() as paused:
        assert paused == os.getpgid(0) + 1
    assert [sig for _, sig in stopped] == [layers.signal.SIGSTOP, layers.signal.SIGCONT]
