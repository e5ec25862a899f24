"""How far does MetaSchedule's design space go on the heaviest kernels, given the trials?

For the ``--top`` heaviest kernels (weight x FLOPs, fixed before tuning) of each model,
MetaSchedule tunes each kernel alone, plain, with its weights layout-free (prepacked,
``AttachAttrLayoutFreeBuffers``) and blocked (the convolution in the layout oneDNN uses,
NCHW16c with OIHW16i16o weights folded at compile time: layers.blocked_tasks), level by level: every kernel reaches 128 trials before
any goes on to 256, then 512, then 1024, so a run stopped at any point leaves comparable
curves. Each level is one ``tune_tasks`` call on the kernel's own work dir (a level stopped
part-way is finished by a second call for the trials it lacks; the line
count of its records file marks where each level ended); the next call starts its
evolutionary search from the records already there (its cost model starts anew at each
level). ``run`` resumes where it stopped (state in SCRATCH/state.json).

``pack`` keeps the run's records (gzip-compressed, without MetaSchedule's logs) and its
progress in benchmarks/runs/ceiling, so that ``run --scratch DIR`` on another day (or
machine of the same kind) starts from there: a run resumes from the packed copy when DIR
is new and the copy was made on the same CPU with the same TVM thread count.

``time`` builds, for every kernel, variant and level reached, the best schedule found
within that many trials, and times them round by round next to the same layer in PyTorch
eager (2 threads): the GFLOP/s curve against trials, with PyTorch per layer.

    python benchmarks/bench_ceiling.py run --scratch DIR [--models resnet50,alexnet] [--top 5] [--upto 512]
    python benchmarks/bench_ceiling.py pack --scratch DIR
    python benchmarks/bench_ceiling.py time --scratch DIR [--rounds 11]
    python benchmarks/bench_ceiling.py --replot
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

import report
from schedb import host_cores
from shared import SETTLE_S, load_state, save_state
from layers import (TorchLayer, blocked_tasks, fixture_tuning_paused, match_conv, plain_kernel, prepacked_kernel,
                    sample_each, select, torch_convs, tune_one)

LEVELS = (128, 256, 512, 1024)
PACKED = report.RESULTS.parent / "runs" / "ceiling"
FILES = ("database_workload.json", "database_tuning_record.json")
VARIANTS = (("plain", "_plain"), ("prepacked", "_marked"), ("blocked", "_blocked"))


def record_lines(work_dir: Path) -> int:
    p = work_dir / "database_tuning_record.json"
    return sum(1 for _ in p.open()) if p.is_file() else 0


def pack(scratch: Path, dest: Path = PACKED) -> None:
    """The run's progress and records, compressed, in ``dest`` (replaced)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(scratch / "state.json", dest / "state.json")
    for name in load_state(scratch)["jobs"]:
        (dest / name).mkdir()
        for f in FILES:
            with open(scratch / name / f, "rb") as src, gzip.open(dest / name / (f + ".gz"), "wb") as out:
                shutil.copyfileobj(src, out)


def unpack(scratch: Path, src: Path = PACKED) -> None:
    """A packed run into a new scratch folder, to resume it."""
    shutil.copy(src / "state.json", scratch / "state.json")
    for name in load_state(scratch)["jobs"]:
        (scratch / name).mkdir()
        for f in FILES:
            with gzip.open(src / name / (f + ".gz"), "rb") as packed, open(scratch / name / f, "wb") as out:
                shutil.copyfileobj(packed, out)


def same_machine(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("cpu", "llvm_mcpu", "tvm_threads"))


def run(a) -> None:
    """Tune every kernel and variant level by level, saving progress after each call."""
    from schedb.search.measure import WarmBuilder

    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if not (scratch / "state.json").exists() and (PACKED / "state.json").exists():
        if same_machine(load_state(PACKED).get("machine") or {}, report.describe()):
            unpack(scratch)
        else:  # its records' times are another machine's (or another thread count's)
            print(f"{PACKED}: packed on another machine; starting anew", flush=True)
    (scratch / "pgid").write_text(str(os.getpgid(0)))  # what the timing stops (layers.PAUSE_ENV)
    target = report.host_target()
    state = load_state(scratch)
    state.setdefault("machine", report.describe())
    kernels = [k for m in a.models.split(",") for k in kernels_of(m, target, a)]
    builder = WarmBuilder()
    for level in (lv for lv in LEVELS if lv <= a.upto):
        for k in sorted(kernels, key=lambda k: k["rank"]):
            for variant, key in variants(a):
                name = f"{k['model']}-{k['rank']}-{variant}"
                job = state["jobs"].setdefault(name, {"model": k["model"], "rank": k["rank"], "task": k["task"],
                                                      "variant": variant, "weight": k["weight"],
                                                      "flops": k["flops"], "arg_shapes": k["arg_shapes"],
                                                      "levels": []})
                if job["levels"] and job["levels"][-1]["trials"] >= level:
                    continue
                # A level stopped part-way left its records: only the rest is tuned (one line a trial).
                done = record_lines(scratch / name)
                t0 = time.perf_counter()
                if done < level:
                    tune_one(k[key], scratch / name, level - done, a.per_iter, a.seed + level, builder, more=True)
                job["levels"].append({"trials": level, "records": record_lines(scratch / name),
                                      "wall_s": round(time.perf_counter() - t0, 1),
                                      "ended": report.now(), "load_average": [round(x, 2) for x in os.getloadavg()]})
                save_state(scratch, state)
                print(f"{name} {k['task']}: {level} trials ({job['levels'][-1]['wall_s']:.0f} s)", flush=True)


