"""Schedules across vector ISAs: the AVX-512 fixtures serving an AVX2 CPU.

This machine has AVX-512; an AVX2 host is imitated by construction: kernels built for
``llvm -mcpu=haswell`` (8 lanes, 16 vector registers; this CPU runs them) and PyTorch eager in
a worker process held to AVX2 by oneDNN's ``ONEDNN_MAX_CPU_ISA=AVX2`` (read once, when the
process starts). Per model, builds for both targets from the fixtures (tuned for AVX-512):

- **AVX-512** (this host's target): the model's own fixture (each task's records and untuned
  kernel chosen side by side, as ``tune --db`` leaves it) and transferred from the other two
  (no droplet); against PyTorch eager at its full ISA;
- **AVX2**: the same as ``schedb transfer`` gives them on the AVX2 target (its defaults: the
  records adapted to AVX2 and measured beside them as tuned, the tasks of another ISA
  searched natively), built with each task's final choice; against PyTorch held to AVX2.

All builds of a model and both PyTorchs are timed **interleaved**, one run each per round.
x PyTorch is the median of the per-round ratios (an AVX2 build over PyTorch AVX2, an AVX-512
build over PyTorch at full ISA); "AVX2 / AVX-512" is the median of the per-round ratio of
the two, with its 95% interval. Goals, judged on the whole interval (met: its upper end
meets the goal): googlenet transferred on AVX2 <= 1.0x PyTorch; alexnet and resnet50, own
fixture and transferred, AVX2 / AVX-512 <= 1.25.

    python benchmarks/bench_isa.py             # on a quiet machine: transfers (kept, resumable), timing
    python benchmarks/bench_isa.py --quick     # smoke run: alexnet, small budgets, 3 rounds, scratch results
    python benchmarks/bench_isa.py --native-trials 64 --native-budget 600 --name isa_native64   # a larger native search (kept apart by name)
    python benchmarks/bench_isa.py --native-budget 1200 --native-trials 128 --name isa_native128 --versus isa_native64 --work /tmp/isa128
    python benchmarks/bench_isa.py --native-trials 64 --native-budget 600 --native-per-iter 32 --name isa_batch32 --versus isa_native64 --work /tmp/isa32
    python benchmarks/bench_isa.py --replot

The transfers are kept in results/NAME/<target>/SOURCES_to_MODEL.json and reused when rerun.
``--versus OTHER`` also builds the AVX2 transfers kept by an earlier run named OTHER (other
native settings; their databases still in its ``--work``, and this run given another) and
times them in the same rounds: its rows carry ``[OTHER]`` and no verdict, and "this run /
OTHER" is the median of the per-round latency ratio of the two AVX2 builds, the one
comparison of the settings that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import report
from schedb import host_cores
from shared import SEEDS, SETTLE_S, base_db, by_source, others, own_fixture, pair_database, scratch, search

AVX512, AVX2 = "avx512", "avx2"
OWN, TRANSFERRED = "own fixture", "transferred from the other two"
TORCH = {AVX512: "pytorch eager", AVX2: "pytorch eager (AVX2)"}
GOALS = {"googlenet": {"over_pytorch": {f"{AVX2} {TRANSFERRED}": 1.0}},
         "alexnet": {"avx2_over_avx512": {OWN: 1.25, TRANSFERRED: 1.25}},
         "resnet50": {"avx2_over_avx512": {OWN: 1.25, TRANSFERRED: 1.25}}}


def avx2_target(host):
    """The host's target with the AVX2 CPU haswell in place of its own."""
    from schedb import load_intrinsics, parse_target

    cfg = {"kind": "llvm", "mcpu": "haswell", "num-cores": int(host.attrs["num-cores"])}
    target = parse_target(cfg)
    load_intrinsics(target)
    return target


