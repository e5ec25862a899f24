"""Does MetaSchedule's CPU weight prepacking pay on this machine? Kernel by kernel.

TVM's CPU recipe (``relax.get_pipeline("static_shape_tuning", ..., cpu_weight_prepack=True)``)
runs ``AttachAttrLayoutFreeBuffers`` before tuning, so every PrimFunc argument that is a
model weight (a Relax constant after schedb's inference-grade import) is marked
``layout_free_buffers`` and MetaSchedule's ``RewriteLayout`` postprocessor may store it in
another layout; after tuning ``SplitLayoutRewritePreproc`` + ``LiftTransformParams`` +
``FoldConstant`` move that weight transform out of the kernel, to run once at load.

For the 5 heaviest kernels of resnet50 and googlenet (by weight x FLOPs of the kernel,
``estimate_tir_flops``; fixed before any tuning) this tunes each kernel twice with the same
MetaSchedule settings, seed and trial count, one task at a time, in a fresh work dir:

* **plain**: the task as schedb extracts it now;
* **prepacked**: the same kernel from the module after ``AttachAttrLayoutFreeBuffers``.

Then it builds the best schedule of each and times them interleaved, round by round
(A/B order alternating), next to PyTorch eager (2 threads) running the same layer
(conv2d with the same shape, stride and padding + the eval batch norm, residual add and
ReLU the kernel fuses):

* plain: the tuned kernel;
* prepacked: the tuned kernel with its weight layout-rewrite block removed
  (``RemoveWeightLayoutRewriteBlock``, what ``SplitLayoutRewritePreproc`` leaves in the
  model), called with the weight already in the new layout: the per-inference cost;
* prepacked + transform: the kernel with the rewrite block left in (the weight is
  re-laid out on every call), for reference; its output is checked against plain.

Background tuning named by ``$SCHEDB_BENCH_PAUSE`` (a file holding its process group id) is
stopped while kernels are timed and resumed afterwards, always.

    python benchmarks/bench_prepack.py [--trials 32] [--models resnet50,googlenet] [--top 5]
    python benchmarks/bench_prepack.py --trials 8 --models resnet50 --top 1 --name prepack_smoke
    python benchmarks/bench_prepack.py --replot
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import report
from schedb import host_cores
from layers import (TorchLayer, fixture_tuning_paused, match_conv, plain_kernel, prepacked_kernel, sample_each, select,
                    torch_convs, tune_one)



# ------------------------------------------------------------------ building and timing
def build(k: dict, target, min_ms: float) -> dict:
    """plain, prepacked (rewrite block removed, weight pre-laid-out) and prepacked +
    transform; checks prepacked + transform against plain on the same inputs."""
    import tvm_ffi

    plain = plain_kernel(k["_sch_plain"].mod, target, min_ms)
    full_mod = k["_sch_marked"].mod
    full = plain_kernel(full_mod, target, min_ms)
    prepacked = prepacked_kernel(full_mod, target, min_ms)
    # Same inputs (the arrays are drawn from the same seed and shapes): the schedules agree?
    for a, b in zip(plain.args[:-1], full.args[:-1]):
        b.copyfrom(a.numpy())
    want, got = plain.run(), full.run()
    k["max_abs_err_prepacked_vs_plain"] = float(np.max(np.abs(want - got)))
    w = k["layout_free"][0]  # the conv weight (the first layout-free argument)
    k["weight_shape_plain"] = [int(d) for d in plain.args[w].shape]
    k["weight_shape_prepacked"] = [int(d) for d in prepacked.args[w].shape]
    k["layout_rewritten"] = k["weight_shape_plain"] != k["weight_shape_prepacked"] or not tvm_ffi.structural_equal(
        prepacked.mod, full_mod)
    return {"plain": plain, "prepacked": prepacked, "prepacked + transform": full}


def time_all(kernels: list[dict], rounds: int, max_pause_s: float) -> dict:
    """Round by round, every kernel's variants back to back, the plain/prepacked order
    alternating between rounds; returns the load average and seconds of the pause."""
    names = ["plain", "prepacked", "prepacked + transform"]
    for k in kernels:
        k["samples_us"] = {n: [] for n in [*names, "pytorch"]}
    with fixture_tuning_paused() as pgid:
        time.sleep(2)  # let the stopped workers' cores go idle
        load = [round(x, 2) for x in os.getloadavg()]
        t0 = time.perf_counter()
        for r in range(rounds):
            order = names if r % 2 == 0 else [names[1], names[0], names[2]]
            sample_each((k["samples_us"][n], timer) for k in kernels
                        for n, timer in [*((n, k["_built"][n]) for n in order), ("pytorch", k.get("_torch_layer"))]
                        if timer is not None)
            if time.perf_counter() - t0 > max_pause_s:
                print(f"timing stopped after {r + 1} rounds: the pause limit ({max_pause_s:.0f} s) is reached")
                break
        seconds = time.perf_counter() - t0
        load_end = [round(x, 2) for x in os.getloadavg()]
    # (The 1-minute load average lags: the value at the start still shows the tuning.)
    return {"paused_pgid": pgid, "load_average_paused": load, "load_average_end_of_timing": load_end,
            "timing_s": round(seconds, 1), "rounds_done": r + 1}


# ------------------------------------------------------------------ summary
def summarize(res: dict):
    for k in res["kernels"]:
        s = k["samples_us"]
        k["cells"] = {n: report.median_ci(v) for n, v in s.items() if v}
        k["ratio"] = report.median_ci([b / a for a, b in zip(s["plain"], s["prepacked"])])
        if s["pytorch"]:
            k["plain_over_pytorch"] = report.median_ci([a / t for a, t in zip(s["plain"], s["pytorch"])])
    n = min(len(k["samples_us"]["plain"]) for k in res["kernels"])
    per_round = [math.exp(np.mean([math.log(k["samples_us"]["prepacked"][r] / k["samples_us"]["plain"][r])
                                   for k in res["kernels"]])) for r in range(n)]
    logs = np.array([math.log(k["ratio"]["median"]) for k in res["kernels"]])
    rng = np.random.default_rng(0)
    boot = [math.exp(rng.choice(logs, logs.size).mean()) for _ in range(10000)]
    res["geomean"] = {
        "of_median_ratios": math.exp(logs.mean()),
        "per_round": report.median_ci(per_round),
        "bootstrap_over_kernels": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
    }
    g = res["geomean"]
    pays = g["per_round"]["ci_high"] < 1.0 and g["bootstrap_over_kernels"][1] < 1.0
    hurts = g["per_round"]["ci_low"] > 1.0 and g["bootstrap_over_kernels"][0] > 1.0
    res["verdict"] = "pays" if pays else "costs" if hurts else "no clear difference"


def render(res: dict):
    def us(c):
        return report.fmt_ci(c, "", 0).strip() if c else ""

    rows = ["| model | kernel | weight | plain µs | prepacked µs | ratio prepacked / plain | prepacked + transform µs "
            "| PyTorch µs | search s (plain / prepacked) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in res["kernels"]:
        c = k["cells"]
        rows.append(f"| {k['model']} | {k['task']} | {k['weight']} | {us(c['plain'])} | {us(c['prepacked'])} "
                    f"| {report.fmt_ci(k['ratio'], 'x', 3)} | {us(c['prepacked + transform'])} "
                    f"| {us(c.get('pytorch'))} | {_wall(k, 'plain')} / {_wall(k, 'prepacked')} |")
    g, s = res["geomean"], res["settings"]
    left = [f"{k['model']} {k['task']}" for k in res.get("failed", [])]
    skipped = (f"{len(res['kernels'])} of them tuned and timed ({len(left)} left out: "
               f"{', '.join(left)}; see the JSON for why), " if left else "")
    verdict = {"pays": "prepacking pays: the prepacked kernels are faster (both intervals below 1.0)",
               "costs": "prepacking does not pay: the prepacked kernels are slower (both intervals above 1.0)",
               "no clear difference": "no clear difference: an interval contains 1.0"}[res["verdict"]]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"The {s['top']} heaviest kernels (weight x FLOPs) of each model, chosen before tuning; {skipped}"
        "each tuned twice with MetaSchedule, "
        f"{s['trials']} trials, seed {s['seed']}, {s['per_iter']} per batch, one search each: plain, and with its "
        "weights marked layout-free (`AttachAttrLayoutFreeBuffers`, so `RewriteLayout` may prepack them). "
        "Prepacked: the kernel without its weight-rewrite block, on the weight already laid out "
        "(the per-inference cost once the transform runs at load); prepacked + transform: the rewrite "
        "inside the kernel, for reference. PyTorch: the same conv2d + batch norm (+ residual) + ReLU, eager, "
        f"2 threads. Median [95% interval] over {res['timing']['rounds_done']} interleaved rounds, background "
        f"tuning paused (load average at the end of timing {res['timing'].get('load_average_end_of_timing')}); ratio: median of per-round "
        "ratios.", "", *rows, "",
        f"**Verdict: {verdict}.** Geometric mean of the {len(res['kernels'])} prepacked / plain ratios: "
        f"{g['of_median_ratios']:.3f}x; per-round geometric mean {report.fmt_ci(g['per_round'], 'x', 3)}; "
        f"95% bootstrap interval over kernels [{g['bootstrap_over_kernels'][0]:.3f}, "
        f"{g['bootstrap_over_kernels'][1]:.3f}]. Each variant is one search: its tuning luck is in the ratio."])
    return md, None


def _wall(k: dict, variant: str) -> str:
    w = k.get("tuning", {}).get(variant, {}).get("wall_s")
    return f"{w:.0f}" if w is not None else "?"


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,googlenet")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--per-iter", type=int, default=32, help="candidates per MetaSchedule batch")
    ap.add_argument("--tune-budget", type=float, default=None,
                    help="seconds: no kernel starts tuning after this (those left are reported as skipped)")
    ap.add_argument("--reuse", action="store_true", help="read work dirs under --scratch that hold records")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-ms", type=float, default=50.0, help="each sample runs the kernel for at least this long")
    ap.add_argument("--max-pause", type=float, default=600.0, help="seconds the fixture tuning may stay stopped")
    ap.add_argument("--scratch", default=None, help="MetaSchedule work dirs (default: a new temp dir)")
    return ap


def main(argv=None):
    a = report.parse(arguments(), argv, "prepack", render)
    if a is None:
        return
    report.publish(a.name, run(a), render)


def run(a) -> dict:
    target = report.host_target()
    scratch = Path(a.scratch or tempfile.mkdtemp(prefix="schedb-prepack-"))
    res = {"machine": report.describe(), "started": report.now(),
           "settings": {"models": a.models.split(","), "top": a.top, "trials": a.trials, "per_iter": a.per_iter,
                        "seed": a.seed, "rounds": a.rounds, "tune_budget_s": a.tune_budget, "min_ms": a.min_ms, "scratch": str(scratch),
                        "selection": "weight x estimate_tir_flops of the plain task, before tuning",
                        "runner": "LocalRunner number=3 repeat=1 min_repeat_ms=50, schedb WarmBuilder"}}
    kernels = pick_kernels(a, target)
    tune_all(kernels, a, scratch)
    timed = [k for k in kernels if "errors" not in k]
    for k in timed:
        k["_built"] = build(k, target, a.min_ms)
        k["_torch_layer"] = TorchLayer(k, a.min_ms) if k["_conv"] is not None else None
    import torch

    torch.set_num_threads(host_cores())
    res["timing"] = time_all(timed, a.rounds, a.max_pause)
    res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["finished"] = report.now()
    res["kernels"] = [{x: v for x, v in k.items() if not x.startswith("_")} for k in timed]
    res["failed"] = [{x: v for x, v in k.items() if not x.startswith("_")} for k in kernels if "errors" in k]
    summarize(res)
    return res


def pick_kernels(a, target) -> list[dict]:
    """The heaviest kernels of each model with their PyTorch layer, rank by rank across the
    models, so a time budget that runs out cuts both alike."""
    kernels = []
    for model in a.models.split(","):
        chosen = select(model, target, a.top)
        convs = torch_convs(chosen[0]["_torch"], chosen[0]["_input_shape"]) if chosen[0]["_torch"] is not None else []
        for k in chosen:
            k["_conv"] = match_conv(k, convs)
            k["torch_layer"] = k["_conv"]  # None: PyTorch has no layer of these shapes alone
        print(model, "->", [(k["task"], k["weight"]) for k in chosen], flush=True)
        kernels += chosen
    return sorted(kernels, key=lambda k: (k["rank"], a.models.split(",").index(k["model"])))


def tune_all(kernels: list[dict], a, scratch: Path):
    """Each kernel tuned plain and prepacked; failures and skips recorded on the kernel."""
    from schedb.search.measure import WarmBuilder

    builder = WarmBuilder()
    t_tune = time.perf_counter()
    for i, k in enumerate(kernels):
        if a.tune_budget is not None and time.perf_counter() - t_tune > a.tune_budget:
            k["errors"] = {"skipped": f"tuning time budget ({a.tune_budget:.0f} s) spent before this kernel"}
            print(f"{k['model']} {k['task']}: skipped, tuning time budget spent", flush=True)
            continue
        for variant, key in (("plain", "_plain"), ("prepacked", "_marked")):
            wd = scratch / f"{k['model']}-{k['rank']}-{variant}"
            try:
                sch, secs, valid, wall = tune_one(k[key], wd, a.trials, a.per_iter, a.seed, builder, a.reuse)
            except Exception as e:  # noqa: BLE001 - recorded, and the kernel left out of the table
                print(f"{k['task']} {variant}: tuning failed: {e}", flush=True)
                k.setdefault("errors", {})[variant] = str(e)[:500]
                continue
            k[f"_sch_{variant if variant == 'plain' else 'marked'}"] = sch
            k.setdefault("tuning", {})[variant] = {"wall_s": wall and round(wall, 1), "valid_records": valid,
                                                  "metaschedule_best_us": [s * 1e6 for s in secs],
                                                  "work_dir": str(wd)}
            print(f"[{i + 1}/{len(kernels)}] {k['model']} {k['task']} {variant}: {wall or 0:.0f} s, "
                  f"MetaSchedule best {np.mean(secs) * 1e6:.1f} us ({valid} valid)", flush=True)

if __name__ == "__main__":
    main()
