"""Measurement noise on this machine, the way droplet measures, and how often droplet's
final test accepts a kernel that is not faster.

For the heaviest tasks of the seed fixtures (weight x best stored time), the best stored
schedule is built twice, or ``batch + 1`` times, and the copies are measured as droplet
does (``Engine.measure(..., rounds=)``: one sample of each per round, the order rotating):

* **final**: two copies, ``FINAL_ROUNDS`` rounds, droplet's acceptance test on them (the
  copy as the "candidate"): every acceptance is a false one. The rate and its exact
  (Clopper-Pearson) 95% interval are the result;
* **batch**: ``batch + 1`` copies, ``MOVE_ROUNDS`` rounds, as a search batch is measured.

Every raw sample is kept: tests/test_droplet.py draws its noise from this file.
Background tuning named by ``$SCHEDB_BENCH_PAUSE`` is stopped meanwhile.

    python benchmarks/bench_noise.py [--calls 34] [--tasks 2]
    python benchmarks/bench_noise.py --replot
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

import report
from layers import fixture_tuning_paused

MODELS = ("resnet50", "alexnet", "googlenet")
FIXTURES = report.RESULTS.parents[1] / "fixtures"


def kernels(models, per_model: int, target) -> list[dict]:
    """The ``per_model`` heaviest tasks of each model with their best stored schedule, built."""
    from schedb import apply_trace, canonical, extract_tasks, load_model, lower, signature
    from schedb.ingest import ingest
    from schedb.store import Store

    store = Store(Path(tempfile.mkdtemp(prefix="schedb-noise-")) / "fixtures.db")
    ingest(store, [FIXTURES / m for m in models])
    out = []
    for m in models:
        found = []
        for t in extract_tasks(lower(load_model(m), target), target):
            wid = store.workloads.id_of(signature(t.func)[0])
            top = store.records.top(wid, canonical(target), 1) if wid else []
            if top:
                found.append((t.weight * top[0]["mean_s"], t, top[0]))
        for _, t, rec in sorted(found, key=lambda x: -x[0])[:per_model]:
            mod = apply_trace(json.loads(rec["trace"]), t.func, target).mod
            out.append({"model": m, "task": t.name, "weight": t.weight, "stored_us": rec["mean_s"] * 1e6,
                        "_mod": mod})
    return out


def measure(ks: list[dict], calls: int, batch: int, target) -> dict:
    from schedb.search.droplet import FINAL_ROUNDS, MOVE_ROUNDS, DropletParams, significantly_faster
    from schedb.search.measure import Engine

    engine, params = Engine(target), DropletParams()
    final, batches = [], []
    for c in range(calls):
        for k in ks:
            a, b = engine.measure([k["_mod"], k["_mod"]], rounds=FINAL_ROUNDS)
            if a.ok and b.ok:
                accepted, p = significantly_faster(b.samples, a.samples, params.pvalue, params.min_gain)
                final.append({"task": k["task"], "call": c, "samples": [a.samples, b.samples],
                              "accepted": accepted, "p": p})
            if c % 4 == 0:
                ms = engine.measure([k["_mod"]] * (batch + 1), rounds=MOVE_ROUNDS)
                if all(m.ok for m in ms):
                    batches.append({"task": k["task"], "call": c, "samples": [m.samples for m in ms]})
        print(f"call {c + 1}/{calls}: {sum(f['accepted'] for f in final)} of {len(final)} accepted", flush=True)
    return {"final_rounds": FINAL_ROUNDS, "move_rounds": MOVE_ROUNDS, "pvalue": params.pvalue,
            "min_gain": params.min_gain, "final": final, "batch": batches}


def summarize(res: dict) -> None:
    from scipy.stats import binomtest

    f = res["final"]
    k, n = sum(x["accepted"] for x in f), len(f)
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    logs = np.array([math.log(b / a) for x in f for a, b in zip(*x["samples"])])
    within = [np.std(np.log(s)) for x in f for s in x["samples"]]
    d = np.array([np.mean([math.log(b / a) for a, b in zip(*x["samples"])]) for x in f])
    res["summary"] = {"false_accepted": k, "trials": n, "rate": k / n, "rate_ci": [ci.low, ci.high],
                      "log_ratio_sd_per_round": float(logs.std(ddof=1)),
                      "log_ratio_sd_of_call_means": float(d.std(ddof=1)),
                      "within_kernel_log_sd_median": float(np.median(within))}


def render(res: dict):
    s = res["summary"]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"The {len(res['kernels'])} heaviest seed-fixture tasks ({', '.join(k['task'] for k in res['kernels'])}), "
        f"each schedule built twice and measured as droplet's final test measures: {res['final_rounds']} rounds, "
        "one sample of each copy per round, the order rotating; the test accepts a gain of more than "
        f"{res.get('min_gain', 0):.0%} at p <= {res.get('pvalue', 0.05)}.", "",
        "| droplet's final test on two copies of one kernel | value |", "| --- | --- |",
        f"| false acceptances | **{s['false_accepted']} of {s['trials']}** = {s['rate']:.1%} "
        f"(exact 95% interval [{s['rate_ci'][0]:.1%}, {s['rate_ci'][1]:.1%}]) |",
        f"| per-round log ratio, standard deviation | {s['log_ratio_sd_per_round']:.3f} |",
        f"| mean log ratio of a call, standard deviation | {s['log_ratio_sd_of_call_means']:.3f} |",
        f"| one kernel's samples within a call, median log standard deviation | "
        f"{s['within_kernel_log_sd_median']:.3f} |", "",
        f"Goal: false acceptances at most {GOAL_RATE:.0%}, the interval's upper end at most {GOAL_UPPER:.0%}: "
        f"**{verdict(s['rate'], *s['rate_ci'])}**."])
    return md, None


GOAL_RATE, GOAL_UPPER = 0.05, 0.10


def verdict(rate: float, low: float, high: float) -> str:
    if rate <= GOAL_RATE and high <= GOAL_UPPER:
        return "met"
    if low > GOAL_RATE:
        return "missed (the whole interval is above it)"
    return "not shown (the interval holds the goal and values above it)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=34, help="final-test calls per kernel")
    ap.add_argument("--tasks", type=int, default=2, help="heaviest tasks per seed model")
    ap.add_argument("--batch", type=int, default=8, help="neighbours per search batch (droplet's default)")
    a = report.parse(ap, argv, "noise", render)
    if a is None:
        return
    target = report.host_target()
    res = {"machine": report.describe(), "started": report.now()}
    ks = kernels(MODELS, a.tasks, target)
    res["kernels"] = [{x: v for x, v in k.items() if not x.startswith("_")} for k in ks]
    with fixture_tuning_paused():
        res.update(measure(ks, a.calls, a.batch, target))
        res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["finished"] = report.now()
    summarize(res)
    report.publish(a.name, res, render)


if __name__ == "__main__":
    main()
