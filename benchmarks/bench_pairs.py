"""Experiment 1, the seed's table: transfer-tuning between resnet50, googlenet and alexnet.

For every ordered pair (source -> target), six in all, schedb transfers the source's
fixture schedules to the target (``transfer(..., Options(sources=[source],
exclude=[target], droplet=True))``) in a database of its own, built from the bundled
fixtures, so the target never sees its own records nor what another pair derived.

Then, per target, every variant is compiled (and checked against PyTorch) and timed
**interleaved**, round by round, in one window: untuned, tuned on its own (the fixture as
a user gets it from schedb: each task's best records and its untuned kernel chosen side
by side), transfer alone and transfer + droplet from each source, and PyTorch eager.
Each cell is the median over the rounds with a distribution-free 95% interval (binomial
order statistics, ``report.median_ci``); the droplet gain is the median of the per-round
ratios transfer / transfer+droplet, with its interval.

    python benchmarks/bench_pairs.py               # search (resumable) + measure
    python benchmarks/bench_pairs.py --replot      # md/png from results/pairs.json

Each step is kept and skipped when rerun: the search of a pair in
results/pairs/SOURCE_to_TARGET.json, the timing of a target in results/pairs/TARGET.json
(delete it to time again); results/pairs.{json,md,png} combine the targets timed so far.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import report
from shared import base_db, by_source, interleaved, own_fixture, pair_database, scratch, search

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["resnet50", "googlenet", "alexnet"]
PAIR_DIR = report.RESULTS / "pairs"  # --results moves it (smoke runs on tiny models)


def measure_target(target_model: str, pairs: list[dict], target, rounds: int, work: Path) -> dict:
    out = PAIR_DIR / f"{target_model}.json"
    if out.exists():
        return json.loads(out.read_text())
    from schedb import compile_model, extract_tasks, load_model, lower

    lowered = lower(load_model(target_model), target)
    tasks = extract_tasks(lowered, target)
    dbs = {"untuned": None, "tuned on its own": own_fixture(target_model, tasks, target, work)}
    for p in pairs:
        dbs[f"{p['source']}: transfer"] = pair_database(p, tasks, target, refined=False)
        dbs[f"{p['source']}: transfer+droplet"] = pair_database(p, tasks, target, refined=True)
    compiled, checks = {}, {}
    for name, db in dbs.items():
        print(f"  compile {target_model} / {name}", file=sys.stderr)
        compiled[name] = compile_model(lowered, target, db)
        checks[name] = compiled[name].as_dict()
    machine, started = report.describe(), report.now()
    samples = interleaved(lowered, compiled, rounds, with_torch=True)
    cells = {name: report.median_ci(s) for name, s in samples.items()}
    ratios = {p["source"]: [x / y for x, y in zip(samples[f"{p['source']}: transfer"],
                                                   samples[f"{p['source']}: transfer+droplet"])] for p in pairs}
    gains = {src: report.median_ci(r) for src, r in ratios.items()}
    res = {"target_model": target_model, "rounds": rounds, "cells": cells, "samples_ms": samples,
            "droplet_gain": gains, "droplet_ratios": ratios, "checks": checks, "machine": machine,
            "started": started, "finished": report.now(),
            "load_average_before": machine["load_average_at_start"],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "search": {p["source"]: {"search_time_s": round(p["search_time_s"], 1), "measured": p["measured"],
                                     "search_wall_s": round(p["search_wall_s"], 1),
                                     "droplet_wall_s": round(p["droplet_wall_s"], 1),
                                     "droplet_trials": sum(t["droplet_trials"] for t in p["tasks"]),
                                     "accepted": sum(bool(t["refined_accepted"]) for t in p["tasks"]),
                                     "tasks": len(p["tasks"]), **by_source(p["tasks"])}
                       for p in pairs}}
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res


def droplet_summary(targets: list[dict], pairs: dict | None = None) -> dict:
    """Droplet end to end over every pair timed: the geometric mean of the per-pair median
    gains with a bootstrap interval over the per-round ratios, droplet's wall time as a
    share of the transfer's without it, and (given the pairs' search reports by name) where
    droplet could act (droplet_reach)."""
    ratios = [t["droplet_ratios"][src] for t in targets for src in t["search"]]
    shares = {f"{src} -> {t['target_model']}": s["droplet_wall_s"] / (s["search_wall_s"] - s["droplet_wall_s"])
              for t in targets for src, s in t["search"].items()}
    reach = {name: droplet_reach(p) for name, p in (pairs or {}).items()}
    return {"gain": report.geomean_ci(ratios), "droplet_time_share": shares, "reach": reach}


def runs_at(targets: list[dict], pairs: dict) -> list[str]:
    """The commits the pairs were searched and the targets timed at (the combined result
    names only the commit of its final step)."""
    return sorted({x["machine"]["schedb_commit"] + (" (uncommitted changes)" if x["machine"]["dirty"] else "")
                   for x in [*targets, *pairs.values()] if "machine" in x})


def pair_reports() -> dict:
    """The pairs' search reports kept in PAIR_DIR, by name."""
    return {f.stem: json.loads(f.read_text()) for f in sorted(PAIR_DIR.glob("*_to_*.json"))}


