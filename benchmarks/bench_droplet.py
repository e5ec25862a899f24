"""schedb's droplet search vs TVM's own droplet (``meta_schedule.post_optimization``), in one run.

The comparison is fixed in advance: the 10 heaviest tasks by weight x stored
best time of the three seed models (resnet50, googlenet, alexnet fixtures; a workload
shared by models counted once), each searched by both from the same start trace (its best
stored record), with the same number of measurements and the same timing effort per
measurement (``TIMING``: number, repeat and min_repeat_ms for both runners). Then the start
and both final best kernels are measured again with one schedb Engine, interleaved, and
compared.

TVM's droplet (``post_optimization.Droplet``) runs unmodified, with two exceptions:
  * Its builder. ``Space.run`` makes an ``ms.builder.LocalBuilder`` per batch: a fresh
    process pool whose workers import every tensor intrinsic (~45 s a batch here).
    This benchmark compares search quality at equal measurement counts, not wall time,
    so the name ``ms.builder.LocalBuilder`` as ``space.py`` sees it is replaced by one
    shared schedb ``WarmBuilder`` (same kernels built; a shared library instead of a
    tar). Its runner is TVM's ``LocalRunner`` with ``TIMING`` instead of space.py's
    number=2, repeat=3, min_repeat_ms=0: each trial timed as hard as ours.
  * Its start time. TVM's droplet takes the incumbent's time from the tuning record;
    the fixtures were measured at another time and load, so the start is measured afresh
    (not counted as a trial; neither is ours, which gets the start measured by its
    Engine as ``start_samples``).
``Space.run`` draws ``random.random()`` to apply the recorded postprocessing to only
~25% of the candidates; that ``random`` is seeded (and the draws counted).

Trials: TVM's droplet is run with ``n_trial = --trials``; what its builder was given
(= what its runner measured) is counted, and ours gets exactly that many trials.

Final measurement: each kernel is built once and run in ``--final-rounds`` rounds of
``--final-repeat`` repeats, the order rotated every round; the statistic is the median
of all samples (other jobs share the machine, and their load spikes skew means; means
are kept too). TVM's best is applied as TVM applies a database record (its full trace,
its own postprocessing), ours and the start by ``schedb.tir.replay.apply_trace``. The start
record is also measured a second time the TVM way ("start_again", the same kernel):
its gap to "start" is the noise floor of the run. Raw samples are in the JSON.

The ceiling (``--long K``): each task searched again from the same start, ours with K
times the trials and TVM's with n_trial K times as large (it stops when it stops
improving); their kernels join the final measurement, and a second table gives TVM's
equal-effort result over them and over the fastest kernel any search found.

Result: results/droplet.json + droplet.md + droplet.png (report.write); final times as
medians with distribution-free 95% intervals (report.median_ci).

Usage: nice -n 10 python benchmarks/bench_droplet.py [--trials 32] [--tasks 10] [--long 4] [--final-repeat 10] [--final-rounds 10]
       python benchmarks/bench_droplet.py --replot   # re-render md + png from the JSON, no measuring
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
import types
from pathlib import Path

import report
from report import describe

ROOT = Path(__file__).parents[1]

SEED_MODELS = ("resnet50", "googlenet", "alexnet")
N_TASKS = 10  # the heaviest by weight x stored best time
TIMING = {"number": 3, "repeat": 5, "min_repeat_ms": 20}  # per trial, for both searches (schedb's Engine)


# --------------------------------------------------------------------------- tasks
def pick_tasks(store, n: int = N_TASKS) -> list[dict]:
    """The ``n`` heaviest tasks of the seed models by weight x stored best time, heaviest
    first, each workload once: [{fixture, task, workload_id, weight, kind, mod, ms_workload,
    record}]."""
    from tvm.s_tir.meta_schedule.database import Workload

    rows = [{"model": store.models.name_of(r["model_id"]), "task_name": r["task_name"],
             "workload_id": r["workload_id"], "weight": r["weight"]} for r in store.models.task_rows()]
    heaviest: dict[int, tuple[float, dict]] = {}
    for r in rows:
        best = store.records.top(r["workload_id"], None, 1) if r["model"] in SEED_MODELS else None
        if best:
            share = (r["weight"] or 1) * best[0]["mean_s"]
            if share > heaviest.get(r["workload_id"], (0.0,))[0]:
                heaviest[r["workload_id"]] = (share, {**r, "record": best[0]})
    out = []
    for share, r in sorted(heaviest.values(), key=lambda x: -x[0])[:n]:
        w = store.workloads.get(r["workload_id"])
        out.append({"fixture": r["model"], "task": r["task_name"], "workload_id": r["workload_id"],
                    "weight": r["weight"], "weighted_ms": share * 1e3, "kind": w["kind"],
                    "mod": Workload.from_json(json.loads(w["ms_workload"])).mod,
                    "ms_workload": json.loads(w["ms_workload"]), "record": r["record"]})
    return out


# --------------------------------------------------------------------------- measuring
class Counting:
    """Counts what goes through ``build`` / ``measure`` and how many distinct kernels
    (structural hash of the scheduled module) that was."""

    def __init__(self, inner):
        self.inner, self.count, self.kernels = inner, 0, set()

    def reset(self):
        self.count, self.kernels = 0, set()

    def _note(self, mods):
        import tvm_ffi

        self.count += len(mods)
        self.kernels.update(int(tvm_ffi.structural_hash(m)) for m in mods)

    def build(self, inputs):
        self._note([b.mod for b in inputs])
        return self.inner.build(inputs)

    def measure(self, mods, rounds=None):
        self._note(mods)
        return self.inner.measure(mods, rounds)


class Draws(random.Random):
    """Seeded ``random`` for space.py; counts draws and those that drop postprocessing."""

    def __init__(self, seed):
        super().__init__(seed)
        self.flags: list[bool] = []  # per draw: postprocessing dropped

    def random(self):
        x = super().random()
        self.flags.append(x > 0.75)  # space.py: remove_postproc = random.random() > 0.75
        return x


def run_samples(builder, runner, mods, rounds: int) -> list[list[float] | None]:
    """Build ``mods`` once, then run them ``rounds`` times, rotating the order each round
    (so drift in machine load hits all alike); every repeat sample kept."""
    import shutil
    import os

    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    from schedb.tir.signature import prim_func

    built = builder.build([BuilderInput(m, TARGET) for m in mods])
    samples: list[list[float] | None] = [[] for _ in mods]
    inputs = {}
    for i, (m, b) in enumerate(zip(mods, built)):
        if b.error_msg is None:
            inputs[i] = RunnerInput(b.artifact_path, "cpu", ArgInfo.from_prim_func(prim_func(m)))
        else:
            samples[i] = None
    order = sorted(inputs)
    for r in range(rounds):
        now = order[r % len(order):] + order[:r % len(order)] if order else []
        for i, fut in zip(now, runner.run([inputs[i] for i in now])):
            res = fut.result()
            if res.error_msg is not None or samples[i] is None:
                samples[i] = None
            else:
                samples[i] += [float(s) for s in res.run_secs]
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return samples


def mean(xs):
    return sum(xs) / len(xs)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# --------------------------------------------------------------------------- TVM's droplet
def tvm_droplet(task, start_samples, trials, builder, seed, log_dir):
    """TVM's Droplet from the task's start record. -> dict with its best record and counts."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.post_optimization import droplet as droplet_mod
    from tvm.s_tir.meta_schedule.post_optimization import space as space_mod
    from tvm.s_tir.meta_schedule.post_optimization import get_time

    data = [0, record_json(task, list(start_samples))]
    log = str(Path(log_dir) / f"tvm_{task['workload_id']}.log")
    draws = Draws(seed)
    proxy = types.SimpleNamespace(LocalBuilder=lambda **kw: builder, BuilderInput=ms.builder.BuilderInput)
    saved = space_mod.ms, space_mod.random
    space_mod.ms = _MSView(ms, proxy)
    space_mod.random = draws
    builder.reset()
    t0 = time.perf_counter()
    try:
        d = droplet_mod.Droplet(data, task["ms_workload"], TARGET, log)
        dims = list(d.space.dims)
        d.tune(trials)
        best_time, best = get_time(log)
    finally:
        space_mod.ms, space_mod.random = saved
    lines = Path(log).read_text().splitlines()
    # Which kernel TVM measured for its best: log line k (k >= 1) is the k-th candidate that
    # ran; draws, builds and runs line up one to one when nothing failed on the way.
    at = lines.index(json.dumps(best)) if json.dumps(best) in lines else None
    aligned = len(draws.flags) == builder.count == len(lines) - 1
    no_pp = draws.flags[at - 1] if at and aligned else (False if at == 0 else None)
    return {"best_record": best, "best_search_mean": mean(best_time), "measured": builder.count,
            "distinct_kernels": len(builder.kernels), "ran_ok": len(lines) - 1, "proposed": d.count - 1,
            "no_postproc_draws": sum(draws.flags), "postproc_draws": len(draws.flags) - sum(draws.flags),
            "best_measured_without_postproc": no_pp, "start_search_mean": mean(start_samples),
            "knob_dims": dims, "moved": best != data,
            "seconds": time.perf_counter() - t0}


