"""How far does MetaSchedule's design space go on the heaviest kernels, given the trials?

For the ``--top`` heaviest kernels (weight x FLOPs, fixed before tuning) of each model,
MetaSchedule tunes each kernel alone, plain and with its weights layout-free (prepacked,
``AttachAttrLayoutFreeBuffers``), level by level: every kernel reaches 128 trials before
any goes on to 256, then 512, then 1024, so a run stopped at any point leaves comparable
curves. Each level is one ``tune_tasks`` call on the kernel's own work dir (the line
count of its records file marks where each level ended); the next call starts its
evolutionary search from the records already there (its cost model starts anew at each
level). ``run`` resumes where it stopped (state in SCRATCH/state.json).

``time`` builds, for every kernel, variant and level reached, the best schedule found
within that many trials, and times them round by round next to the same layer in PyTorch
eager (2 threads): the GFLOP/s curve against trials, with PyTorch per layer.

    python benchmarks/bench_ceiling.py run --scratch DIR [--models resnet50,alexnet] [--top 5]
    python benchmarks/bench_ceiling.py time --scratch DIR [--rounds 11]
    python benchmarks/bench_ceiling.py --replot
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import report
from layers import select, tune_one

LEVELS = (128, 256, 512, 1024)
VARIANTS = (("plain", "_plain"), ("prepacked", "_marked"))


def load_state(scratch: Path) -> dict:
    p = scratch / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {"jobs": {}}


def save_state(scratch: Path, state: dict) -> None:
    tmp = scratch / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, scratch / "state.json")


def record_lines(work_dir: Path) -> int:
    p = work_dir / "database_tuning_record.json"
    return sum(1 for _ in p.open()) if p.is_file() else 0


def run(a) -> None:
    """Tune every kernel and variant level by level, saving progress after each call."""
    from schedb.search.measure import WarmBuilder

    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "pgid").write_text(str(os.getpgid(0)))  # what the timing stops (layers.PAUSE_ENV)
    target = report.host_target()
    state = load_state(scratch)
    state.setdefault("machine", report.describe())
    kernels = [k for m in a.models.split(",") for k in select(m, target, a.top)]
    builder = WarmBuilder()
    for level in LEVELS:
        for k in sorted(kernels, key=lambda k: k["rank"]):
            for variant, key in VARIANTS:
                name = f"{k['model']}-{k['rank']}-{variant}"
                job = state["jobs"].setdefault(name, {"model": k["model"], "rank": k["rank"], "task": k["task"],
                                                      "variant": variant, "weight": k["weight"],
                                                      "flops": k["flops"], "arg_shapes": k["arg_shapes"],
                                                      "levels": []})
                done = job["levels"][-1]["trials"] if job["levels"] else 0
                if done >= level:
                    continue
                t0 = time.perf_counter()
                tune_one(k[key], scratch / name, level - done, a.per_iter, a.seed + level, builder, more=True)
                job["levels"].append({"trials": level, "records": record_lines(scratch / name),
                                      "wall_s": round(time.perf_counter() - t0, 1),
                                      "ended": report.now(), "load_average": [round(x, 2) for x in os.getloadavg()]})
                save_state(scratch, state)
                print(f"{name} {k['task']}: {level} trials ({job['levels'][-1]['wall_s']:.0f} s)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", nargs="?", choices=["run", "time"])
    ap.add_argument("--scratch", help="work dirs and progress (run resumes from it)")
    ap.add_argument("--models", default="resnet50,alexnet")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--per-iter", type=int, default=64, help="candidates per MetaSchedule batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--min-ms", type=float, default=50.0)
    report.result_options(ap, "ceiling")
    a = ap.parse_args(argv)
    if a.phase == "run":
        run(a)


if __name__ == "__main__":
    main()