def variants(a) -> list[tuple[str, str]]:
    """The variants ``--variants`` names, with the key of each kernel's task for it."""
    return [(v, key) for v, key in VARIANTS if v in a.variants.split(",")]


def kernels_of(model: str, target, a) -> list[dict]:
    """The model's ``--top`` heaviest kernels, with their blocked counterparts when asked for."""
    from schedb import load_model

    chosen = select(model, target, a.top)
    if "blocked" in a.variants.split(","):
        blocked_tasks(load_model(model), target, chosen)
    return chosen


def records(work_dir: Path) -> list[tuple[object, float | None]]:
    """(trace JSON, mean run time or None if it failed) of each record line, in the order
    MetaSchedule committed them."""
    out = []
    for line in (work_dir / "database_tuning_record.json").open():
        _, (trace, run_secs, *_rest) = json.loads(line)
        secs = [float(x) for x in run_secs or []]
        out.append((trace, sum(secs) / len(secs) if secs and max(secs) < 1e9 else None))
    return out


def best_within(rows: list, n: int) -> tuple[object, float] | None:
    ok = [(t, s) for t, s in rows[:n] if s is not None]
    return min(ok, key=lambda x: x[1]) if ok else None


def curve(rows: list, flops: float) -> list[list[float]]:
    """[record count, best GFLOP/s so far] at every improvement: the search's own view."""
    out, best = [], None
    for i, (_, s) in enumerate(rows):
        if s is not None and (best is None or s < best):
            best = s
            out.append([i + 1, flops / s / 1e9])
    return out


