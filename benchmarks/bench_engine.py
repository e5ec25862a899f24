"""Measurement engine vs MetaSchedule's LocalBuilder + LocalRunner, in one run.

Both measure the same real candidates (schedules from the tiny_cnn fixture replayed on
its own tasks) in batches, as a search does. Reports candidates per second and the
ratio, as results/engine.json + engine.md + engine.png (report.write).

Usage: python benchmarks/bench_engine.py [--batches 3] [--batch 8]
       python benchmarks/bench_engine.py --replot   # re-render md + png from the JSON, no measuring
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import report
from layers import fixture_tuning_paused
from report import describe

ROOT = Path(__file__).parents[1]


def candidates(target, n):
    from schedb.ingest import ingest
    from schedb import apply_trace, extract_tasks, load_model, lower, signature, Store

    store = Store(":memory:")
    ingest(store, [ROOT / "fixtures" / "tiny_cnn"])
    mods = []
    for task in extract_tasks(lower(load_model("tiny_cnn"), target), target):
        wid = store.workloads.id_of(signature(task.func)[0])
        for rec in store.records.top(wid, None, 8) if wid is not None else []:
            r = apply_trace(json.loads(rec["trace"]), task.func, target)
            if r.ok:
                mods.append(r.mod)
    return (mods * (n // len(mods) + 1))[:n]


def run_ms(target, batches):
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput, LocalBuilder
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, LocalRunner, RunnerInput

    from schedb.tir.signature import prim_func

    # A long timeout: each fresh worker first imports every tensor intrinsic (~45 s here),
    # which the default 30 s does not cover on a loaded machine (then nothing builds).
    builder = LocalBuilder(timeout_sec=600)
    runner = LocalRunner(evaluator_config=EvaluatorConfig(number=3, repeat=5, min_repeat_ms=20))
    ok = 0
    for batch in batches:
        built = builder.build([BuilderInput(m, target) for m in batch])
        inputs = [RunnerInput(b.artifact_path, "cpu", ArgInfo.from_prim_func(prim_func(m)))
                  for m, b in zip(batch, built) if b.error_msg is None]
        ok += sum(f.result().error_msg is None for f in runner.run(inputs))
    return ok


def run_engine(target, batches):
    from schedb import Engine

    engine = Engine(target, repeat=5, number=3)
    return sum(m.ok for batch in batches for m in engine.measure(batch))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=str(report.RESULTS / "engine.json"))
    ap.add_argument("--replot", action="store_true", help="re-render md + png from --out; measure nothing")
    args = ap.parse_args()
    out = Path(args.out)
    if args.replot:
        report.replot(out, render)
        return

    target = report.host_target()
    mods = candidates(target, args.batches * args.batch)
    batches = [mods[i * args.batch:(i + 1) * args.batch] for i in range(args.batches)]
    result = {"machine": describe(), "started": report.now(), "candidates": len(mods), "batch": args.batch}
    for name, fn in (("engine", run_engine), ("localbuilder_localrunner", run_ms)):
        with fixture_tuning_paused():  # background tuning named by $SCHEDB_BENCH_PAUSE
            t0 = time.perf_counter()
            ok = fn(target, batches)
            dt = time.perf_counter() - t0
        result[name] = {"seconds": round(dt, 2), "measured_ok": ok, "candidates_per_s": round(len(mods) / dt, 3)}
        print(f"{name:26s} {len(mods)} candidates in {dt:7.1f} s  ({len(mods) / dt:.2f}/s, {ok} ok)")
    result["speedup"] = round(result["engine"]["candidates_per_s"]
                              / result["localbuilder_localrunner"]["candidates_per_s"], 2)
    print(f"engine / LocalBuilder+LocalRunner: {result['speedup']}x")
    result["finished"] = report.now()
    report.write(out.stem, result, *render(result), folder=out.parent)


METHODS = (("engine", "schedb measurement Engine"),
           ("localbuilder_localrunner", "MetaSchedule LocalBuilder + LocalRunner"))


def render(result) -> tuple[str, object]:
    """(markdown, matplotlib figure) from a result dict: all numbers come from it."""
    n, batch = result["candidates"], result["batch"]
    lines = ["# Measurement engine vs MetaSchedule LocalBuilder + LocalRunner", "",
             "| method | candidates | measured ok | wall time s | candidates/s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in METHODS:
        r = result[key]
        lines.append(f"| {label} | {n} | {r['measured_ok']} | {r['seconds']:.2f} | {r['candidates_per_s']:.3f} |")
    lines += ["", f"Engine / LocalBuilder + LocalRunner: **{result['speedup']:.2f}x** candidates/s.", "",
              f"Both measured the same {n} real candidates (tiny_cnn fixture schedules replayed on its "
              f"tasks) in batches of {batch}, one after the other in one run; candidates/s = candidates / "
              "wall time of the whole run of each (set-up included: a fresh LocalBuilder's workers import "
              "every tensor intrinsic). Each method was timed once, so there are no per-sample data and "
              "no interval: the ratio is a single observation on a shared machine.", "",
              report.machine_line(result["machine"])]
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = [label.replace(" + ", "\n+ ") for _, label in METHODS]
    values = [result[key]["candidates_per_s"] for key, _ in METHODS]
    bars = ax.bar(labels, values, color=["tab:green", "tab:gray"])
    ax.bar_label(bars, labels=[f"{v:.3f}/s" for v in values])
    ax.set_ylabel("candidates / s (higher is better)")
    ax.set_ylim(0, max(values) * 1.15)
    ax.set_title(f"Measurement throughput, {n} candidates: {result['speedup']:.2f}x\n"
                 f"(one timed run each, no interval; TVM {result['machine']['tvm']}, "
                 f"{result['machine']['cores']} cores)", fontsize=10)
    fig.tight_layout()
    return "\n".join(lines), fig


if __name__ == "__main__":
    main()
