"""Time to latency: how fast a model gets, against schedb's wall time, beside what a CPU user
runs instead.

For each model (resnet50, alexnet, googlenet), schedb starts from a database of the other two
models' fixtures and runs ``schedb fast`` in steps (by default to 5, 10, 20, 40 and 60 minutes
of schedb's wall time in all, on the same database, so each step goes on from the last); after
each step the database is copied as it stands. ``run`` is resumable (SCRATCH/state.json) and
is meant for the background.

``time`` (on a quiet machine) compiles each model from each copy and times them interleaved,
one run of each per round, with the untuned model, PyTorch eager, ONNX Runtime and OpenVINO
(the ``bench`` extra), and with MetaSchedule from scratch: the model's own fixture (a tuning
run from an empty database) at log-spaced points of its timeline, each task's records by then
and its untuned kernel chosen side by side, as ``tune --db`` ends. Goals, each on its whole
95% interval: the model at or below PyTorch eager within 60 minutes, and each of its ``--top``
heaviest kernels (weight x FLOPs), as the last step builds them, at 90% or more of PyTorch's
GFLOP/s on the same layer (timed alone, interleaved with it, in the same rounds).
``--versus DIR:LABEL`` times another run's steps of the same models in the same rounds (say,
a run without ``--by-latency`` beside one with it), each step over this run's step of the
same minutes.

    python benchmarks/bench_time_to_latency.py run --scratch DIR [--models ...] [--steps 5,10,20,40,60] [--by-latency]
    python benchmarks/bench_time_to_latency.py time --scratch DIR [--rounds 15] [--versus DIR:LABEL]
    python benchmarks/bench_time_to_latency.py --replot
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import report
from schedb import host_cores
from layers import TORCH, fixture_tuning_paused, heaviest_kernels, time_kernels
from peers import peers, time_once
from shared import SETTLE_S, Search, base_db, copy_db, load_state, log_points, others, save_state

MODELS = ("resnet50", "alexnet", "googlenet")
GOAL = 1.0  # x PyTorch eager
KERNEL_GOAL = 0.9  # of PyTorch's GFLOP/s on the same layer, for each heaviest kernel


def run(a) -> None:
    """Every model's steps of ``fast``, each followed by a copy of its database."""
    from schedb import FastOptions, Store, fast, load_model

    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "pgid").write_text(str(os.getpgid(0)))  # what the timing stops (layers.PAUSE_ENV)
    target = report.host_target()
    state = load_state(scratch)
    state.setdefault("machine", report.describe())
    for model in a.models.split(","):
        live = scratch / model / "live.db"
        if not live.exists():
            live.parent.mkdir(parents=True, exist_ok=True)
            copy_db(base_db(scratch, others(model)), live)
        steps = state["jobs"].setdefault(model, [])
        for minutes in map(float, a.steps.split(",")):
            # A step that ended a little short of its minutes is done all the same.
            if any(s["minutes"] >= minutes for s in steps):
                continue
            spent = steps[-1]["cumulative_s"] if steps else 0.0
            t0, store = time.perf_counter(), Store(live)
            opts = FastOptions(budget_s=minutes * 60 - spent, by_latency=a.by_latency)
            rep = fast(store, load_model(model), target, opts)
            store.close()
            wall = time.perf_counter() - t0
            snap = live.with_name(f"at-{minutes:g}min.db")
            copy_db(live, snap)
            steps.append({"minutes": minutes, "wall_s": round(wall, 1), "cumulative_s": round(spent + wall, 1),
                          "db": snap.name, "by_latency": opts.by_latency, "tuned_tasks": rep.tuned_tasks,
                          "own_timing": rep.e2e,
                          "ended": report.now(), "load_average": [round(x, 2) for x in os.getloadavg()]})
            save_state(scratch, state)
            print(f"{model}: {spent + wall:.0f} s of schedb, own timing {rep.e2e['final']}", flush=True)


def compiled_variants(model: str, steps: list[dict], scratch: Path, a, target):
    """The lowered model, {name: compiled model} (schedb after each step, untuned, MetaSchedule
    from scratch) and the ``--top`` heaviest kernels as the last step builds them."""
    from schedb import Database, Engine, compile_model, extract_tasks, load_model, lower

    lowered = lower(load_model(model), target)
    compiled, dbs = {"untuned": compile_model(lowered, target, None)}, {}
    for s in steps:
        dbs[f"schedb {s['cumulative_s']:.0f} s"] = Database(scratch / model / s["db"], target=target)
    for s in versus_steps(a, model):
        dbs[f"{a.versus_label} {s['cumulative_s']:.0f} s"] = Database(Path(a.versus_dir) / model / s["db"], target=target)
    compiled.update({name: compile_model(lowered, target, db) for name, db in dbs.items()})
    tasks = extract_tasks(lowered, target)
    last = f"schedb {steps[-1]['cumulative_s']:.0f} s"
    kernels = heaviest_kernels(lowered.model, tasks, {last: dbs[last]}, target, a.top, a.min_ms)
    search = Search(report.RESULTS.parents[1] / "fixtures" / model, tasks)
    engine, work = Engine(target), scratch / model
    for t in (search.events[i] for i in log_points(search.events, a.scratch_points)):
        compiled[f"metaschedule {t:.0f} s"] = compile_model(lowered, target, search.at(t, work, tasks, target, engine))
    return lowered, compiled, kernels, last