class _MSView:
    """``tvm.s_tir.meta_schedule`` as space.py sees it, with its own ``builder`` namespace."""

    def __init__(self, ms, builder):
        self._ms, self.builder = ms, builder

    def __getattr__(self, name):
        return getattr(self._ms, name)


def deploy_mod(task, record_json, remove_postproc=False):
    """A record's kernel the way TVM applies a database record (full trace, its postproc);
    with ``remove_postproc`` as space.py measured ~75% of its candidates."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload

    wl = Workload.from_json(task["ms_workload"])
    r = TuningRecord.from_json(json.loads(json.dumps(record_json)), wl)
    sch = Schedule(wl.mod)
    r.trace.apply_to_schedule(sch, remove_postproc=remove_postproc)
    return sch.mod


def _hash(mod) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(mod))


def record_json(task, run_secs) -> list:
    """The task's start record as MetaSchedule stores it: [trace, run_secs, target, args_info]."""
    from schedb import canonical

    rec = task["record"]
    return [json.loads(rec["trace"]), run_secs, json.loads(canonical(TARGET)), json.loads(rec["args_info"])]


# --------------------------------------------------------------------------- ours
def ours_droplet(task, start, trials, engine, seed):
    """schedb's droplet from the task's start record -> (counts dict, DropletResult)."""
    from schedb import DropletParams, droplet

    engine.reset()
    t0 = time.perf_counter()
    res = droplet(task["mod"], TARGET, json.loads(task["record"]["trace"]), engine, trials=trials,
                  params=DropletParams(seed=seed), start_samples=start.samples)
    ours = {"start_search_mean": start.mean, "measured": engine.count, "trials": res.trials, "failed": res.failed,
            "distinct_kernels": len(engine.kernels), "pvalue": res.pvalue,
            "search_best_ms": res.best_mean * 1e3, "moved": res.accepted,
            "seconds": time.perf_counter() - t0}
    print(f"  ours ({trials} trials): {res.trials} measured ({ours['distinct_kernels']} distinct, {res.failed} "
          f"failed), start {start.mean * 1e3:.4f} ms, search best {res.best_mean * 1e3:.4f} ms, p={res.pvalue}, "
          f"{ours['seconds']:.0f} s", flush=True)
    return ours, res