def droplet_reach(pair: dict) -> dict:
    """From one search report, the model's kernel time (weight x the kernel time the search
    measured, its final pick) split by what droplet did there: searched, and of that
    accepted; and the end-to-end gain the accepted refinements predict if kernel times add
    up (each by its speed-up over its start in the same batch)."""
    def best(t):
        return t["refined_us"] or t["transferred_us"] or t["untuned_us"] or 0.0

    tasks = pair["tasks"]
    total = sum(t["weight"] * best(t) for t in tasks)
    before = sum(t["weight"] * best(t) * (t["droplet_speedup"] if t["refined_accepted"] else 1) for t in tasks)
    searched = [t for t in tasks if t["droplet_trials"]]
    accepted = [t for t in searched if t["refined_accepted"]]
    return {"kernel_sum_ms": total / 1e3, "searched_share": sum(t["weight"] * best(t) for t in searched) / total,
            "accepted_share": sum(t["weight"] * best(t) for t in accepted) / total,
            "searched": len(searched), "accepted": len(accepted), "predicted_gain": before / total}


def torch_ratio(timed: dict, variant: str) -> dict:
    """``variant`` over PyTorch eager, round by round, as median_ci."""
    s = timed["samples_ms"]
    return report.median_ci([x / y for x, y in zip(s[variant], s["pytorch eager"])])


def render(res: dict):
    rows = ["| source -> target | untuned | tuned on its own | transfer | transfer + droplet | droplet gain "
            "| PyTorch eager | search wall time (droplet) | tasks by source |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in res["targets"]:
        c = t["cells"]
        for src, s in t["search"].items():
            g = t["droplet_gain"][src]
            rows.append(
                f"| {src} -> {t['target_model']} | {report.fmt_ci(c['untuned'])} "
                f"| {report.fmt_ci(c['tuned on its own'])} | {report.fmt_ci(c[f'{src}: transfer'])} "
                f"| {report.fmt_ci(c[f'{src}: transfer+droplet'])} "
                f"| {g['median']:.3f}x [{g['ci_low']:.3f}, {g['ci_high']:.3f}] "
                f"| {report.fmt_ci(c['pytorch eager'])} | {s['search_wall_s']:.0f} s ({s['droplet_wall_s']:.0f} s, "
                f"{s['accepted']} accepted) | {s['exact']} exact, {s['neighbor']} neighbour, {s['anchor']} anchor, "
                f"{s['searched']} searched, {s['untuned']} untuned of {s['tasks']} |")
    d = res["droplet"]
    n = res["targets"][0]["rounds"]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        *([f"Each pair searched and each target timed at schedb {', '.join(res['runs_at'])}.", ""]
          if res.get("runs_at") else []),
        f"End-to-end latency, median [95% interval] over {n} interleaved rounds per target "
        "(distribution-free interval for the median from binomial order statistics). "
        "Droplet gain: median of per-round ratios transfer / transfer+droplet. "
        "Search wall time: `schedb transfer` from lowering to the final model compiled and checked "
        "(`search_wall_s`; its own end-to-end timing skipped), of which droplet; accepted: tasks whose "
        "refinement passed p <= 0.05. Load average (1 min) when each "
        "target was timed: " + ", ".join(f"{t['target_model']} {t['load_average_before'][0]}"
                                         for t in res["targets"]) + ".", "",
        *rows, "",
        f"Droplet end to end over {d['gain']['groups']} pairs: geometric mean gain "
        f"**{d['gain']['geomean']:.3f}x [{d['gain']['ci_low']:.3f}, {d['gain']['ci_high']:.3f}]** (95% bootstrap "
        "interval over the per-round ratios); droplet's time over the transfer's without it: "
        + ", ".join(f"{k} {v:.0%}" for k, v in d["droplet_time_share"].items()) + ".", "",
        *([] if not d.get("reach") else [
            "Where droplet could act, from each search's own kernel measurements (weight x kernel time): share "
            "of the kernel time in the tasks it searched / in those whose refinement was accepted, and the "
            "gain those refinements predict end to end: " + "; ".join(
                f"{k.replace('_to_', ' -> ')} {r['searched_share']:.0%} / {r['accepted_share']:.0%} "
                f"({r['accepted']} of {r['searched']} tasks), {r['predicted_gain']:.3f}x"
                for k, r in d["reach"].items()) + ".", ""]),
        "Against PyTorch eager in the same rounds (median of the per-round ratios, 95% interval; below 1 is "
        "faster than PyTorch): " + "; ".join(
            f"{t['target_model']} from {src} {report.fmt_ci(torch_ratio(t, f'{src}: transfer+droplet'), 'x', 2)}"
            for t in res["targets"] for src in t["search"]) + "; tuned on its own: " + "; ".join(
            f"{t['target_model']} {report.fmt_ci(torch_ratio(t, 'tuned on its own'), 'x', 2)}"
            for t in res["targets"]) + "."])
    return md, figure(res["targets"])


