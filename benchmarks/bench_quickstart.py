"""The README's first quick-start command as a new user runs it: a clean clone of this
checkout, a fresh virtual environment, ``pip install -e .`` (timed, with the size it
leaves), then ``schedb ingest`` and ``schedb transfer`` exactly as the README gives them
(each timed as a whole process). The transfer report gives the tasks by source and the
model's latency next to untuned TVM and PyTorch eager. Background tuning named by
``$SCHEDB_BENCH_PAUSE`` is stopped meanwhile.

    python benchmarks/bench_quickstart.py [--keep DIR]
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


def render(res: dict):
    r, s = res["run"], res["run"]["by_source"]
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
    return md, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temp dir)")
    a = report.parse(ap, argv, "quickstart", render)
    if a is None:
        return
    work = Path(a.keep or tempfile.mkdtemp(prefix="schedb-quickstart-"))
    res = {"machine": report.describe(), "started": report.now()}
    with fixture_tuning_paused():
        res["run"] = run(work)
    res["finished"], res["load_average_at_end"] = report.now(), [round(x, 2) for x in os.getloadavg()]
    report.publish(a.name, res, render)


if __name__ == "__main__":
    main()