# --------------------------------------------------------------------------- main
TARGET = None


def parse(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=32, help="TVM droplet's n_trial; ours gets what it measured")
    ap.add_argument("--final-repeat", type=int, default=10)
    ap.add_argument("--final-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", type=int, default=N_TASKS, help="the N heaviest tasks (weight x stored time)")
    ap.add_argument("--long", type=int, default=0,
                    help="also run both searches with this many times the trials (the ceiling); 0: not")
    ap.add_argument("--out", default=str(report.RESULTS / "droplet.json"))
    ap.add_argument("--replot", action="store_true", help="re-render md + png from --out; measure nothing")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    out = Path(args.out)
    if args.replot:
        report.replot(out, render)
        return
    result = run(args)
    table, fig = render(result)
    print()
    print(table)
    report.write(out.stem, result, table, fig, folder=out.parent)


def run(args) -> dict:
    """Both searches on each of the heaviest tasks, then the final interleaved timing."""
    global TARGET
    t_all = time.perf_counter()
    from schedb.ingest import ingest
    from schedb.search.measure import Engine, make_runner
    from schedb import load_intrinsics, parse_target, Store

    TARGET = parse_target(None)
    load_intrinsics(TARGET)
    machine, started = describe(), report.now()
    store = Store(":memory:")
    ingest(store, [ROOT / "fixtures" / f for f in SEED_MODELS])
    tasks = pick_tasks(store, args.tasks)
    engine = Engine(TARGET, repeat=TIMING["repeat"], number=TIMING["number"])  # make_runner's min_repeat_ms: 20
    ctx = types.SimpleNamespace(
        engine=engine, ours_engine=Counting(engine), tvm_builder=Counting(engine.builder),
        tvm_runner=make_runner("local", **TIMING), final_runner=make_runner("local", number=3, repeat=args.final_repeat),
        log_dir=tempfile.mkdtemp(prefix="bench-droplet-"))
    rows = []
    for k, task in enumerate(tasks):
        print(f"[{k + 1}/{len(tasks)}] {task['fixture']}/{task['task']} ({task['kind']}, stored best "
              f"{task['record']['mean_s'] * 1e3:.3f} ms)", flush=True)
        rows.append(compare(task, ctx, args))
    return {"machine": machine, "started": started, "finished": report.now(),
            "wall_time_s": round(time.perf_counter() - t_all, 1), "settings": settings(args),
            **geomeans(rows), "tasks": rows}