def versus_steps(a, model: str) -> list[dict]:
    """The steps of the ``--versus`` run for ``model`` (none without it)."""
    return load_state(Path(a.versus_dir))["jobs"].get(model, []) if a.versus_dir else []


def versus(a, model: str, steps: list[dict], samples: dict) -> list[dict]:
    """Each step of this run over the ``--versus`` run's step of the same minutes, round by round."""
    out = []
    for s, v in ((s, v) for s in steps for v in versus_steps(a, model) if v["minutes"] == s["minutes"]):
        mine, theirs = samples[f"schedb {s['cumulative_s']:.0f} s"], samples[f"{a.versus_label} {v['cumulative_s']:.0f} s"]
        out.append({"minutes": s["minutes"], "ratio": report.median_ci([x / y for x, y in zip(mine, theirs)])})
    return out


def time_model(lowered, compiled: dict, runtimes: list, rounds: int) -> dict:
    """{name: samples in ms}, one run of each per round: TVM's variants, PyTorch, the peers
    (each after SETTLE_S seconds)."""
    from schedb.pipeline.evaluate import interleaved_samples

    samples = {}
    for _ in range(rounds):
        for name, xs in interleaved_samples(lowered, compiled, 1, with_torch=True).items():
            samples.setdefault("pytorch eager" if name == "pytorch" else name, []).extend(xs)
        for p in runtimes:
            time.sleep(SETTLE_S)
            samples.setdefault(p.name, []).append(time_once(p))
    return samples


def time_phase(a) -> None:
    import torch

    torch.set_num_threads(host_cores())
    scratch = Path(a.scratch)
    state, target = load_state(scratch), report.host_target()
    res = {"machine": report.describe(), "started": report.now(), "tuning_machine": state.get("machine"),
           "settings": {"rounds": a.rounds, "scratch_points": a.scratch_points, "goal_x_pytorch": GOAL,
                        "versus": a.versus_label},
           "models": {}}
    for model in a.models.split(","):
        steps = state["jobs"].get(model, [])
        if not steps:
            continue
        lowered, compiled, kernels, last = compiled_variants(model, steps, scratch, a, target)
        with fixture_tuning_paused():
            load = [round(x, 2) for x in os.getloadavg()]
            samples = time_model(lowered, compiled, peers(lowered.model, scratch / "onnx"), a.rounds)
            time_kernels(kernels, a.rounds)
        res["models"][model] = {"steps": steps, "load_average_before": load, "samples_ms": samples,
                                "cells": {k: report.median_ci(v) for k, v in samples.items()},
                                "x_pytorch": {k: ratio(samples, k) for k in samples if k != "pytorch eager"},
                                "versus": versus(a, model, steps, samples),
                                "kernels_from": last,
                                "kernels": [{x: v for x, v in k.items() if not x.startswith("_")} for k in kernels]}
    res["finished"] = report.now()
    report.publish(a.name, res, render)


def ratio(samples: dict, name: str) -> dict:
    """``name`` over PyTorch eager, round by round, as median_ci."""
    return report.median_ci([x / y for x, y in zip(samples[name], samples["pytorch eager"])])


