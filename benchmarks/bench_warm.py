"""Warm-started tuning against tuning from scratch, googlenet.

Two MetaSchedule runs of the same model with the same settings and wall budget, one after
the other, the background fixture tuning stopped:

* **cold**: ``schedb tune --db cold.db`` into an empty database, from random samples;
* **warm**: ``schedb tune --db warm.db`` into a copy of bench_deep's transfer database
  (sources: the other two seed models) without the model's own fixture records, so the
  transferred schedules seed MetaSchedule's evolutionary search.

Each run's timeline says when each task's candidates went to the runner, and a task's
records are committed in that order, so the database *as it stood at t* is everything
there before the run plus each task's first n(t) records of the run. At log-spaced
points of both runs (and at t = 0 of the warm one) that database is compiled, and every
point is timed **interleaved** with the transferred model (bench_deep's winners, what
``schedb transfer`` builds) over the rounds. Raw samples are kept.

    python benchmarks/bench_warm.py [--model googlenet] [--minutes 20] [--points 6]
    python benchmarks/bench_warm.py --replot

A finished run (its work dir holds schedb.json) is reused when rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import queries
import report
from shared import copy_db, interleaved, others, pair_database, scratch
from layers import fixture_tuning_paused

RUNS = ("cold", "warm")


def prepare(run: str, work: Path, pair: dict, model: str) -> Path:
    """The database a run tunes into; its highest record id before the run is kept beside it."""
    db = work / f"{run}.db"
    if not db.exists():
        from schedb import Store

        tmp = work / f"{run}.tmp.db"
        if run == "warm":
            copy_db(Path(pair["db"]), tmp)
            queries.drop_tuning_of(tmp, model)  # the model's own tuning: not a warm start but a leak
        Store(tmp).close()  # cold: a new, empty database
        top = queries.max_record_id(tmp)  # its connection closed before the rename: nothing left in a WAL
        (work / f"{run}.before").write_text(str(top))
        tmp.rename(db)
    return db


def tune_run(run: str, model, target, work: Path, db: Path, a) -> dict:
    from schedb.pipeline.tune import TuneBudget, tune

    out = work / run
    if (out / "schedb.json").exists():
        return json.loads((out / "schedb.json").read_text())
    print(f"tuning {run} for {a.minutes} min", file=sys.stderr)
    return tune(model, target, out, TuneBudget(trials_per_task=a.trials_per_task, trials_per_iter=16,
                                               time_limit=a.minutes * 60), database=db)


def at(db: Path, before: int, meta: dict, tasks, t: float, scratch: Path, previous: Path | None):
    """A copy of ``db`` as it stood ``t`` seconds into the run, and how many of the run's
    records it holds. Its choices are those of the ``previous`` point's copy, not the run's
    end (they weigh records this point has not got): a task with no record since stands
    as chosen there, the others are chosen anew (a newer record voids a choice)."""
    from schedb import Store
    from schedb.tir.signature import signature

    snap = scratch / f"snap-{db.stem}-{t:.0f}.db"
    copy_db(db, snap)
    Store(snap).close()  # a run tuned by an older schedb: its schema migrated first
    cuts = [(signature(task.func)[0], max((k for s, k in steps if s <= t), default=0))
            for task, steps in zip(tasks, meta["timeline"]["tasks"])]
    return snap, queries.cut_run(snap, previous or snap, before, cuts)


def chosen_at(snap: Path, tasks, target, engine):
    """What `schedb tune --db` does when it stops: every task's records and its untuned
    kernel side by side (schedb.choose) -> (the Database a model is built with, seconds)."""
    from schedb import Database, Store, choose

    t0 = time.perf_counter()
    store = Store(snap)
    choose(store, tasks, target, engine)
    store.close()
    return Database(snap, target=target), round(time.perf_counter() - t0, 1)


def points(meta: dict, n: int) -> list[float]:
    """Log-spaced moments from the first measured batch to the run's end."""
    first = min((s[0][0] for s in meta["timeline"]["tasks"] if s), default=1.0)
    return [round(float(t), 1) for t in np.geomspace(max(first, 1.0), meta["wall_time_s"], n)]


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall budget of each run")
    ap.add_argument("--trials-per-task", type=int, default=32)
    ap.add_argument("--points", type=int, default=6, help="timed moments per run")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--deep", default=str(report.RESULTS / "deep"), help="bench_deep's transfers")
    ap.add_argument("--work", default=scratch("warm"))
    ap.add_argument("--tune-only", action="store_true", help="run (and keep) the two tuning runs, time nothing")
    ap.add_argument("--beside-fixture-tuning", action="store_true",
                    help="do not stop the background fixture tuning during the two runs (only during the timing)")
    return ap


def main(argv=None):
    a = report.parse(arguments(), argv, "warm", render)
    if a is None:
        return
    res = run(a)
    if res is not None:
        report.publish(a.name, res, render)