def compare(task: dict, ctx, args) -> dict:
    """One task: both searches from its stored best, the optional long searches, the final timing."""
    from schedb.tir.replay import apply_trace

    row = {"fixture": task["fixture"], "task": task["task"], "kind": task["kind"],
           "workload_id": task["workload_id"], "weight": task["weight"], "weighted_ms": task["weighted_ms"],
           "start_record_id": task["record"]["id"],
           "stored_start_ms": task["record"]["mean_s"] * 1e3}
    start = apply_trace(json.loads(task["record"]["trace"]), task["mod"], TARGET)
    if not start.ok:
        print(f"  start does not replay: {start.error}")
        return {**row, "error": f"start does not replay: {start.error}"}
    # Each method's incumbent, measured with its own measurement settings (not trials).
    ours_start = ctx.engine.measure([start.mod])[0]
    tvm_start = run_samples(ctx.engine.builder, ctx.tvm_runner, [deploy_mod(task, record_json(task, [1.0]))], 1)[0]
    if not ours_start.ok or not tvm_start:
        return {**row, "error": f"start does not run: {ours_start.error}"}
    tvm, n = tvm_search(task, tvm_start, args.trials, ctx, args)
    ours, res = ours_droplet(task, ours_start, n, ctx.ours_engine, args.seed)
    long = long_searches(task, tvm_start, ours_start, n, ctx, args) if args.long else {}
    row.update(final_timing(task, start, tvm, ours, res, long, ctx, args))
    print("  final (median): " + ", ".join(f"{k} {v['median_ms']:.4f} ms" if v else f"{k} failed"
                                  for k, v in row["final"].items())
          + (f", TVM/ours {row['ratio_tvm_over_ours']:.3f}" if "ratio_tvm_over_ours" in row else ""),
          flush=True)
    return row


def tvm_search(task, tvm_start, trials, ctx, args) -> tuple[dict, int]:
    """TVM's droplet and how many measurements it made (TVM's droplet failing is a result too)."""
    try:
        tvm = tvm_droplet(task, tvm_start, trials, ctx.tvm_builder, args.seed, ctx.log_dir)
    except Exception as e:
        tvm = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(f"  TVM droplet failed: {tvm['error']}", flush=True)
        return tvm, trials
    print(f"  TVM droplet: {tvm['measured']} measured ({tvm['distinct_kernels']} distinct kernels, "
          f"{tvm['ran_ok']} ran, {tvm['no_postproc_draws']} without postproc), start "
          f"{tvm['start_search_mean'] * 1e3:.4f} ms, search best {tvm['best_search_mean'] * 1e3:.4f} ms "
          f"(without postproc: {tvm['best_measured_without_postproc']}), {tvm['seconds']:.0f} s", flush=True)
    return tvm, tvm["measured"]


