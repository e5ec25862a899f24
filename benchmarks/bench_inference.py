"""Inference-grade compilation: weights bound and folded vs weights as runtime inputs.

Each seed model is compiled with the schedules of its own fixture work dir twice: as
schedb now lowers it (weights bound as constants, constant subgraphs folded) and with
``bind_params=False`` (the pipeline the fixtures were tuned with), then both are timed
**interleaved** with PyTorch eager, round by round. Each cell is the median over the
rounds with its 95% interval; "x PyTorch" is the median of the per-round ratios.

    python benchmarks/bench_inference.py [--models alexnet,resnet50,googlenet] [--name inference]
    python benchmarks/bench_inference.py --replot
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import report

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"bound + folded": True, "params as inputs": False}


def measure(model: str, target, rounds: int) -> dict:
    from schedb import compile_model, extract_tasks, load_model, lower, open_workdir, time_torch, time_vm
    from schedb.ingest.workdir import tuned_with_bound_params

    db = open_workdir(ROOT / "fixtures" / model)
    compiled, tasks, lowered = {}, {}, None
    for name, bind in VARIANTS.items():
        lw = lower(load_model(model), target, bind_params=bind)
        lowered = lowered or lw  # the same model and inputs: either times PyTorch
        compiled[name] = (compile_model(lw, target, db), lw)
        tasks[name] = len(extract_tasks(lw, target))
    load = os.getloadavg()
    samples: dict = {name: [] for name in [*VARIANTS, "pytorch eager"]}
    for _ in range(rounds):  # one run of every variant and of PyTorch per round
        for name, (c, lw) in compiled.items():
            samples[name] += time_vm(c, lw, repeat=1).samples
        samples["pytorch eager"] += time_torch(lowered, repeat=1).samples
    torch = samples["pytorch eager"]
    return {
        "model": model, "rounds": rounds, "samples_ms": samples, "tasks": tasks,
        "fixture_weights": "bound" if tuned_with_bound_params(ROOT / "fixtures" / model) else "inputs",
        "scheduled": {name: c.tuned_tasks for name, (c, _) in compiled.items()},
        "max_abs_err": {name: c.max_abs_err for name, (c, _) in compiled.items()},
        "cells": {name: report.median_ci(s) for name, s in samples.items()},
        "over_pytorch": {name: report.median_ci([x / t for x, t in zip(samples[name], torch)]) for name in VARIANTS},
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def render(res: dict):
    rows = ["| model (fixture tuned with weights) | pipeline | tasks (fixture schedules applied) | latency "
            "| x PyTorch eager |", "| --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        for name in VARIANTS:
            rows.append(f"| {m['model']} ({m.get('fixture_weights', 'inputs')}) | {name} "
                        f"| {m['tasks'][name]} ({m['scheduled'][name]}) "
                        f"| {report.fmt_ci(m['cells'][name])} | {report.fmt_ci(m['over_pytorch'][name], 'x', 2)} |")
        rows.append(f"| {m['model']} | PyTorch eager | | {report.fmt_ci(m['cells']['pytorch eager'])} | 1 |")
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"Each model with its own fixture's schedules, median [95% interval] over {res['models'][0]['rounds']} "
        "interleaved rounds; x PyTorch: median of per-round ratios. A fixture tuned with the weights as inputs "
        "fits the bound build only where folding leaves a kernel unchanged (not the batch-norm epilogues of "
        "resnet50 and googlenet); its other kernels are untuned there, and the other way round.", "", *rows])
    return md, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="alexnet,resnet50,googlenet")
    ap.add_argument("--rounds", type=int, default=15)
    a = report.parse(ap, argv, "inference", render)
    if a is None:
        return
    target = report.host_target()
    res = {"machine": report.describe(), "started": report.now()}
    res["models"] = [measure(m, target, a.rounds) for m in a.models.split(",")]
    res["finished"] = report.now()
    report.publish(a.name, res, render)


if __name__ == "__main__":
    main()
