"""Experiment 2, equal time (the transfer-tuning paper's metric), on googlenet.

MetaSchedule from scratch is a tuning run of googlenet by ``schedb tune`` (the fixture's,
or a longer one with ``--run``): its sidecar's
timeline (from the task scheduler log) says when each task's candidates were measured,
so the work dir *as it stood at any moment t of the search* is the first records of
each task. For each source (resnet50, alexnet) this script takes the transfer+droplet
search time T from ``bench_pairs.py`` and

* times, interleaved in one window, MetaSchedule at T next to transfer and
  transfer+droplet (median, distribution-free 95% interval over the rounds);
* finds the time MetaSchedule needs to match transfer+droplet's latency (bisection over
  the timeline, every point compiled, checked against PyTorch and timed) and reports
  it as a multiple of T; if the run ends first, the ratio is a lower bound;
* reports the share of the full tuning speed-up that transfer reaches:
  (untuned / transfer - 1) / (untuned / full - 1), with full = the fixture tuned on its own
  (timed in the pairs table).

    python benchmarks/bench_equal_time.py            (after bench_pairs.py for googlenet)
    python benchmarks/bench_equal_time.py --replot
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import report
from bench_pairs import interleaved, pair_database

ROOT = Path(__file__).resolve().parents[1]


class Search:
    """A tuning work dir replayed over time."""

    def __init__(self, folder: Path, tasks):
        import tvm_ffi
        from tvm.s_tir.meta_schedule.database import Workload

        from schedb.ingest.workdir import RECORDS, WORKLOADS, find, open_text, read_sidecar

        meta = read_sidecar(folder)
        self.wall_s, self.per_task = meta["wall_time_s"], meta.get("trials_per_task")
        self.steps = meta["timeline"]["tasks"]
        with open_text(find(folder, WORKLOADS)) as f:
            self.workloads = [Workload.from_json(json.loads(line)) for line in f if line.strip()]
        # The timeline is per task index; make sure workload i is task i.
        for i, (w, t) in enumerate(zip(self.workloads, meta["tasks"])):
            if str(tvm_ffi.structural_hash(w.mod)) != t["shash"]:
                sys.exit(f"{folder}: workload {i} is not task {i} ({t['name']})")
        self.records: dict[int, list] = {}
        with open_text(find(folder, RECORDS)) as f:
            for line in f:
                if line.strip():
                    widx, rec = json.loads(line)
                    self.records.setdefault(widx, []).append(rec)
        self.events = sorted({t for s in self.steps for t, _ in s})
        names = {t.name for t in tasks}
        self.covered = sum(1 for t in meta["tasks"] if t["name"] in names)

    def at(self, t: float):
        """A MetaSchedule database with what the search had measured by ``t`` seconds."""
        from tvm.s_tir.meta_schedule.database import MemoryDatabase, TuningRecord

        db = MemoryDatabase()
        for i, steps in enumerate(self.steps):
            n = max((c for s, c in steps if s <= t), default=0)
            if n:
                w = db.commit_workload(self.workloads[i].mod)
                for rec in self.records.get(i, [])[:n]:
                    db.commit_tuning_record(TuningRecord.from_json(rec, w))
        return db


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--sources", default="resnet50,alexnet")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds at equal time")
    ap.add_argument("--curve-points", type=int, default=8, help="extra points on the MetaSchedule curve")
    ap.add_argument("--curve-repeat", type=int, default=7, help="timing repeats per curve point")
    ap.add_argument("--replot", action="store_true")
    ap.add_argument("--run", default=None,
                    help="MetaSchedule's tuning run (a work dir with a timeline; default: fixtures/MODEL)")
    ap.add_argument("--results", default=str(report.RESULTS))
    a = ap.parse_args(argv)
    results = Path(a.results)
    if a.replot:
        res = json.loads((results / "equal_time.json").read_text())
        timed = results / "pairs" / f"{res['model']}.json"
        if timed.exists():  # the pairs table may have been timed again since
            shares(res, json.loads(timed.read_text()))
        report.write("equal_time", res, *render(res), folder=results)
        return

    from schedb import compile_model, extract_tasks, load_model, lower, parse_target, time_vm

    target = parse_target(None)
    lowered = lower(load_model(a.model), target)
    tasks = extract_tasks(lowered, target)
    run = Path(a.run or ROOT / "fixtures" / a.model)
    search = Search(run, tasks)
    timed = json.loads((results / "pairs" / f"{a.model}.json").read_text())
    pairs = {s: json.loads((results / "pairs" / f"{s}_to_{a.model}.json").read_text())
             for s in a.sources.split(",")}
    res = {"machine": report.describe(), "started": report.now(), "args": vars(a), "model": a.model,
           "metaschedule": {"wall_time_s": search.wall_s, "tasks": len(search.steps),
                            "trials_per_task": search.per_task,
                            "run": str(run.resolve().relative_to(ROOT))},
           "sources": {}, "curve": []}

    def latency(t: float, repeat: int) -> dict:
        c = compile_model(lowered, target, search.at(t))
        lat = report.median_ci(time_vm(c, lowered, repeat=repeat).samples)
        point = {"t_s": t, "kernels": c.tuned_tasks, **lat}  # kernels: tasks with a record by t
        res["curve"].append(point)
        print(f"  MetaSchedule at {t:7.1f} s: {lat['median']:.1f} ms ({c.tuned_tasks} kernels)", file=sys.stderr)
        return point

    # 1. Equal time: MetaSchedule at T next to the transfer, interleaved.
    for src, p in pairs.items():
        T = p["search_time_s"]
        variants = {"MetaSchedule at equal time": search.at(T),
                    "transfer": pair_database(p, tasks, target, refined=False),
                    "transfer+droplet": pair_database(p, tasks, target, refined=True)}
        compiled = {k: compile_model(lowered, target, db) for k, db in variants.items()}
        samples = interleaved(lowered, compiled, a.rounds)
        cells = {k: report.median_ci(s) for k, s in samples.items()}
        res["sources"][src] = {"search_time_s": T, "cells": cells, "samples_ms": samples,
                               "kernels_at_equal_time": compiled["MetaSchedule at equal time"].tuned_tasks}
        print(f"{src}: T={T:.0f} s " + ", ".join(f"{k} {v['median']:.1f} ms" for k, v in cells.items()),
              file=sys.stderr)

    # 2. The curve, and the time to match each transfer+droplet latency (bisection on events).
    ev = search.events
    known = {}  # event index -> median latency there
    for i in sorted({round(j * (len(ev) - 1) / max(a.curve_points - 1, 1)) for j in range(a.curve_points)}):
        known[i] = latency(ev[i], a.curve_repeat)["median"]
    for src, s in res["sources"].items():
        goal = s["cells"]["transfer+droplet"]["median"]
        if known[len(ev) - 1] > goal:
            s["time_to_match_s"], s["matched"] = ev[-1], False  # its last measured batch
        else:
            hi = min(i for i, m in known.items() if m <= goal)
            lo = max((i for i, m in known.items() if i < hi), default=-1)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                known[mid] = latency(ev[mid], a.curve_repeat)["median"]
                lo, hi = (lo, mid) if known[mid] <= goal else (mid, hi)
            s["time_to_match_s"], s["matched"] = ev[hi], True
        s["time_to_match_ratio"] = s["time_to_match_s"] / s["search_time_s"]

    shares(res, timed)
    res["curve"].sort(key=lambda p: p["t_s"])
    res["finished"] = report.now()
    res["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    md, fig = render(res)
    print(md)
    print("->", report.write("equal_time", res, md, fig, folder=results))


def shares(res: dict, timed: dict):
    """The share of the full tuning speed-up that transfer reaches, from the pairs table
    (bench_pairs.py times untuned, tuned-on-its-own and the transfers in one window)."""
    c = timed["cells"]
    untuned, own = c["untuned"]["median"], c["tuned on its own"]["median"]
    for src, s in res["sources"].items():
        s["share_of_full_speedup"] = {
            v: (untuned / c[f"{src}: {v}"]["median"] - 1) / (untuned / own - 1)
            for v in ("transfer", "transfer+droplet")}
    res["from_pairs_table"] = {"untuned": c["untuned"], "tuned on its own": c["tuned on its own"],
                               "load_average_when_timed": timed.get("load_average_before")}


def render(res: dict):
    rows = ["| source | search time T | MetaSchedule at T | transfer | transfer + droplet "
            "| MetaSchedule time to match transfer + droplet | share of full speed-up (transfer / + droplet) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for src, s in res["sources"].items():
        c = s["cells"]
        match = (f"{s['time_to_match_s']:.0f} s = **{s['time_to_match_ratio']:.1f}x T**" if s["matched"] else
                 f"not by its last batch ({s['time_to_match_s']:.0f} s): **> {s['time_to_match_ratio']:.1f}x T**")
        sh = s["share_of_full_speedup"]
        rows.append(f"| {src} | {s['search_time_s']:.0f} s | {report.fmt_ci(c['MetaSchedule at equal time'])} "
                    f"({s['kernels_at_equal_time']} kernels tuned) | {report.fmt_ci(c['transfer'])} "
                    f"| {report.fmt_ci(c['transfer+droplet'])} | {match} "
                    f"| {sh['transfer']:.0%} / {sh['transfer+droplet']:.0%} |")
    m = res["metaschedule"]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"Target {res['model']}. MetaSchedule from scratch = `schedb tune` run `{m['run']}` "
        f"({m['tasks']} tasks, at most {m['trials_per_task']} trials per task, {m['wall_time_s']:.0f} s), "
        "replayed from its timeline. T: the pair's task search and droplet, from the pairs table (lowering, "
        "task extraction, the index and the final compile not counted). Latencies: median [95% interval] over "
        f"{res['args']['rounds']} interleaved rounds (binomial order statistics). Time to match: first moment "
        "of the MetaSchedule run whose model is at least as fast as transfer + droplet (bisection, each point "
        f"timed {res['args']['curve_repeat']} times, median). Share of the full speed-up: "
        "(untuned/transfer - 1) / (untuned/tuned-on-its-own - 1), from the pairs table.", "", *rows])

    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    curve = res["curve"]
    ax.plot([p["t_s"] for p in curve], [p["median"] for p in curve], "o-", color="#555",
            label="MetaSchedule from scratch")
    colors = ["#1f5fa0", "#c0392b", "#27ae60"]
    for (src, s), col in zip(res["sources"].items(), colors):
        c = s["cells"]["transfer+droplet"]
        ax.errorbar([s["search_time_s"]], [c["median"]], yerr=[[c["median"] - c["ci_low"]], [c["ci_high"] - c["median"]]],
                    fmt="*", ms=12, color=col, label=f"transfer + droplet from {src}")
        ax.axhline(c["median"], color=col, lw=0.8, ls="--")
        e = s["cells"]["MetaSchedule at equal time"]
        ax.plot([s["search_time_s"]], [e["median"]], "s", color=col, mfc="none", ms=8,
                label=f"MetaSchedule at the same time as {src}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("search time, s (log)")
    ax.set_ylabel(f"{res['model']} latency, ms (log)")
    ax.set_title(f"{res['model']}: transfer-tuning vs MetaSchedule at equal search time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return md, fig


if __name__ == "__main__":
    main()
