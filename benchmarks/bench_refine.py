"""Droplet search against MetaSchedule's evolutionary search, from the same transferred starts.

For each model, its transfer from the other two fixtures (no droplet; kept and reused as
bench_deep keeps it), then its ``--top`` heaviest tasks (weight x transferred kernel time)
refined in three copies of that database:

- **droplet**: ``schedb droplet`` on those tasks (``refine_stored``, ``--trials`` per task
  on average, spent by weight x kernel time);
- **evolutionary, equal trials**: ``tune --db`` on those tasks (its search starts from the
  database's records, its cost model learns from them first) with as many trials as
  droplet measured;
- **evolutionary, equal time**: the same with droplet's wall time as its time limit.

Each arm ends as a user's run ends: the tasks' records and untuned kernels measured side
by side (``schedb.choose``). Then the model built from each database, the transferred one
and PyTorch eager are timed interleaved; the ratios are per round.

    python benchmarks/bench_refine.py [--models alexnet,resnet50] [--top 5] [--trials 32] [--rounds 15]
    python benchmarks/bench_refine.py --replot
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import report
from shared import SEEDS, base_db, copy_db, interleaved, others, pair_database, scratch, search

DROPLET, EVO_TRIALS, EVO_TIME, TRANSFERRED = ("droplet", "evolutionary, equal trials", "evolutionary, equal time",
                                              "transferred")


def heavy(pair: dict, top: int) -> list[dict]:
    """The ``top`` tasks of the transfer with the largest weight x kernel time."""
    def cost(t):
        return t["weight"] * (t["transferred_us"] or t["untuned_us"] or 0)

    return sorted(pair["tasks"], key=cost, reverse=True)[:top]


def droplet_arm(db: Path, model: str, tasks: list[dict], target, trials: int) -> dict:
    from schedb import Engine, Store
    from schedb.pipeline.refine import refine_stored

    store = Store(db)
    t0 = time.perf_counter()
    refined = refine_stored(store, {t["workload_id"]: t["weight"] for t in tasks}, target, Engine(target),
                            trials=trials, model=model)
    wall = time.perf_counter() - t0
    store.close()
    return {"wall_s": round(wall, 1), "trials": sum(r.trials for r in refined),
            "accepted": sum(r.accepted for r in refined)}


def evolutionary_arm(db: Path, model, lowered, tasks: list[dict], target, work: Path, trials: int,
                     time_limit: float | None) -> dict:
    """MetaSchedule's search on the tasks, from the database's records; the model comes
    lowered already (droplet's arm does not lower either)."""
    from schedb import tune
    from schedb.pipeline.tune import TuneBudget

    budget = TuneBudget(trials=trials if time_limit is None else 10**6, trials_per_task=None, trials_per_iter=8,
                        time_limit=time_limit)
    t0 = time.perf_counter()
    meta = tune(model, target, work, budget, database=db, only={t["task"] for t in tasks}, lowered=lowered)
    return {"wall_s": round(time.perf_counter() - t0, 1), "trials": meta["measured"],
            "cost_model_warm_samples": meta["cost_model_warm_samples"]}


def chosen(db: Path, tasks, target) -> None:
    """Each task's records and untuned kernel side by side, as a user's run ends."""
    from schedb import Engine, Store, choose

    store = Store(db)
    choose(store, tasks, target, Engine(target))
    store.close()


def measure(model_name: str, base: Path, target, a) -> dict:
    from schedb import Database, compile_model, extract_tasks, load_model, lower

    pair = search(others(model_name), model_name, base, target, droplet_trials=None,
                  pair_dir=Path(a.work) / "transfers", e2e_repeat=0)
    model = load_model(model_name)
    lowered = lower(model, target)
    tasks = extract_tasks(lowered, target)
    top = heavy(pair, a.top)
    dbs = {arm: Path(a.work) / f"{model_name}-{i}.db" for i, arm in enumerate((DROPLET, EVO_TRIALS, EVO_TIME))}
    for db in dbs.values():
        copy_db(Path(pair["db"]), db)
    arms = {DROPLET: droplet_arm(dbs[DROPLET], model_name, top, target, a.trials)}
    work = Path(a.work)
    arms[EVO_TRIALS] = evolutionary_arm(dbs[EVO_TRIALS], model, lowered, top, target, work / f"{model_name}-evo-n",
                                        arms[DROPLET]["trials"], None)
    arms[EVO_TIME] = evolutionary_arm(dbs[EVO_TIME], model, lowered, top, target, work / f"{model_name}-evo-t",
                                      arms[DROPLET]["trials"], arms[DROPLET]["wall_s"])
    named = [t for t in tasks if t.name in {x["task"] for x in top}]
    compiled = {TRANSFERRED: compile_model(lowered, target, pair_database(pair, tasks, target, refined=False))}
    for arm, db in dbs.items():
        chosen(db, named, target)
        compiled[arm] = compile_model(lowered, target, Database(db, target=target))
    samples = interleaved(lowered, compiled, a.rounds, with_torch=True)
    return {"model": model_name, "tasks": [t["task"] for t in top], "arms": arms, "samples_ms": samples,
            "cells": {k: report.median_ci(s) for k, s in samples.items()},
            "over_droplet": {arm: report.median_ci([x / d for x, d in zip(samples[arm], samples[DROPLET])])
                             for arm in (EVO_TRIALS, EVO_TIME, TRANSFERRED)}}


def render(res: dict):
    rows = ["| model | build | trials | wall | latency | / droplet's, per round |", "| --- | --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        for name, c in m["cells"].items():
            arm = m["arms"].get(name, {})
            ratio = m["over_droplet"].get(name)
            wall = f"{arm['wall_s']:.0f} s" if arm else ""
            rows.append(f"| {m['model']} | {name} | {arm.get('trials', '')} | {wall} | {report.fmt_ci(c)} "
                        f"| {'' if ratio is None else report.fmt_ci(ratio, 'x', 3)} |")
    a = res["args"]
    md = "\n".join([report.machine_line(res["machine"]), "",
                    f"The {a['top']} heaviest tasks of each model refined from its transfer (the other two fixtures) "
                    f"by droplet ({a['trials']} trials per task on average) and by MetaSchedule's evolutionary search "
                    "with droplet's trials or its wall time; each arm ends with the side-by-side choice. Latency: "
                    f"median [95% interval] over {a['rounds']} interleaved rounds.", "", *rows])
    return md, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="alexnet,resnet50")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--trials", type=int, default=32, help="droplet's trials per task, on average")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", default=scratch("refine"))
    a = report.parse(ap, argv, "refine", render)
    if a is None:
        return
    target = report.host_target()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    base = base_db(Path(a.work), SEEDS)
    res = {"machine": report.describe(), "started": report.now(), "args": vars(a), "models": []}
    for m in a.models.split(","):
        print(f"{m}: transfer, droplet, evolutionary x 2, compile, time", file=sys.stderr)
        res["models"].append(measure(m, base, target, a))
    res["finished"] = report.now()
    report.publish(a.name, res, render)


if __name__ == "__main__":
    main()