def figure(targets: list[dict]):
    plt = report.pyplot()
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4.2), squeeze=False)
    for ax, t in zip(axes[0], targets):
        names = list(t["cells"])
        med = [t["cells"][k]["median"] for k in names]
        err = [[m - t["cells"][k]["ci_low"] for k, m in zip(names, med)],
               [t["cells"][k]["ci_high"] - m for k, m in zip(names, med)]]
        ax.bar(range(len(names)), med, yerr=err, capsize=3,
               color=["#999", "#555"] + ["#6a9fd4", "#1f5fa0"] * len(t["search"]) + ["#d98c3a"])
        ax.set_xticks(range(len(names)), [k.replace(": ", ":\n") for k in names], rotation=60, ha="right",
                      fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"target {t['target_model']}")
        ax.set_ylabel("latency, ms (log)")
    fig.suptitle("Transfer-tuning between the seed's models (median, 95% interval)")
    fig.tight_layout()
    return fig


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="the models (each has a fixture)")
    ap.add_argument("--targets", default=None, help="only these targets now (default: all models)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds per target")
    ap.add_argument("--droplet-trials", type=int, default=16, help="per task")
    ap.add_argument("--work", default=scratch("pairs"), help="scratch folder for the pair databases")
    ap.add_argument("--search-only", action="store_true", help="run the transfers, do not time")
    ap.add_argument("--replot", action="store_true", help="re-render md/png from results/pairs.json")
    ap.add_argument("--results", default=str(report.RESULTS))
    return ap.parse_args(argv)


def main(argv=None):
    global PAIR_DIR
    a = parse(argv)
    results = Path(a.results)
    PAIR_DIR = results / "pairs"
    if a.replot:
        replot(results)
        return
    run(a)
    res = None if a.search_only else summary(a)
    if res is not None:
        report.publish("pairs", res, render, results)


def replot(results: Path):
    """The droplet summary is recomputed from the raw samples and search reports kept."""
    res = json.loads((results / "pairs.json").read_text())
    reports = pair_reports()
    res["droplet"], res["runs_at"] = droplet_summary(res["targets"], reports), runs_at(res["targets"], reports)
    res.pop("markdown", None)
    print("->", report.write("pairs", res, *render(res), folder=results))


def run(a):
    """Every pair searched, and each target timed against its pairs (unless --search-only)."""
    from schedb import parse_target

    target = parse_target(None)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    models = a.models.split(",")
    base = base_db(work, models)
    for t in (a.targets.split(",") if a.targets else models):
        pairs = []
        for s in models:
            if s != t:
                print(f"search {s} -> {t}", file=sys.stderr)
                pairs.append(search([s], t, base, target, a.droplet_trials, PAIR_DIR))
        if not a.search_only:
            measure_target(t, pairs, target, a.rounds, Path(a.work))


def summary(a) -> dict | None:
    """The result over every target timed so far (each search's own times are in results/pairs/)."""
    timed = [json.loads((PAIR_DIR / f"{m}.json").read_text()) for m in a.models.split(",")
             if (PAIR_DIR / f"{m}.json").exists()]
    if not timed:
        return None
    reports = pair_reports()
    started = min((t["started"] for t in timed if t.get("started")), default=None)
    return {"machine": report.describe(), "started": started, "finished": report.now(), "args": vars(a),
            "targets": timed,
            "droplet": droplet_summary(timed, reports), "runs_at": runs_at(timed, reports)}

if __name__ == "__main__":
    main()
