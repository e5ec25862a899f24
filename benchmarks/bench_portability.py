"""Portability: does a database tuned on another CPU help as much as one tuned here?

The README quick start (GoogLeNet from the resnet50 + alexnet fixtures, googlenet's own
records excluded), run twice on this host from the same records under two labels:

- "same target": every record relabelled to this host's canonical target;
- "foreign target": every record relabelled to another CPU's target (znver4, or
  emeraldrapids on a znver4 host), so schedb sees only foreign records;
- "same target, again": the first search repeated, to show how far two searches from the
  very same records land apart (each picks its winners by noisy measurements).

The label is the only difference, so this tests, on any host, that records of another CPU
are found, replayed and measured as candidates just like the host's own. Then untuned,
the three transfers and PyTorch eager are timed **interleaved** round by round; the
results are the medians of the per-round ratios foreign / same and again / same, with
their 95% intervals (1.0 = no difference).

    python benchmarks/bench_portability.py            # search (resumable) + measure
    python benchmarks/bench_portability.py --replot
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import queries
import report
from shared import base_db, by_source, copy_db, interleaved, pair_database, scratch

SOURCES = ["resnet50", "alexnet"]
MODEL = "googlenet"
OUT = report.RESULTS / "portability"  # --results moves it


def foreign_target(here: str) -> str:
    """A canonical llvm target of another CPU than ``here`` (also AVX-512)."""
    from schedb import canonical, parse_target

    cfg = json.loads(here)
    cfg["mcpu"] = "emeraldrapids" if cfg.get("mcpu") == "znver4" else "znver4"
    return canonical(parse_target(cfg))


def slug(variant: str) -> str:
    return variant.replace(",", "").replace(" ", "_")


def relabelled(base: Path, dst: Path, target: str) -> Path:
    """A copy of ``base`` whose records all claim ``target``."""
    if not dst.exists():
        copy_db(base, dst)
        queries.relabel(dst, target)
    return dst


def search(variant: str, db: Path, target) -> dict:
    from schedb import load_model, Options, Store, transfer

    out = OUT / f"{slug(variant)}.json"
    if out.exists():
        return json.loads(out.read_text())
    store = Store(db)
    machine, started, t0 = report.describe(), report.now(), time.perf_counter()
    rep = transfer(store, load_model(MODEL), target, Options(exclude=[MODEL], e2e_repeat=0),
                   progress=lambda d, n, r: print(f"  {variant} {d}/{n} {r.task}: {r.source}", file=sys.stderr))
    store.close()
    res = {"variant": variant, "db": str(db), "machine": machine, "started": started, "finished": report.now(),
           "load_average_before": machine["load_average_at_start"],
           "wall_s": round(time.perf_counter() - t0, 1), **rep.as_dict()}
    OUT.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res


def counts(rep: dict) -> dict:
    tasks = rep["tasks"]
    return by_source(tasks) | {
        "tasks": len(tasks), "search_time_s": round(rep["search_time_s"], 1), "measured": rep["measured"],
        "search_wall_s": round(rep["search_wall_s"], 1),
        "notes": rep.get("notes", [])}


def measure(runs: dict, target, rounds: int) -> dict:
    from schedb import compile_model, extract_tasks, load_model, lower

    lowered = lower(load_model(MODEL), target)
    tasks = extract_tasks(lowered, target)
    dbs = {"untuned": None, **{v: pair_database(r, tasks, target, refined=False) for v, r in runs.items()}}
    compiled = {name: compile_model(lowered, target, db) for name, db in dbs.items()}
    load = os.getloadavg()
    samples = interleaved(lowered, compiled, rounds, with_torch=True)
    same = samples["same target"]
    return {
        "rounds": rounds, "samples_ms": samples,
        "cells": {name: report.median_ci(s) for name, s in samples.items()},
        "ratio_over_same": {v: report.median_ci([x / s for x, s in zip(samples[v], same)])
                            for v in runs if v != "same target"},
        "speedup_over_untuned": {v: report.median_ci([u / x for u, x in zip(samples["untuned"], samples[v])])
                                 for v in runs},
        "checks": {name: c.as_dict() for name, c in compiled.items()},
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def render(res: dict):
    from schedb import label

    t = res["timing"]
    rows = ["| records labelled | tasks: exact / neighbour / anchor / searched / untuned | search wall time | latency "
            "| speed-up over untuned |", "| --- | --- | --- | --- | --- |"]
    for v, c in res["search"].items():
        s = t["speedup_over_untuned"][v]
        rows.append(f"| {v} ({label(res['targets'][v])}) | {c['exact']} / {c['neighbor']} / {c['anchor']} / "
                    f"{c['searched']} / {c['untuned']} of {c['tasks']} | {c['search_wall_s']:.0f} s | {report.fmt_ci(t['cells'][v])} "
                    f"| {report.fmt_ci(s, 'x', 1)} |")
    r, again = t["ratio_over_same"]["foreign target"], t["ratio_over_same"]["same target, again"]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"GoogLeNet transferred from the resnet50 + alexnet fixtures on this host ({label(res['host'])}), "
        f"the records labelled as this host's target or as another CPU's; median [95% interval] over "
        f"{t['rounds']} interleaved rounds; search wall time: `schedb transfer` from lowering to the final model "
        f"compiled (`search_wall_s`, no end-to-end timing inside); untuned {report.fmt_ci(t['cells']['untuned'])}, PyTorch eager "
        f"{report.fmt_ci(t['cells']['pytorch eager'])}. Per-round latency ratio foreign / same: "
        f"**{report.fmt_ci(r, '', 3).strip()}**; between two searches from the same records (again / same): "
        f"{report.fmt_ci(again, '', 3).strip()}.", "", *rows])
    return md, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", default=scratch("portability"))
    ap.add_argument("--replot", action="store_true")
    ap.add_argument("--results", default=str(report.RESULTS))
    a = ap.parse_args(argv)
    global OUT
    results = Path(a.results)
    OUT = results / "portability"
    if a.replot:
        report.replot(results / "portability.json", render)
        return

    from schedb import canonical

    target = report.host_target()
    here = canonical(target)
    started = report.now()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    base = base_db(work, SOURCES)
    targets = {"same target": here, "foreign target": foreign_target(here), "same target, again": here}
    runs = {v: search(v, relabelled(base, base.parent / f"{slug(v)}.db", t), target) for v, t in targets.items()}
    res = {"machine": report.describe(), "host": here, "targets": targets,
           "search": {v: counts(r) for v, r in runs.items()}, "timing": measure(runs, target, a.rounds),
           "started": started, "finished": report.now()}
    report.publish("portability", res, render, results)


if __name__ == "__main__":
    main()