def render(res: dict):
    lines = [report.machine_line(res["machine"]), "",
             f"Latency, median [95% interval] over {res['settings']['rounds']} interleaved rounds, and over PyTorch "
             "eager (median of the per-round ratios). schedb N s: the model as `schedb fast` left the database "
             "after N seconds of its wall time in all, from the other two models' fixtures; MetaSchedule N s: the "
             "model's own fixture tuned from scratch, by N s of its run. Goal: at or below PyTorch eager "
             f"({GOAL:g}x), judged on the whole interval."
             + (f" {v} N s: the same from a second run of `schedb fast`, timed in the same rounds."
                if (v := res["settings"].get("versus")) else ""), ""]
    for model, m in res["models"].items():
        lines += [f"**{model}**", "", "| variant | latency, ms | x PyTorch eager | goal |", "| --- | --- | --- | --- |"]
        for name, c in m["cells"].items():
            x = m["x_pytorch"].get(name)
            lines.append(f"| {name} | {report.fmt_ci(c)} | {report.fmt_ci(x, 'x', 2) if x else '1'} | "
                         f"{report.verdict(x, GOAL) if x and name.startswith('schedb') else ''} |")
        if m.get("versus"):
            label = res["settings"]["versus"]
            lines += ["", f"schedb over {label} after the same minutes (median of the per-round ratios; below 1: "
                      "schedb faster):", "", f"| minutes | schedb / {label} |", "| --- | --- |",
                      *(f"| {v['minutes']:g} | {report.fmt_ci(v['ratio'], 'x', 3)} |" for v in m["versus"])]
        rows = kernel_rows(m.get("kernels", []), m.get("kernels_from"))
        lines += ["", *rows, ""] if rows else [""]
    return "\n".join(lines), figure(res)


def kernel_rows(kernels: list[dict], last: str | None) -> list[str]:
    """The heaviest kernels of the last step beside PyTorch, judged against KERNEL_GOAL."""
    if not kernels:
        return []
    rows = [f"The {len(kernels)} heaviest kernels (weight x FLOPs) as {last} builds them, each alone, interleaved "
            f"with the same layer in PyTorch eager; share: PyTorch's time over the kernel's, round by round. Goal: "
            f"at least {KERNEL_GOAL:.0%} of PyTorch's GFLOP/s.", "",
            "| kernel (weight) | GFLOP | GFLOP/s | PyTorch GFLOP/s | share of PyTorch's GFLOP/s | goal |",
            "| --- | --- | --- | --- | --- | --- |"]
    for k in kernels:
        share = k.get("of_pytorch", {}).get(last)
        cells = [f"{k['gflops'][n]:.1f}" if n in k["gflops"] else "untuned" if n in k["untuned_in"] else "-"
                 for n in (last, TORCH)]
        rows.append(f"| `{k['task'][:48]}` ({k['weight']}) | {k['flops'] / 1e9:.3f} | {cells[0]} | {cells[1]} | "
                    f"{report.fmt_ci(share, '', 2) if share else '-'} | "
                    f"{report.verdict(share, KERNEL_GOAL, at_least=True) if share else ''} |")
    return rows


def figure(res: dict):
    plt = report.pyplot()
    models = list(res["models"])
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5.5 * max(1, len(models)), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        cells = res["models"][model]["cells"]
        for prefix, col in (("schedb", "#1f5fa0"), (res["settings"].get("versus"), "#e67e22"), ("metaschedule", "#555")):
            pts = sorted((float(k.split()[-2]), c) for k, c in cells.items() if prefix and k.startswith(prefix + " "))
            if pts:
                ax.errorbar([t for t, _ in pts], [c["median"] for _, c in pts],
                            yerr=[[c["median"] - c["ci_low"] for _, c in pts], [c["ci_high"] - c["median"] for _, c in pts]],
                            fmt="o-", color=col, capsize=2, label=prefix)
        for name, col in (("pytorch eager", "#c0392b"), ("onnx runtime", "#8e44ad"), ("openvino", "#27ae60")):
            if name in cells:
                ax.axhspan(cells[name]["ci_low"], cells[name]["ci_high"], color=col, alpha=0.25, label=name)
        ax.set(xscale="log", yscale="log", title=model, xlabel="wall time, s (log)", ylabel="latency, ms (log)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", nargs="?", choices=("run", "time"))
    ap.add_argument("--scratch", help="databases and progress (run resumes from it)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", default="5,10,20,40,60", help="schedb's wall time in all after each step, minutes")
    ap.add_argument("--by-latency", action="store_true", help="run: fast's tuning by latency share, not in turn")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--versus", default=None, help="DIR:LABEL, another run's scratch whose steps are timed beside")
    ap.add_argument("--scratch-points", type=int, default=6, help="points of MetaSchedule's run from scratch")
    ap.add_argument("--top", type=int, default=5, help="heaviest kernels of the last step timed alone")
    ap.add_argument("--min-ms", type=float, default=20.0, help="each kernel sample runs at least this long")
    a = report.parse(ap, argv, "time_to_latency", render)
    if a is None:
        return
    if not a.phase or not a.scratch:
        ap.error("a phase (run or time) and --scratch are needed")
    a.versus_dir, _, a.versus_label = (a.versus or "").partition(":")
    if a.versus and not a.versus_label:
        ap.error("--versus needs DIR:LABEL")
    (run if a.phase == "run" else time_phase)(a)


if __name__ == "__main__":
    main()