def run(a) -> dict | None:
    """Both tuning runs, then each at its points against the transferred model, interleaved."""
    from schedb import compile_model, extract_tasks, load_model, lower

    target = report.host_target()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    pair = json.loads((Path(a.deep) / f"{'+'.join(others(a.model))}_to_{a.model}.json").read_text())
    model = load_model(a.model)
    lowered = lower(model, target)
    tasks = extract_tasks(lowered, target)
    res = {"machine": report.describe(), "started": report.now(), "args": vars(a), "transfer": pair["source"],
           "runs": {}}
    dbs = {run: prepare(run, work, pair, a.model) for run in RUNS}
    with fixture_tuning_paused(not a.beside_fixture_tuning):
        metas = {run: tune_run(run, model, target, work, dbs[run], a) for run in RUNS}
    if a.tune_only:
        return None
    compiled = {"transferred": compile_model(lowered, target, pair_database(pair, tasks, target, refined=False))}
    with fixture_tuning_paused():
        compiled.update(compile_points(res, dbs, metas, lowered, tasks, target, a))
    with fixture_tuning_paused():
        time.sleep(2)
        load = [round(x, 2) for x in os.getloadavg()]
        samples = interleaved(lowered, compiled, a.rounds)
        res["load_average_end_of_timing"] = [round(x, 2) for x in os.getloadavg()]
    res.update(load_average_timing=load, samples_ms=samples, cells={k: report.median_ci(s) for k, s in samples.items()},
               kernels={k: c.tuned_tasks for k, c in compiled.items()}, finished=report.now())
    return res


def compile_points(res: dict, dbs: dict, metas: dict, lowered, tasks, target, a) -> dict:
    """Each run's database at each of its points, chosen and compiled: {"RUN T": compiled}."""
    from schedb import Engine, compile_model

    work, engine, compiled = Path(a.work), Engine(target), {}
    for run in RUNS:
        before = int((work / f"{run}.before").read_text())
        ts = ([0.0] if run == "warm" else []) + points(metas[run], a.points)
        res["runs"][run] = r = {"wall_time_s": metas[run]["wall_time_s"], "records_before": before,
                                "trials": metas[run]["trials"], "points_s": ts, "run_records_at_points": [],
                                "choose_s": []}
        snap = None
        for t in ts:
            print(f"  choose and compile {run} at {t:.0f} s", file=sys.stderr)
            snap, kept = at(dbs[run], before, metas[run], tasks, t, work, snap)
            db, seconds = chosen_at(snap, tasks, target, engine)
            r["run_records_at_points"].append(kept)
            r["choose_s"].append(seconds)
            compiled[f"{run} {t}"] = compile_model(lowered, target, db)
    return compiled

def render(res: dict):
    c, ref = res["cells"], res["cells"]["transferred"]
    rows = ["| run | t (s) | records of the run by t | choosing (s) | latency | kernels scheduled "
            "| at or below transferred's upper bound (whole interval) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for run, r in res["runs"].items():
        for i, (t, kept) in enumerate(zip(r["points_s"], r["run_records_at_points"])):
            k = f"{run} {t}"
            choosing = f"{r['choose_s'][i]:.0f}" if "choose_s" in r else "-"
            rows.append(f"| {run} | {t:.0f} | {kept} | {choosing} | {report.fmt_ci(c[k])} | {res['kernels'][k]} "
                        f"| {report.verdict(c[k], ref['ci_high'])} |")
    took = ", ".join(f"{run} {r['wall_time_s']:.0f} s" for run, r in res["runs"].items())
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"{res['args']['model']}: MetaSchedule with a {res['args']['minutes']:g}-minute limit each (it stops only "
        f"after every task's first batch: the runs took {took}), cold (empty database) and "
        f"warm (seeded by the transfer from {res['transfer']}), at most {res['args']['trials_per_task']} trials per "
        f"task; at each point, the database as it stood then, each task's schedule chosen side by side with its "
        f"untuned kernel as `tune --db` does when it stops (choosing: its wall time), compiled and timed with the "
        f"transferred model "
        f"({report.fmt_ci(ref)}), median [95% interval] over {res['args']['rounds']} interleaved rounds.", "", *rows])
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run, col in zip(res["runs"], ("#555", "#1f5fa0")):
        ts = res["runs"][run]["points_s"]
        ks = [c[f"{run} {t}"] for t in ts]
        ax.errorbar([max(t, 1.0) for t in ts], [k["median"] for k in ks],
                    yerr=[[k["median"] - k["ci_low"] for k in ks], [k["ci_high"] - k["median"] for k in ks]],
                    fmt="o-", color=col, capsize=3, label=f"{run} start")
    ax.axhspan(ref["ci_low"], ref["ci_high"], color="#c0392b", alpha=0.2, label="transferred (95% interval)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tuning wall time, s (log; t = 0 drawn at 1 s)")
    ax.set_ylabel(f"{res['args']['model']} latency, ms (log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return md, fig


if __name__ == "__main__":
    main()