def scheduled(extracted, trace_json):
    """The kernel a record describes: its trace, postprocessing included, on the task."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.schedule import Trace

    func = extracted.dispatched[0]
    sch = Schedule(func)
    Trace.apply_json_to_schedule(trace_json, sch)
    return sch.mod


def build_all(a, state: dict, target) -> tuple[list[dict], dict]:
    """Every (kernel, variant, level reached) built from its best record at that level,
    and the PyTorch layer of each kernel."""
    scratch, built, torch_layers = Path(a.scratch), [], {}
    for m in a.models.split(","):
        chosen = kernels_of(m, target, a)
        convs = torch_convs(chosen[0]["_torch"], chosen[0]["_input_shape"])
        for k in chosen:
            k["_conv"] = match_conv(k, convs)
            if k["_conv"] is not None:
                torch_layers[(m, k["rank"])] = TorchLayer(k, a.min_ms)
            for variant, key in variants(a):
                job = state["jobs"].get(f"{m}-{k['rank']}-{variant}")
                rows = records(scratch / f"{m}-{k['rank']}-{variant}") if job else []
                if job:
                    job["curve"] = curve(rows, k["flops"])
                for lv in job["levels"] if job else []:
                    best = best_within(rows, lv["records"])
                    if best is None:
                        continue
                    mod = scheduled(k[key], best[0])
                    kern = (prepacked_kernel if variant == "prepacked" else plain_kernel)(mod, target, a.min_ms)
                    built.append({"model": m, "rank": k["rank"], "task": k["task"], "flops": k["flops"],
                                  "variant": variant, "trials": lv["trials"], "search_best_us": best[1] * 1e6,
                                  "_kernel": kern})
    return built, torch_layers


def time_phase(a) -> None:
    import torch

    torch.set_num_threads(host_cores())
    state = load_state(Path(a.scratch))
    target = report.host_target()
    res = {"machine": report.describe(), "started": report.now(), "tuning": state["jobs"],
           "settings": {"models": a.models, "top": a.top, "rounds": a.rounds, "min_ms": a.min_ms,
                        "per_iter": a.per_iter, "levels": list(LEVELS), "settle_s": SETTLE_S,
                        "tuning_machine": state.get("machine")}}
    built, layers = build_all(a, state, target)
    samples = {i: [] for i in range(len(built))} | {k: [] for k in layers}
    with fixture_tuning_paused():
        res["load_average_timing"] = [round(x, 2) for x in os.getloadavg()]
        for _ in range(a.rounds):  # every kernel and layer once a round
            sample_each([*((samples[i], b["_kernel"]) for i, b in enumerate(built)),
                         *((samples[k], layer) for k, layer in layers.items())])
    res["kernels"] = [{**{x: v for x, v in b.items() if not x.startswith("_")}, "samples_us": samples[i]}
                      for i, b in enumerate(built)]
    res["pytorch"] = [{"model": m, "rank": r, "samples_us": samples[(m, r)]} for m, r in layers]
    res["finished"] = report.now()
    report.publish(a.name, res, render)


def gflops(flops: float, samples_us: list[float]) -> dict:
    c = report.median_ci(samples_us)
    return {"median": flops / c["median"] / 1e3, "ci_low": flops / c["ci_high"] / 1e3,
            "ci_high": flops / c["ci_low"] / 1e3, "n": c["n"], "coverage": c["coverage"]}


def render(res: dict):
    torch_at = {(p["model"], p["rank"]): p["samples_us"] for p in res["pytorch"]}
    cols = [(v, t) for v, _ in VARIANTS for t in LEVELS
            if any(k["variant"] == v and k["trials"] == t for k in res["kernels"])]
    rows = ["| model | kernel | GFLOP | " + " | ".join(f"{v} {t}" for v, t in cols) + " | PyTorch |",
            "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " | --- |"]
    seen = sorted({(k["model"], k["rank"], k["task"], k["flops"]) for k in res["kernels"]},
                  key=lambda x: (x[0] != "resnet50", x[1]))
    for m, r, task, flops in seen:
        cell = {(k["variant"], k["trials"]): k for k in res["kernels"] if (k["model"], k["rank"]) == (m, r)}
        vals = [report.fmt_ci(gflops(flops, cell[c]["samples_us"]), "", 0).strip() if c in cell else "" for c in cols]
        pt = report.fmt_ci(gflops(flops, torch_at[(m, r)]), "", 0).strip() if (m, r) in torch_at else ""
        rows.append(f"| {m} | `{task[:40]}` | {flops / 1e9:.3f} | " + " | ".join(vals) + f" | {pt} |")
    s = res["settings"]
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        f"GFLOP/s, median [95% interval] over {s['rounds']} interleaved rounds (background tuning paused), of the "
        "best schedule MetaSchedule found for each kernel within N trials (one search per kernel and variant, "
        f"{s['per_iter']} candidates a batch; prepacked: the kernel tuned with its weights layout-free, timed "
        "without its weight rewrite; blocked: its convolution in NCHW16c with OIHW16i16o weights, prepacked at "
        "compile time). PyTorch: the same layer in eager mode, 2 threads.", "", *rows])
    return md, plot(res)


def plot(res: dict):
    plt = report.pyplot()
    models = sorted({k["model"] for k in res["kernels"]})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    torch_at = {(p["model"], p["rank"]): p["samples_us"] for p in res["pytorch"]}
    for ax, m in zip(axes[0], models):
        for name, job in res["tuning"].items():
            if job["model"] != m or not job.get("curve"):
                continue
            xs, ys = zip(*job["curve"])
            ax.step(xs, ys, where="post", ls={"plain": "-", "prepacked": "--"}.get(job["variant"], "-."),
                    color=f"C{job['rank']}", label=f"#{job['rank']} {job['variant']}")
            if (m, job["rank"]) in torch_at and job["variant"] == "plain":
                ax.axhline(job["flops"] / np.median(torch_at[(m, job["rank"])]) / 1e3, color=f"C{job['rank']}",
                           lw=0.8, ls=":")
        ax.set(title=m, xlabel="records", ylabel="GFLOP/s")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Best GFLOP/s the search found (its own timing); dotted: the same layer in PyTorch eager")
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", nargs="?", choices=["run", "pack", "time"])
    ap.add_argument("--scratch", help="work dirs and progress (run resumes from it)")
    ap.add_argument("--models", default="resnet50,alexnet")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--per-iter", type=int, default=64, help="candidates per MetaSchedule batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--upto", type=int, default=LEVELS[-1], help="run: the last level to reach (trials)")
    ap.add_argument("--variants", default=",".join(v for v, _ in VARIANTS), help="of plain, prepacked, blocked")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--min-ms", type=float, default=50.0)
    report.result_options(ap, "ceiling")
    a = ap.parse_args(argv)
    if a.replot:
        report.replot(report.RESULTS / f"{a.name}.json", render)
    elif a.phase == "run":
        run(a)
    elif a.phase == "pack":
        pack(Path(a.scratch))
    elif a.phase == "time":
        time_phase(a)


if __name__ == "__main__":
    main()
