"""The deep source database against PyTorch eager.

Per target model (alexnet, resnet50, googlenet), two builds on today's inference-grade
pipeline, each checked against PyTorch's output:

* **own fixture**: the model's own fixture as a user gets it from schedb: ingested, each
  task's best records and its untuned kernel chosen side by side (``schedb.choose``);
* **transferred from the other two**: ``transfer(..., Options(sources=<the other two>,
  exclude=[target]))`` (no droplet) in a copy of a database that holds the three fixtures,
  then compiled with the chosen schedule per task.

Both are timed **interleaved** with PyTorch eager (2 threads), round by round, while the
background fixture tuning (if any) is stopped. "x PyTorch" is the median of the per-round
ratios with its 95% interval. Then the 5 heaviest kernels of the target (weight x FLOPs)
are built from each variant's schedule and timed interleaved with the same layer in
PyTorch (layers.heaviest_kernels): GFLOP/s side by side, where the gap lies.

    python benchmarks/bench_deep.py [--models alexnet,resnet50,googlenet] [--rounds 15]
    python benchmarks/bench_deep.py --replot

A target's transfer is kept in results/NAME/SOURCES_to_TARGET.json and reused when rerun.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import report
from schedb import host_cores
from shared import SEEDS, base_db, by_source, interleaved, others, own_fixture, pair_database, scratch, search
from layers import TORCH, fixture_tuning_paused, heaviest_kernels, time_kernels

ROOT = Path(__file__).resolve().parents[1]
OWN, TRANSFERRED = "own fixture", "transferred from the other two"


def transfer_to(model: str, base: Path, target, keep: Path) -> dict:
    """The target's transfer from the other two (no droplet, no timing of its own), kept in ``keep``."""
    return search(others(model), model, base, target, droplet_trials=None, pair_dir=keep, e2e_repeat=0)


def variants(model: str, pair: dict, tasks, target, work: Path) -> tuple[dict, dict]:
    """{variant: MetaSchedule database} and the transfer's summary."""
    summary = {k: pair.get(k) for k in ("source", "wall_s", "search_wall_s", "search_time_s", "measured", "started")}
    summary["by_source"] = by_source(pair["tasks"])
    return {OWN: own_fixture(model, tasks, target, work),
            TRANSFERRED: pair_database(pair, tasks, target, refined=False)}, summary


def measure(model_name: str, pair: dict, target, a) -> dict:
    import torch

    from schedb import compile_model, extract_tasks, load_model, lower

    model = load_model(model_name)
    lowered = lower(model, target)
    tasks = extract_tasks(lowered, target)
    dbs, transfer = variants(model_name, pair, tasks, target, Path(a.work))
    compiled = {name: compile_model(lowered, target, db) for name, db in dbs.items()}
    kernels = heaviest_kernels(model, tasks, dbs, target, a.top, a.min_ms)
    torch.set_num_threads(host_cores())
    with fixture_tuning_paused() as pgid:
        time.sleep(2)  # let the stopped workers' cores go idle
        load = [round(x, 2) for x in os.getloadavg()]
        started = report.now()
        samples = interleaved(lowered, compiled, a.rounds, with_torch=True)
        time_kernels(kernels, a.rounds)
        load_end = [round(x, 2) for x in os.getloadavg()]
    t = samples[TORCH]
    return {
        "model": model_name, "sources": others(model_name), "rounds": a.rounds, "timing_started": started,
        "paused_pgid": pgid, "load_average_paused": load, "load_average_end_of_timing": load_end,
        "tasks": len(tasks), "transfer": transfer,
        "checks": {name: c.as_dict() for name, c in compiled.items()},
        "samples_ms": samples, "cells": {name: report.median_ci(s) for name, s in samples.items()},
        "over_pytorch": {name: report.median_ci([x / y for x, y in zip(samples[name], t)]) for name in compiled},
        "kernels": [{x: v for x, v in k.items() if not x.startswith("_")} for k in kernels],
    }


def render(res: dict):
    goals = res["goals"]
    rows = ["| target | build | latency | x PyTorch eager | goal | met |", "| --- | --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        for name, r in m["over_pytorch"].items():
            g = goals[m["model"]].get(name)
            met = "" if g is None else report.verdict(r, g)
            rows.append(f"| {m['model']} | {name} | {report.fmt_ci(m['cells'][name])} "
                        f"| {report.fmt_ci(r, 'x', 2)} | {'' if g is None else f'<= {g}x'} | {met} |")
        rows.append(f"| {m['model']} | PyTorch eager | {report.fmt_ci(m['cells'][TORCH])} | 1 | | |")
    krows = ["| target | kernel (weight) | GFLOP | " + " | ".join(f"{n} GFLOP/s" for n in (OWN, TRANSFERRED, TORCH))
             + " |", "| --- | --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        for k in m["kernels"]:
            cells = [f"{k['gflops'][n]:.1f}" if n in k["gflops"] else "untuned" if n in k["untuned_in"] else "-"
                     for n in (OWN, TRANSFERRED, TORCH)]
            krows.append(f"| {m['model']} | `{k['task'][:48]}` ({k['weight']}) | {k['flops'] / 1e9:.3f} | "
                         + " | ".join(cells) + " |")
    srcs = "; ".join(f"{m['model']} from {m['transfer']['source']}: "
                     + ", ".join(f"{n} {s}" for s, n in m["transfer"]["by_source"].items() if n)
                     + f" of {m['tasks']} tasks, {m['transfer']['wall_s']:.0f} s" for m in res["models"])
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"Latency: median [95% interval] over {res['models'][0]['rounds']} interleaved rounds, the background "
        "tuning stopped; x PyTorch: median of the per-round ratios. Transfers (no droplet): " + srcs + ".", "",
        *rows, "", "The 5 heaviest kernels of each target (weight x FLOPs), each built alone and timed "
        "interleaved with the same layer in PyTorch eager (conv + batch norm or bias + residual + ReLU); "
        "GFLOP/s = the kernel's FLOPs / median time.", "", *krows])
    return md, None


GOALS = {"alexnet": {OWN: 1.5, TRANSFERRED: 2.0}, "resnet50": {OWN: 1.5, TRANSFERRED: 2.0},
         "googlenet": {TRANSFERRED: 1.0}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="alexnet,resnet50,googlenet")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--top", type=int, default=5, help="heaviest kernels timed alone")
    ap.add_argument("--min-ms", type=float, default=20.0, help="each kernel sample runs at least this long")
    ap.add_argument("--work", default=scratch("deep"), help="scratch folder for the databases")
    ap.add_argument("--search-only", action="store_true", help="run (and keep) the transfers, time nothing")
    a = report.parse(ap, argv, "deep", render)
    if a is None:
        return
    target = report.host_target()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    models = a.models.split(",")
    base = base_db(work, SEEDS)
    res = {"machine": report.describe(), "started": report.now(), "args": vars(a), "goals": GOALS, "models": []}
    for m in models:
        print(f"{m}: transfer from {'+'.join(others(m))}, compile, time", file=sys.stderr)
        pair = transfer_to(m, base, target, report.RESULTS / a.name)
        if not a.search_only:
            res["models"].append(measure(m, pair, target, a))
    if a.search_only:
        return
    res["finished"] = report.now()
    report.publish(a.name, res, render)


if __name__ == "__main__":
    main()
