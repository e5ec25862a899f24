"""Measurement engine vs MetaSchedule's LocalBuilder + LocalRunner, in one run.

Both measure the same real candidates (schedules from the tiny_cnn fixture replayed on
its own tasks) in batches, as a search does. Reports candidates per second and the
ratio. Usage: python benchmarks/bench_engine.py [--batches 3] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from report import describe

ROOT = Path(__file__).parents[1]


def candidates(target, n):
    from schedb.ingest import ingest
    from schedb.models import load_model
    from schedb.replay import apply_trace
    from schedb.signature import signature
    from schedb.store import Store
    from schedb.tasks import extract_tasks, lower

    store = Store(":memory:")
    ingest(store, [ROOT / "fixtures" / "tiny_cnn"])
    mods = []
    for task in extract_tasks(lower(load_model("tiny_cnn"), target), target):
        row = store.conn.execute("SELECT id FROM workloads WHERE signature = ?",
                                 (signature(task.func)[0],)).fetchone()
        for rec in store.top_records(row[0], None, 8) if row else []:
            r = apply_trace(json.loads(rec["trace"]), task.func, target)
            if r.ok:
                mods.append(r.mod)
    return (mods * (n // len(mods) + 1))[:n]


def run_ms(target, batches):
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput, LocalBuilder
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, LocalRunner, RunnerInput

    from schedb.signature import prim_func

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
    from schedb.measure import Engine

    engine = Engine(target, repeat=5, number=3)
    return sum(m.ok for batch in batches for m in engine.measure(batch))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine.json"))
    args = ap.parse_args()

    from schedb.target import load_intrinsics, parse_target

    target = parse_target(None)
    load_intrinsics(target)
    mods = candidates(target, args.batches * args.batch)
    batches = [mods[i * args.batch:(i + 1) * args.batch] for i in range(args.batches)]
    result = {"machine": describe(), "candidates": len(mods), "batch": args.batch}
    for name, fn in (("engine", run_engine), ("localbuilder_localrunner", run_ms)):
        t0 = time.perf_counter()
        ok = fn(target, batches)
        dt = time.perf_counter() - t0
        result[name] = {"seconds": round(dt, 2), "measured_ok": ok, "candidates_per_s": round(len(mods) / dt, 3)}
        print(f"{name:26s} {len(mods)} candidates in {dt:7.1f} s  ({len(mods) / dt:.2f}/s, {ok} ok)")
    result["speedup"] = round(result["engine"]["candidates_per_s"]
                              / result["localbuilder_localrunner"]["candidates_per_s"], 2)
    print(f"engine / LocalBuilder+LocalRunner: {result['speedup']}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
