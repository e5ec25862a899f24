"""Experiment 2, equal time (the transfer-tuning paper's metric), on googlenet.

MetaSchedule from scratch is a tuning run of googlenet by ``schedb tune`` (by default the
bundled fixture's: 32 trials per task from an empty database on today's pipeline); its
sidecar's timeline (from the task scheduler log) says when each task's candidates were
measured, so the database *as it stood at any moment t* is the first records of each task;
as a user gets it from schedb, each task's records and its untuned kernel are then measured
side by side and the faster kept (``schedb.choose``, as ``tune --db`` ends).
T is the wall time of ``schedb transfer`` with droplet for each source (resnet50, alexnet),
from ``bench_pairs.py`` (``search_wall_s``: lowering to the final model compiled; its own
end-to-end timing skipped). Then, all compiled and checked against PyTorch:

1. One interleaved window: about 15 log-spaced points of the MetaSchedule run, its end,
   MetaSchedule at each T, untuned, and transfer / transfer + droplet from each source.
2. Per source, the bracket around the crossing, bisected over the timeline: each point
   timed interleaved with that source's transfer + droplet model.

Time to match = the first point whose interval (median, distribution-free 95%) lies at or
below transfer + droplet's (both ends), given with its bracket and as a multiple of T; "> N x"
if the run never gets there. Share of the full speed-up against the run's end:
(untuned/transfer+droplet - 1) / (untuned/end - 1), all from window 1. The warm-started
curve (``bench_warm.py``, another window) is drawn on the same axes, shifted by its
transfer's wall time. Raw samples are kept.

    python benchmarks/bench_equal_time.py            (after bench_pairs.py for googlenet)
    python benchmarks/bench_equal_time.py --replot
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import report
from shared import Search, interleaved, log_points, pair_database, scratch

ROOT = Path(__file__).resolve().parents[1]


def at_or_below(ms: dict, goal: dict) -> bool:
    """MetaSchedule's interval lies at or below the goal's, at both ends."""
    return ms["ci_low"] <= goal["ci_low"] and ms["ci_high"] <= goal["ci_high"]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--sources", default="resnet50,alexnet")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per window")
    ap.add_argument("--points", type=int, default=15, help="log-spaced points of the MetaSchedule run")
    ap.add_argument("--replot", action="store_true")
    ap.add_argument("--run", default=None,
                    help="MetaSchedule's tuning run (a work dir with a timeline; default: fixtures/MODEL)")
    ap.add_argument("--results", default=str(report.RESULTS))
    ap.add_argument("--work", default=scratch("equal_time"), help="the chosen databases at each point (reused)")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    results = Path(a.results)
    if a.replot:
        report.replot(results / "equal_time.json", render)
        return
    report.publish("equal_time", run(a, results), render, results)


class Windows:
    """Models compiled by name, timed interleaved in windows whose samples go into the result."""

    def __init__(self, lowered, tasks, target, search, rounds: int, res: dict, work: Path):
        from schedb import Engine

        self.lowered, self.tasks, self.target, self.search, self.rounds, self.res = \
            lowered, tasks, target, search, rounds, res
        self.work, self.engine, self.compiled = work, Engine(target), {}

    def add(self, name: str, database):
        from schedb import compile_model

        self.compiled[name] = compile_model(self.lowered, self.target, database)

    def ms_at(self, t: float) -> str:
        name = f"MetaSchedule {t:.1f} s"
        if name not in self.compiled:
            self.add(name, self.search.at(t, self.work, self.tasks, self.target, self.engine))
        return name

    def window(self, names: list[str]) -> dict:
        load = [round(x, 2) for x in os.getloadavg()]
        samples = interleaved(self.lowered, {n: self.compiled[n] for n in names}, self.rounds)
        self.res["windows"].append({"load_average_before": load, "samples_ms": samples,
                                    "cells": {n: report.median_ci(s) for n, s in samples.items()},
                                    "kernels": {n: self.compiled[n].tuned_tasks for n in names}})
        return self.res["windows"][-1]["cells"]


def run(a, results: Path) -> dict:
    from schedb import extract_tasks, load_model, lower, parse_target

    target = parse_target(None)
    lowered = lower(load_model(a.model), target)
    tasks = extract_tasks(lowered, target)
    run_dir = Path(a.run or ROOT / "fixtures" / a.model)
    search = Search(run_dir, tasks)
    pairs = {s: json.loads((results / "pairs" / f"{s}_to_{a.model}.json").read_text())
             for s in a.sources.split(",")}
    res = {"machine": report.describe(), "started": report.now(), "args": vars(a), "model": a.model,
           "metaschedule": {"wall_time_s": search.wall_s, "tasks": len(search.steps),
                            "trials_per_task": search.per_task, "last_batch_s": search.events[-1],
                            "run": str(run_dir.resolve().relative_to(ROOT)), "chosen": True},
           "sources": {s: {"T_s": p["search_wall_s"], "droplet_wall_s": p["droplet_wall_s"]}
                       for s, p in pairs.items()},
           "windows": []}
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    w = Windows(lowered, tasks, target, search, a.rounds, res, work)
    # 1. The curve, MetaSchedule at each T and the models it is compared with, in one window.
    ev = search.events
    points = [ev[i] for i in log_points(ev, a.points)]
    curve = [w.ms_at(t) for t in points]
    at_T = {s: w.ms_at(v["T_s"]) for s, v in res["sources"].items()}
    w.add("untuned", None)
    for s, p in pairs.items():
        for v, refined in (("transfer", False), ("transfer+droplet", True)):
            w.add(f"{s}: {v}", pair_database(p, tasks, target, refined))
    first = w.window(list(dict.fromkeys([*curve, *at_T.values(), "untuned",
                                         *(f"{s}: {v}" for s in pairs for v in ("transfer", "transfer+droplet"))])))
    res["curve"] = [{"t_s": t, **first[n]} for t, n in zip(points, curve)]
    res["untuned"], res["end"] = first["untuned"], first[curve[-1]]
    for s, v in res["sources"].items():
        v["at_T"] = first[at_T[s]]
        v["cells"] = {k: first[f"{s}: {k}"] for k in ("transfer", "transfer+droplet")}
        v["share_of_full_speedup"] = {k: (res["untuned"]["median"] / c["median"] - 1)
                                      / (res["untuned"]["median"] / res["end"]["median"] - 1)
                                      for k, c in v["cells"].items()}
        v.update(match(s, v, first, points, curve, ev, w.window, w.ms_at))
    res["warm"] = warm_curve(results)
    res["finished"] = report.now()
    res["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


def match(src: str, v: dict, first: dict, points: list, curve: list, ev: list, window, ms_at) -> dict:
    """Time to match ``src``'s transfer + droplet: the first curve point at or below it, then
    bisection over the timeline between it and the point before, each step in a window of
    its own beside the goal."""
    goal = f"{src}: transfer+droplet"
    hits = [t for t, n in zip(points, curve) if at_or_below(first[n], first[goal])]
    if not hits:
        return {"matched": False, "bracket_s": [points[-1], None], "time_to_match_ratio": points[-1] / v["T_s"]}
    hi = ev.index(hits[0])
    lo = max((ev.index(t) for t in points if t < hits[0]), default=-1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cells = window([ms_at(ev[mid]), goal])
        lo, hi = (lo, mid) if at_or_below(cells[ms_at(ev[mid])], cells[goal]) else (mid, hi)
    return {"matched": True, "bracket_s": [ev[lo] if lo >= 0 else 0.0, ev[hi]], "time_to_match_s": ev[hi],
            "time_to_match_ratio": ev[hi] / v["T_s"]}


def warm_curve(results: Path) -> dict | None:
    """bench_warm's warm-started run (another window), shifted by its transfer's wall time."""
    warm, deep = results / "warm.json", results / "deep" / "alexnet+resnet50_to_googlenet.json"
    if not (warm.exists() and deep.exists()):
        return None
    w, shift = json.loads(warm.read_text()), json.loads(deep.read_text())["search_wall_s"]
    pts = [{"t_s": shift + float(k.split()[1]), **c} for k, c in w["cells"].items() if k.startswith("warm ")]
    return {"transfer_wall_s": shift, "points": pts, "transferred": w["cells"]["transferred"],
            "timed": w["finished"]}


def render(res: dict):
    rows = ["| source | T (transfer + droplet wall time) | MetaSchedule at T | transfer | transfer + droplet "
            "| MetaSchedule time to match transfer + droplet | share of the run's speed-up (transfer / + droplet) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for src, s in res["sources"].items():
        c = s["cells"]
        lo, hi = s["bracket_s"]
        found = (f"{s['time_to_match_s']:.0f} s (bracket {lo:.0f}-{hi:.0f} s) = **{s['time_to_match_ratio']:.1f}x T**"
                 if s["matched"] else f"not by its last batch ({lo:.0f} s): **> {s['time_to_match_ratio']:.1f}x T**")
        sh = s["share_of_full_speedup"]
        rows.append(f"| {src} | {s['T_s']:.0f} s (droplet {s['droplet_wall_s']:.0f} s) "
                    f"| {report.fmt_ci(s['at_T'])} | {report.fmt_ci(c['transfer'])} "
                    f"| {report.fmt_ci(c['transfer+droplet'])} | {found} "
                    f"| {sh['transfer']:.0%} / {sh['transfer+droplet']:.0%} |")
    m = res["metaschedule"]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"Target {res['model']}. MetaSchedule from scratch = `schedb tune` run `{m['run']}` "
        f"({m['tasks']} tasks, at most {m['trials_per_task']} trials per task, last batch at "
        f"{m['last_batch_s']:.0f} s), replayed from its timeline: {len(res['curve'])} log-spaced points"
        + (", at each the records measured by then and the untuned kernel chosen side by side as `tune --db` "
           "ends" if m.get("chosen") else "") + ", "
        f"untuned {report.fmt_ci(res['untuned'])}, at its end {report.fmt_ci(res['end'])}. T: the wall time of "
        "`schedb transfer --droplet` (lowering to the final model compiled; its end-to-end timing skipped), "
        f"from the pairs run. Latencies: median [95% interval] over {res['args']['rounds']} interleaved rounds, "
        "all in one window; the crossing is bisected in windows of its own beside transfer + droplet. Time to "
        "match: the first point whose interval lies at or below transfer + droplet's at both ends. Share of the "
        "run's speed-up: (untuned/transfer - 1) / (untuned/end - 1).", "", *rows])

    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    curve = res["curve"]
    ax.errorbar([p["t_s"] for p in curve], [p["median"] for p in curve],
                yerr=[[p["median"] - p["ci_low"] for p in curve], [p["ci_high"] - p["median"] for p in curve]],
                fmt="o-", color="#555", capsize=2, label="MetaSchedule from scratch")
    for (src, s), col in zip(res["sources"].items(), ["#1f5fa0", "#c0392b"]):
        c = s["cells"]["transfer+droplet"]
        ax.errorbar([s["T_s"]], [c["median"]], yerr=[[c["median"] - c["ci_low"]], [c["ci_high"] - c["median"]]],
                    fmt="*", ms=12, color=col, label=f"transfer + droplet from {src}")
        ax.axhline(c["median"], color=col, lw=0.8, ls="--")
    if res.get("warm"):
        w = res["warm"]["points"]
        ax.plot([p["t_s"] for p in w], [p["median"] for p in w], "^-", color="#27ae60", ms=5,
                label="tune --db warm-started after a transfer (another window)")
        ax.plot([res["warm"]["transfer_wall_s"]], [res["warm"]["transferred"]["median"]], "*", ms=12, mfc="none",
                color="#27ae60", label="its transfer (no droplet), timed in that window")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("search time, s (log)")
    ax.set_ylabel(f"{res['model']} latency, ms (log)")
    ax.set_title(f"{res['model']}: transfer-tuning vs MetaSchedule at equal search time")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return md, fig


if __name__ == "__main__":
    main()