class TorchWorker:
    """PyTorch eager on a model in a child process held to AVX2, one timed run per request."""

    def __init__(self, model: str):
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--torch-worker", model], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.proc.stdout.readline().strip() != "ready":
            sys.exit("the PyTorch (AVX2) worker did not start")

    def run(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def torch_worker(model_name: str):
    """The worker's side: load the model, warm up, then time one run per line read."""
    import torch

    from schedb import load_model

    model = load_model(model_name)
    torch.set_num_threads(host_cores())
    xs = [torch.from_numpy(x) for x in model.inputs]
    with torch.no_grad():
        model.torch_module(*xs)
        print("ready", flush=True)
        for _ in sys.stdin:
            model.torch_module(*xs)  # warm-up, as time_torch does in the parent
            t0 = time.perf_counter()
            model.torch_module(*xs)
            print((time.perf_counter() - t0) * 1e3, flush=True)


def transfers(model: str, targets: dict, work: Path, keep: Path, options: dict) -> dict:
    """{(isa, build): transfer report dict} for the AVX2 target (own fixture and the other two);
    the AVX-512 transfer from the other two (no native search: same ISA). Kept in ``keep``."""
    out = {}
    for isa, target in targets.items():
        base = base_db(work / isa, SEEDS)
        out[(isa, TRANSFERRED)] = search(others(model), model, base, target, None, keep / isa, options=options)
        if isa == AVX2 and model != "googlenet":
            out[(isa, OWN)] = search([model], model, base, target, None, keep / isa, exclude=[], options=options)
    return out


def kept(model: str, name: str, results: Path, work: Path) -> dict:
    """{(AVX2, "BUILD [NAME]"): transfer report} the AVX2 transfers the run ``name`` kept; their
    databases must lie outside this run's ``work``, where this run's transfers would replace them."""
    out = {}
    for build, sources in ((OWN, [model]), (TRANSFERRED, others(model))):
        if model == "googlenet" and build == OWN:
            continue
        path = results / name / AVX2 / f"{'+'.join(sources)}_to_{model}.json"
        if not path.exists() or not Path((pair := json.loads(path.read_text()))["db"]).exists():
            sys.exit(f"{path}: no kept transfer with its database, which --versus {name} needs")
        if Path(pair["db"]).resolve().is_relative_to(work.resolve()):
            sys.exit(f"{path}: its database is in this run's scratch folder {work}: give this run another --work")
        out[(AVX2, f"{build} [{name}]")] = pair
    return out


def builds(model: str, targets: dict, pairs: dict, work: Path) -> dict:
    """{"isa build": (Compiled, lowered)}: every build of the model, checked against PyTorch."""
    from schedb import compile_model, extract_tasks, load_model, lower

    out = {}
    for isa, target in targets.items():
        lowered = lower(load_model(model), target)
        tasks = extract_tasks(lowered, target)
        dbs = {n: pair_database(p, tasks, target, refined=False) for (i, n), p in pairs.items() if i == isa}
        if isa == AVX512 and model != "googlenet":
            dbs[OWN] = own_fixture(model, tasks, target, work / isa)
        for name in sorted(dbs, key=lambda n: ("[" in n, n)):  # own fixture, transferred, then --versus
            out[f"{isa} {name}"] = (compile_model(lowered, target, dbs[name]), lowered)
    return out


def measure(model: str, targets: dict, pairs: dict, work: Path, rounds: int) -> dict:
    from schedb.pipeline.evaluate import time_torch, time_vm

    compiled = builds(model, targets, pairs, work)
    lowered = next(iter(compiled.values()))[1]
    worker = TorchWorker(model)
    samples = {name: [] for name in [*compiled, TORCH[AVX512], TORCH[AVX2]]}
    load = [round(x, 2) for x in os.getloadavg()]
    started = report.now()
    try:
        for i in range(rounds):  # one run of every build and of both PyTorchs per round
            for name, (c, lw) in compiled.items():
                samples[name] += time_vm(c, lw, repeat=1).samples
            time.sleep(SETTLE_S)
            samples[TORCH[AVX512]] += time_torch(lowered, repeat=1).samples
            time.sleep(SETTLE_S)
            samples[TORCH[AVX2]].append(worker.run())
            time.sleep(SETTLE_S)
            print(f"  {model}: round {i + 1}/{rounds}", file=sys.stderr)
    finally:
        worker.close()
    over = {name: [x / y for x, y in zip(samples[name], samples[TORCH[name.split()[0]]])] for name in compiled}
    avx2 = {name.split(" ", 1)[1]: name for name in compiled if name.startswith(AVX2)}
    base = {b: b.split(" [")[0] for b in avx2}  # "own fixture [OTHER]" -> "own fixture"
    both = {b: f"{AVX512} {base[b]}" for b in avx2 if f"{AVX512} {base[b]}" in over}
    versus = {base[b]: (n, avx2[base[b]]) for b, n in avx2.items() if b != base[b]}
    return {
        "model": model, "rounds": rounds, "timing_started": started, "load_average_before": load,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "transfers": {f"{isa} {n}": summary(p) for (isa, n), p in pairs.items()},
        "checks": {name: c.as_dict() for name, (c, _) in compiled.items()},
        "samples_ms": samples, "cells": {name: report.median_ci(s) for name, s in samples.items()},
        "over_pytorch": {name: report.median_ci(r) for name, r in over.items()},
        "avx2_over_avx512": {n: report.median_ci([a / b for a, b in zip(over[avx2[n]], over[o])])
                             for n, o in both.items()},
        "this_over_versus": {b: report.median_ci([a / v for a, v in zip(samples[this], samples[other])])
                             for b, (other, this) in versus.items()},
    }


def summary(pair: dict) -> dict:
    """What a kept transfer report says about its search and the ISA."""
    return {"source": pair["source"], "wall_s": pair["wall_s"], "search_wall_s": pair["search_wall_s"],
            "measured": pair["measured"], "by_source": by_source(pair["tasks"]), "isa": pair.get("isa", {}),
            "started": pair["started"], "load_average_before": pair["load_average_before"]}


def render(res: dict):
    rows = ["| model | build | latency | x PyTorch eager (same ISA) | AVX2 / AVX-512 | goal | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        goals = res["goals"].get(m["model"], {})
        for name, r in m["over_pytorch"].items():
            isa, build = name.split(" ", 1)
            rel = m["avx2_over_avx512"].get(build) if isa == AVX2 else None
            goal, on = goals.get("over_pytorch", {}).get(name), r
            if goal is None and rel is not None:
                goal, on = goals.get("avx2_over_avx512", {}).get(build), rel
            rows.append(f"| {m['model']} | {name} | {report.fmt_ci(m['cells'][name])} | {report.fmt_ci(r, 'x', 2)} "
                        f"| {'' if rel is None else report.fmt_ci(rel, '', 2)} "
                        f"| {'' if goal is None else f'<= {goal}'} | {'' if goal is None else report.verdict(on, goal)} |")
        for isa, name in TORCH.items():
            rows.append(f"| {m['model']} | {name} | {report.fmt_ci(m['cells'][name])} | 1 | | | |")
    isa_rows = ["| model | AVX2 transfer | tasks of another ISA | adapted won / tried | adapting gain "
                "| native search: tasks, share, wall, gain | search wall |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        for name, s in m["transfers"].items():
            i, nat = s["isa"], s["isa"].get("native") or {}
            if not name.startswith(AVX2):
                continue
            isa_rows.append(
                f"| {m['model']} | {name.split(' ', 1)[1]} ({s['source']}) | {i.get('tasks', 0)} "
                f"| {i.get('adapted_won', 0)} / {i.get('adapted_tried', 0)} | {_x(i.get('adapting_gain'))} "
                f"| {len(nat.get('tasks', []))}, {nat.get('share', 0):.0%}, {nat.get('wall_s', 0):.0f} s, "
                f"{_x(nat.get('gain'))} | {s['search_wall_s']:.0f} s |")
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"AVX2 by construction on this AVX-512 CPU: builds for `llvm -mcpu=haswell`, PyTorch eager in a process "
        f"with `ONEDNN_MAX_CPU_ISA=AVX2`. Latency: median [95% interval] over {res['models'][0]['rounds']} "
        "interleaved rounds; x PyTorch: median of the per-round ratios to the PyTorch of the same ISA; "
        "AVX2 / AVX-512: median of the per-round ratio of the two ratios. Verdicts on the whole interval.", "",
        *rows, "", "The AVX2 transfers (" + _settings(res["args"])
        + "; gains in weight x kernel time, the kernels compared measured side by side):", "", *isa_rows,
        *_versus(res)])
    return md, None


def _versus(res: dict) -> list[str]:
    """The within-run comparison with the --versus run's AVX2 builds, when there is one."""
    other = res["args"].get("versus")
    if not other:
        return []
    rows = [f"| model | AVX2 build | this run / {other} |", "| --- | --- | --- |"]
    rows += [f"| {m['model']} | {b} | {report.fmt_ci(r, '', 2)} |" for m in res["models"]
             for b, r in m["this_over_versus"].items()]
    return ["", f"This run's AVX2 builds ({_settings(res['args'])}) over those of {other} "
                f"({_settings(res['versus_args'])}), per-round latency ratio in the same rounds:", "", *rows]


def _settings(args: dict) -> str:
    """How the AVX2 transfers were budgeted, for the table's caption."""
    if args.get("quick"):
        return "a smoke run's cut budgets, not a result"
    native = [f"{v:g} {said}" for flag, _, said in NATIVE_FLAGS if (v := args.get(flag)) is not None]
    return "schedb transfer's defaults" + (f" but {' and '.join(native)}" if native else "")


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


# The native search's flags: the argument, NativeOptions' field, how a caption says it.
NATIVE_FLAGS = (("native_trials", "trials", "native trials per task"), ("native_budget", "budget_s", "s native budget"),
                ("native_per_iter", "trials_per_iter", "candidates per native batch"))
QUICK = {"k": 1, "per_source": 1, "search_trials": 0, "native": {"trials": 2, "trials_per_iter": 2, "budget_s": 60}}


def transfer_options(a) -> dict:
    """The AVX2 transfers' options: transfer's defaults, the smoke run's cuts, the native search's flags."""
    from schedb import NativeOptions

    options = {**QUICK, "native": NativeOptions(**QUICK["native"])} if a.quick else {}
    native = {field: v for flag, field, _ in NATIVE_FLAGS if (v := getattr(a, flag)) is not None}
    if native:
        options["native"] = replace(options.get("native", NativeOptions()), **native)
    return options


def main(argv=None):
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--torch-worker":
        return torch_worker(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="googlenet,alexnet,resnet50")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", default=scratch("isa"), help="scratch folder for the databases")
    ap.add_argument("--native-trials", type=int, help="trials per task of the native search (default: transfer's)")
    ap.add_argument("--native-budget", type=float, help="its seconds for a model all of another ISA (default: transfer's)")
    ap.add_argument("--native-per-iter", type=int, help="candidates per batch of the native search (default: transfer's)")
    ap.add_argument("--versus", help="an earlier run's name: its kept AVX2 transfers timed in the same rounds")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: alexnet, one record per task, 2 native trials per task, 3 rounds; results and "
                         "transfers in the scratch folder, never in results/")
    a = report.parse(ap, argv, "isa", render)
    if a is None:
        return
    host = report.host_target()
    targets = {AVX512: host, AVX2: avx2_target(host)}
    work = Path(a.work) / ("quick" if a.quick else "full")
    results = work / "results" if a.quick else report.RESULTS
    models, rounds = (["alexnet"], 3) if a.quick else (a.models.split(","), a.rounds)
    options = transfer_options(a)
    res = {"machine": report.describe(), "started": report.now(), "args": vars(a), "goals": GOALS, "models": []}
    if a.versus:
        if not (other := results / f"{a.versus}.json").exists():
            sys.exit(f"{other}: no such result, which --versus {a.versus} needs")
        res["versus_args"] = json.loads(other.read_text())["args"]
    for m in models:
        print(f"{m}: transfers, builds, timing", file=sys.stderr)
        versus = kept(m, a.versus, results, work) if a.versus else {}  # checked before this run's transfers
        pairs = {**transfers(m, targets, work, results / a.name, options), **versus}
        res["models"].append(measure(m, targets, pairs, work, rounds))
    res["finished"] = report.now()
    report.publish(a.name, res, render, results)


if __name__ == "__main__":
    main()
