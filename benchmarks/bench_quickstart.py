"""The README's first quick-start command as a new user runs it: a clean clone of this
checkout, a fresh virtual environment, ``pip install -e .`` (timed, with the size it
leaves), then ``schedb ingest`` and ``schedb transfer`` exactly as the README gives them
(each timed as a whole process). The transfer report gives the tasks by source and the
model's latency next to untuned TVM and PyTorch eager. Background tuning named by
``$SCHEDB_BENCH_PAUSE`` is stopped meanwhile. ``--repeats`` runs it all that many times
(6 by default: the fewest whose [min, max] is a 95% interval of the median), each from a
clone of its own; the goal, the whole quick start within 5 minutes, is judged on that interval.

    python benchmarks/bench_quickstart.py [--repeats 6] [--keep DIR]
    python benchmarks/bench_quickstart.py --replot
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report
from layers import fixture_tuning_paused

INGEST = ["ingest", "fixtures/resnet50", "fixtures/alexnet", "--db", "demo.db"]
TRANSFER = ["transfer", "--model", "googlenet", "--db", "demo.db", "--exclude-model", "googlenet",
            "--report", "googlenet.json"]


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=sys.stderr)
    return round(time.perf_counter() - t0, 1)


def du_mb(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) // 2**20


def run(work: Path) -> dict:
    clone, venv = work / "schedb", work / "venv"
    subprocess.run(["git", "clone", "-q", str(report.RESULTS.parents[1]), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    res = {"install_s": timed([str(venv / "bin" / "pip"), "install", "-q", "-e", "."], clone)}
    res["venv_mb"] = du_mb(venv)
    schedb = str(venv / "bin" / "schedb")
    res["ingest_s"] = timed([schedb, *INGEST], clone)
    res["transfer_s"] = timed([schedb, *TRANSFER], clone)
    rep = json.loads((clone / "googlenet.json").read_text())
    res["by_source"] = {s: sum(t["source"] == s for t in rep["tasks"])
                        for s in ("exact", "neighbor", "anchor", "searched", "untuned")}
    res["tasks"] = len(rep["tasks"])
    res["search_wall_s"], res["e2e_wall_s"] = rep["search_wall_s"], rep["e2e_wall_s"]
    res["e2e"] = rep["e2e"]
    return res


GOAL_S = 300  # the whole quick start: install, ingest and transfer


def total_s(r: dict) -> float:
    return r["install_s"] + r["ingest_s"] + r["transfer_s"]


def render(res: dict):
    runs = res["runs"]
    r = sorted(runs, key=total_s)[len(runs) // 2]  # the run of the median total (the upper one of two)
    s = r["by_source"]
    lat = {k: report.fmt_ci(report.median_ci(v["samples_ms"])) for k, v in r["e2e"].items()}
    md = "\n".join([
        report.machine_line(res["machine"]), "",
        "| step | wall time |", "| --- | --- |",
        f"| `pip install -e .` (fresh venv, {r['venv_mb']:,} MB installed; packages from pip's cache, "
        "a first install downloads them too) | " f"{r['install_s']:.0f} s |",
        f"| `schedb {' '.join(INGEST)}` | {r['ingest_s']:.0f} s |",
        f"| `schedb {' '.join(TRANSFER)}` | {r['transfer_s']:.0f} s (search {r['search_wall_s']:.0f} s, "
        f"timing {r['e2e_wall_s'] or 0:.0f} s) |", "",
        f"GoogLeNet's {r['tasks']} tasks: {s['exact']} exact, {s['neighbor']} neighbour, {s['anchor']} anchor, "
        f"{s['searched']} searched, {s['untuned']} untuned."
        + " Latency, median [95% interval] over the transfer's own interleaved rounds: "
        + "; ".join(f"{k} {v}" for k, v in lat.items()) + "."])
    if len(runs) > 1:
        ci = report.median_ci([total_s(x) for x in runs])
        md += (f"\n\nThe whole quick start, {len(runs)} runs from fresh clones (the table: the run of the median): "
               f"{report.fmt_ci(ci, 's', 0)}; goal <= {GOAL_S} s: {report.verdict(ci, GOAL_S)}. Per run: "
               + ", ".join(f"{total_s(x):.0f}" for x in runs) + " s.")
    return md, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temp dir)")
    ap.add_argument("--repeats", type=int, default=6, help="runs, each from a fresh clone (6)")
    a = report.parse(ap, argv, "quickstart", render)
    if a is None:
        return
    work = Path(a.keep or tempfile.mkdtemp(prefix="schedb-quickstart-"))
    res = {"machine": report.describe(), "started": report.now()}
    with fixture_tuning_paused():
        res["runs"] = [run(work / f"run{i}") for i in range(a.repeats)]
    res["finished"], res["load_average_at_end"] = report.now(), [round(x, 2) for x in os.getloadavg()]
    report.publish(a.name, res, render)


if __name__ == "__main__":
    main()