def long_searches(task, tvm_start, ours_start, n, ctx, args) -> dict:
    """The ceiling: both searches again from the same start with --long times the trials."""
    long = {}
    try:
        long["tvm_long"] = tvm_droplet(task, tvm_start, args.long * args.trials, ctx.tvm_builder, args.seed,
                                       ctx.log_dir)
    except Exception as e:
        print(f"  TVM droplet (long) failed: {type(e).__name__}: {e}"[:500], flush=True)
    # TVM's droplet ends by itself when it stops improving; ours gets all the trials.
    long["ours_long"] = ours_droplet(task, ours_start, args.long * n, ctx.ours_engine, args.seed)
    return long


def final_kernels(task, start, tvm, res, long) -> tuple[list[str], list]:
    """Start, TVM's best (applied as TVM deploys a record) and ours, to be timed side by side.
    "start_again" is the start record applied as TVM deploys it: the same kernel as "start"
    (structural hash checked), so the gap between the two is the noise floor of this run."""
    from schedb.tir.replay import apply_trace, as_json

    names, mods = ["start", "start_again"], [start.mod, deploy_mod(task, record_json(task, [1.0]))]
    if "best_record" in tvm:
        names.append("tvm")
        mods.append(deploy_mod(task, tvm["best_record"][1]))
    names.append("ours")
    mods.append(apply_trace(as_json(res.best_trace), task["mod"], TARGET).mod)
    if "tvm_long" in long:
        names.append("tvm_long")
        mods.append(deploy_mod(task, long["tvm_long"]["best_record"][1]))
    if "ours_long" in long:
        names.append("ours_long")
        mods.append(apply_trace(as_json(long["ours_long"][1].best_trace), task["mod"], TARGET).mod)
    if tvm.get("best_measured_without_postproc"):  # for the record: the kernel TVM actually timed
        names.append("tvm_as_measured")
        mods.append(deploy_mod(task, tvm["best_record"][1], remove_postproc=True))
    return names, mods


def final_timing(task, start, tvm, ours, res, long, ctx, args) -> dict:
    """The row's final entries: every kernel timed interleaved with one Engine, and what they show."""
    from schedb.tir.replay import as_json

    names, mods = final_kernels(task, start, tvm, res, long)
    samples = dict(zip(names, run_samples(ctx.engine.builder, ctx.final_runner, mods, args.final_rounds)))
    final = {k: ({"median_ms": median(v) * 1e3, "mean_ms": mean(v) * 1e3, "n": len(v),
                  "samples_us": [round(x * 1e6, 3) for x in v]} if v else None)
             for k, v in samples.items()}
    same = lambda k: _hash(mods[names.index(k)]) == _hash(start.mod)  # noqa: E731
    row = {"tvm": {k: v for k, v in tvm.items() if k != "best_record"}, "ours": ours, "final": final,
           "tvm_best_trace": tvm.get("best_record", [None, [None]])[1][0],
           "ours_best_trace": as_json(res.best_trace),
           "start_again_same_kernel": same("start_again"),
           "tvm_best_same_kernel_as_start": len(mods) > 2 and names[2] == "tvm" and same("tvm"),
           "ours_best_same_kernel_as_start": same("ours")}
    if long:
        row["long"] = {k: ({kk: vv for kk, vv in v.items() if kk != "best_record"} if k == "tvm_long"
                           else v[0]) for k, v in long.items()}
        row["long_same_kernel_as_start"] = {k: same(k) for k in long}
    return {**row, **final_verdicts(samples, final)}


def final_verdicts(samples: dict, final: dict) -> dict:
    """Noise floor, TVM over ours, and the one-sided Welch tests on the final samples."""
    from scipy.stats import ttest_ind

    out = {}
    if samples.get("start") and samples.get("start_again"):
        out["noise_start_again_over_start"] = final["start_again"]["median_ms"] / final["start"]["median_ms"]
    if samples.get("tvm") and samples.get("ours"):
        out["ratio_tvm_over_ours"] = final["tvm"]["median_ms"] / final["ours"]["median_ms"]
        out["ratio_tvm_over_ours_mean"] = final["tvm"]["mean_ms"] / final["ours"]["mean_ms"]
        out["final_p_ours_faster_than_tvm"] = float(
            ttest_ind(samples["ours"], samples["tvm"], equal_var=False, alternative="less").pvalue)
    if samples.get("start") and samples.get("ours"):
        out["final_p_ours_faster_than_start"] = float(
            ttest_ind(samples["ours"], samples["start"], equal_var=False, alternative="less").pvalue)
    return out


def geomeans(rows) -> dict:
    geo = lambda xs: math.exp(mean([math.log(x) for x in xs])) if xs else None  # noqa: E731
    return {"geomean_tvm_over_ours": geo([r["ratio_tvm_over_ours"] for r in rows if "ratio_tvm_over_ours" in r]),
            "geomean_tvm_over_ours_by_means": geo([r["ratio_tvm_over_ours_mean"] for r in rows
                                                   if "ratio_tvm_over_ours_mean" in r])}


def settings(args) -> dict:
    return {
        "tvm_n_trial": args.trials, "seed": args.seed, "long": args.long,
        "tasks": f"the {args.tasks} heaviest of {', '.join(SEED_MODELS)} by weight x stored best time",
        "ours": {"engine": TIMING, "pvalue": 0.05, "batch": 8,
                 "trials": "= measurements TVM's droplet made on the task"},
        "tvm": {"runner": TIMING,
                "builder": "schedb WarmBuilder shared across batches, swapped in for ms.builder.LocalBuilder"
                           " (as seen by post_optimization/space.py); search quality at equal"
                           " measurement counts is compared, not wall time",
                "start_time": "start measured afresh with its runner (not a trial), replacing"
                              " the fixture's stored run_secs",
                "random": f"space.py's random seeded with {args.seed}"},
        "final": {"engine": "schedb Engine builder + LocalRunner", "number": 3, "repeat": args.final_repeat,
                  "statistic": "median of all samples (the machine runs other jobs: load spikes skew means);"
                               " means are kept too",
                  "rounds": args.final_rounds, "interleaved": True,
                  "tvm_best_applied_as": "TuningRecord trace applied with its postproc (as a database record)",
                  "ours_and_start_applied_as": "schedb.tir.replay.apply_trace (postprocessors rerun)"},
        "nice": 10,
    }


def _ci_ms(v):
    """median_ci of a final entry's samples, in ms (None if it failed)."""
    return report.median_ci([x / 1e3 for x in v["samples_us"]]) if v else None


def _digits(x_ms: float) -> int:
    """Decimals for 4 significant digits in ms."""
    return max(1, 3 - math.floor(math.log10(x_ms))) if x_ms > 0 else 4


def _short(name: str, width: int = 24) -> str:
    name = name.removeprefix("fused_")
    return name if len(name) <= width else name[: width - 1] + "…"


def _rounds(v, n_rounds):
    """A final entry's samples (us) split into its interleaved rounds."""
    per = len(v["samples_us"]) // n_rounds
    return [v["samples_us"][r * per:(r + 1) * per] for r in range(n_rounds)]


def ceiling(result) -> list[str]:
    """Markdown lines: how far past TVM's droplet (at the compared trials) the kernels of the
    long searches (--long times the trials, both searches) and the best kernel anyone found
    lie. Geometric means with a bootstrap interval over each task's per-round ratios
    (every round timed all of a task's kernels, interleaved)."""
    s = result["settings"]
    rounds = s["final"]["rounds"]
    cols = {"ours_long": "ours, long", "tvm_long": "TVM, long", "best": "best found by any"}
    per_task = {c: [] for c in cols}
    lines = [f"**Ceiling: both searches again with up to {s['long']}x the trials**", "",
             "The same searches from the same start, ours given all the trials and TVM's droplet as many "
             "as it asks for before it stops improving. "
             "TVM's droplet at the compared trials over each kernel: > 1 means the kernel is faster. "
             "\"best found by any\" is the fastest final median among the start, both searches and both "
             "long searches (choosing the fastest favours it: an upper estimate of what these searches can reach).",
             "", "| task | trials TVM long / ours long | " + " | ".join(cols.values()) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for r in result["tasks"]:
        f = r.get("final") or {}
        if not (f.get("tvm") and "long" in r):
            continue
        found = {k: v for k, v in f.items() if v and k not in ("start_again", "tvm_as_measured")}
        best = min(found, key=lambda k: found[k]["median_ms"])
        tvm = [median(x) for x in _rounds(f["tvm"], rounds)]
        cells = []
        for c in cols:
            k = best if c == "best" else c
            if not f.get(k):
                cells.append("-")
                continue
            ratios = [t / median(x) for t, x in zip(tvm, _rounds(f[k], rounds))]
            per_task[c].append(ratios)
            cells.append(f"{f['tvm']['median_ms'] / f[k]['median_ms']:.3f}" + (f" ({best})" if c == "best" else ""))
        lg = r["long"]
        lines.append(f"| {r['fixture']}/{r['task']} | {lg.get('tvm_long', {}).get('measured', '-')} / "
                     f"{lg['ours_long']['trials']} | " + " | ".join(cells) + " |")
    lines.append("")
    for c, name in cols.items():
        if per_task[c]:
            g = report.geomean_ci(per_task[c])
            lines.append(f"- TVM (compared trials) over {name}: geometric mean {g['geomean']:.3f}x "
                         f"[{g['ci_low']:.3f}, {g['ci_high']:.3f}] over {g['groups']} tasks (95% bootstrap "
                         "over the per-round ratios).")
    return lines


def render(result) -> tuple[str, object]:
    """(markdown, matplotlib figure) from a result dict: every number comes from it (the
    intervals from the raw final samples in it)."""
    lines, bars, same = task_table(result)
    geo, gm = result["geomean_tvm_over_ours"], result["geomean_tvm_over_ours_by_means"]
    lines.append("")
    lines.append(f"Geometric mean of TVM best / ours best over {len(bars)} tasks: **{geo:.3f}x** by final medians"
                 + (f", {gm:.3f}x by final means." if gm else ".") if geo else "Geometric mean: n/a")
    if same:
        lines.append(f"TVM's and our best are the same kernel (the start) on {', '.join(same)}: "
                     "that ratio is measurement noise, and it is in the geometric mean.")
    s = result["settings"]["final"]
    n = s["rounds"] * s["repeat"]
    lines += ["", protocol(s, n), "", *noise_floor(result)]
    if result["settings"].get("long"):
        lines += ["", *ceiling(result)]
    lines += ["", report.machine_line(result["machine"])
              + f" Wall time of the run: {result.get('wall_time_s', '?')} s."]
    return "\n".join(lines), figure(bars, result["machine"], geo, n)


def task_table(result) -> tuple[list[str], list[tuple], list[str]]:
    """The per-task table's lines, the figure's bars (label, ratio, low, high, note) and the tasks
    where both searches ended on the start kernel."""
    lines = [
        "# Droplet search: schedb vs TVM's PostOpt droplet (`meta_schedule.post_optimization`)", "",
        "Final times in ms: median [95% interval]. TVM / ours > 1: ours is faster.", "",
        "| task | kind | start ms | TVM PostOpt ms | ours ms | trials TVM / ours | ours p (search) "
        "| TVM / ours | range from the intervals |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bars, same = [], []
    for r in result["tasks"]:
        name = f"{r['fixture']}/{r['task']}"
        if "final" not in r:
            lines.append(f"| {name} | {r['kind']} | {r.get('error', '')} | | | | | | |")
            continue
        f, tvm, ours = r["final"], r["tvm"], r["ours"]
        ci = {k: _ci_ms(f.get(k)) for k in ("start", "tvm", "ours")}
        d = _digits(min((c["median"] for c in ci.values() if c), default=0))
        cell = {k: (report.fmt_ci(c, unit="", digits=d).strip() if c else ("error" if k not in f else "failed"))
                for k, c in ci.items()}
        p = "-" if ours["pvalue"] is None else f"{ours['pvalue']:.2g}"
        ratio, rng = "-", "-"
        if "ratio_tvm_over_ours" in r and ci["tvm"] and ci["ours"]:
            lo = ci["tvm"]["ci_low"] / ci["ours"]["ci_high"]
            hi = ci["tvm"]["ci_high"] / ci["ours"]["ci_low"]
            ratio, rng = f"{r['ratio_tvm_over_ours']:.3f}", f"[{lo:.3f}, {hi:.3f}]"
            note = _same_note(r)
            if note == "same kernel":
                same.append(name)
            bars.append((f"{r['fixture']}/{_short(r['task'])}", r["ratio_tvm_over_ours"], lo, hi, note))
        lines.append(f"| {name} | {r['kind']} | {cell['start']} | {cell['tvm']} | {cell['ours']} | "
                     f"{tvm.get('measured', '-')} / {ours['trials']} | {p} | {ratio} | {rng} |")
    return lines, bars, same


def _same_note(r) -> str:
    if r.get("tvm_best_same_kernel_as_start") and r.get("ours_best_same_kernel_as_start"):
        return "same kernel"
    if r.get("ours_best_same_kernel_as_start"):
        return "ours = start"
    if r.get("tvm_best_same_kernel_as_start"):
        return "TVM = start"
    return ""


def protocol(s: dict, n: int, conf: float = 0.95) -> str:
    return (
        f"Final times: every kernel built once and run in {s['rounds']} interleaved rounds (order rotated "
        f"each round) x {s['repeat']} repeats (each the mean of number={s['number']} runs) with one schedb "
        f"Engine: n = {n} samples per kernel, all kept in the JSON. Median with a distribution-free "
        f"{conf:.0%} interval: the order statistics of the sorted samples that a binomial(n, 1/2) brackets "
        "(`report.median_ci`, scipy.stats.quantile_test; no normality assumed). The intervals treat the "
        "samples as independent; samples of one round share its load, so they understate the run's noise: "
        "compare them with the noise floor below. \"range from the intervals\" is TVM's interval over "
        "ours, end to end (low / high, high / low): it contains the true ratio of medians whenever both intervals "
        "contain their medians (probability >= 90%), and it contains 1.0 exactly when the two intervals overlap. \"ours p\" is the p of "
        "droplet's final head-to-head, a one-sided paired t-test on the per-round log ratios of its end point over "
        "its start, with which our search accepted its end point (- = it kept the start).")


def noise_floor(result) -> list[str]:
    lines = ["Noise floor: the start kernel measured twice in the same rotation (second copy applied as TVM "
             "applies a record):"]
    for r in result["tasks"]:
        if "noise_start_again_over_start" in r:
            extra = []
            if r.get("ours_best_same_kernel_as_start"):
                extra.append("ours = start kernel")
            if r.get("tvm_best_same_kernel_as_start"):
                extra.append("TVM = start kernel")
            if r["tvm"].get("best_measured_without_postproc") and r["final"].get("tvm_as_measured"):
                c = _ci_ms(r["final"]["tvm_as_measured"])
                extra.append(f"TVM's best was timed without postproc: "
                             f"{report.fmt_ci(c, digits=_digits(c['median']))} as timed, deployed with it")
            lines.append(f"- {r['fixture']}/{r['task']}: start again / start = "
                         f"{r['noise_start_again_over_start']:.3f}" + (f" ({'; '.join(extra)})" if extra else ""))
    return lines


def figure(bars, m: dict, geo, n: int):
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(bars) + 1.8))
    y = list(range(len(bars)))[::-1]
    ratios = [b[1] for b in bars]
    # Bars start at 1.0 (no change): green = ours faster, red = TVM's faster, gray = the same kernel.
    colors = ["tab:gray" if b[4] == "same kernel" else "tab:green" if b[1] > 1 else "tab:red" for b in bars]
    ax.barh(y, [x - 1 for x in ratios], left=1.0, color=colors, alpha=0.85)
    ax.errorbar(ratios, y, xerr=[[b[1] - b[2] for b in bars], [b[3] - b[1] for b in bars]], fmt="none",
                capsize=3, ecolor="black", label="range from the two 95% intervals")
    for yi, b in zip(y, bars):
        ax.text(max(b[1], b[3]) + 0.01, yi, f"{b[1]:.3f}" + (f"  ({b[4]})" if b[4] else ""),
                va="center", fontsize=8)
    ax.axvline(1.0, color="black", lw=1, ls="--")
    ax.set_yticks(y, [b[0] for b in bars], fontsize=8)
    ax.set_xlabel("speed-up of ours over TVM's PostOpt droplet (TVM median / ours median)")
    ax.set_xlim(min(0.9, min(b[2] for b in bars) - 0.05) if bars else 0.9,
                (max(b[3] for b in bars) + 0.35) if bars else 2)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Droplet: ours vs TVM PostOpt, geomean {f'{geo:.3f}x' if geo else 'n/a'} "
                 f"(final medians, n={n} each)\n"
                 f"TVM {m['tvm']}, {m['cpu']}, {m['cores']} cores", fontsize=10)
    fig.tight_layout()
    return fig

if __name__ == "__main__":
    main()
