"""Reliability under load (not CI): concurrent writers, SIGKILL during ingest, memory on
hostile files. Every figure is an exact count or a measured peak, written with raw values.

  python benchmarks/bench_reliability.py [--kills 20] [--records 100000]

1. Four writer processes at once on one database (two ingests of distinct 20k-record work
   dirs, one committing records one at a time as ``transfer`` does, one committing through
   ``schedb.Database`` as MetaSchedule tuning does) and a reader loop: final counts exact,
   lock failures 0, the reader's slowest query.
2. SIGKILL of a 100k-record ingest at random points: after each, integrity_check, then a
   re-run must reach the clean run's exact count.
3. Peak RSS of ingesting a gzip of 1.5 M junk lines and of a single 150 MB line, against a
   tiny work dir's (the process baseline: Python, TVM and torch loaded).
4. With ``--baseline-tree DIR`` (a checkout from before the checks, named by
   ``--baseline-label``): their cost, a synthetic 100k-record work dir and the resnet50
   fixture each ingested by both trees in turn, interleaved.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import queries
from report import describe, machine_line, now, replot, write
from shared import make_workdir  # a work dir of tiny_mlp's records, perturbed

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures" / "tiny_mlp"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

INGEST = """
import sys
from schedb.ingest import ingest
from schedb.store import Store
import time
t0 = time.perf_counter()
r = ingest(Store(sys.argv[1]), sys.argv[2:])
print(r.new_records, len(r.errors), r.skipped_lines, len(r.warnings), time.perf_counter() - t0, flush=True)
sys.exit(1 if r.errors else 0)
"""

# One record at a time, each its own transaction: how transfer and droplet commit.
COMMITTER = """
import json, sys
from schedb.store import Store
from schedb.store.records import commit_trace
store = Store(sys.argv[1])
wid, sig, target, trace = json.loads(sys.argv[2])
for i in range(int(sys.argv[3])):
    commit_trace(store, wid, sig, target, trace, [1e-3 + i * 1e-7], "transferred")
"""

# MetaSchedule's path: TuningRecords committed through schedb.Database.
TUNER = """
import gzip, json, sys
from tvm.s_tir.meta_schedule.database import TuningRecord, Workload
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import Trace
from tvm.target import Target
from schedb import Database
db = Database(sys.argv[1], model="bench-tuner")
line = gzip.open(sys.argv[2] + "/database_workload.json.gz", "rt").readline()
rec = json.loads(gzip.open(sys.argv[2] + "/database_tuning_record.json.gz", "rt").readline())
wl = db.commit_workload(Workload.from_json(json.loads(line)).mod)
sch = Schedule(wl.mod)
Trace.apply_json_to_schedule(rec[1][0], sch)
for i in range(int(sys.argv[3])):
    db.commit_tuning_record(TuningRecord(sch.trace, wl, [2e-3 + i * 1e-7], Target(rec[1][2])))
"""


def python(script: str, *args, tree: Path = ROOT, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env={**ENV, "PYTHONPATH": str(tree)},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# --------------------------------------------------------------------------- 1. writers
def concurrent_writers(tmp: Path, n_ingest: int, n_commit: int, n_tune: int) -> dict:
    from schedb.ingest import ingest
    from schedb.store import Store

    db = tmp / "shared.db"
    store = Store(db)
    ingest(store, [TINY])  # a workload for the committer to write to
    wid, sig, target, trace = queries.a_record(store)
    before = store.counts()["records"]
    store.close()
    dirs = [make_workdir(tmp / f"w{i}", n_ingest, seed=100 + i) for i in range(2)]
    t0 = time.perf_counter()
    procs = {
        "ingest-1": python(INGEST, db, dirs[0]), "ingest-2": python(INGEST, db, dirs[1]),
        "committer": python(COMMITTER, db, json.dumps([wid, sig, target, json.loads(trace)]), n_commit),
        "tuner": python(TUNER, db, TINY, n_tune),
    }
    reads, read_errors, slowest = 0, [], 0.0
    reader = sqlite3.connect(db, timeout=300)
    while any(p.poll() is None for p in procs.values()):
        q0 = time.perf_counter()
        try:
            queries.read_while_written(reader)
            reads += 1
        except sqlite3.Error as e:
            read_errors.append(str(e))
        slowest = max(slowest, time.perf_counter() - q0)
        time.sleep(0.05)
    reader.close()
    wall = time.perf_counter() - t0
    outcomes = {}
    for name, p in procs.items():
        out, err = p.communicate()
        outcomes[name] = {"exit": p.returncode, "stderr_tail": err.strip().splitlines()[-1:] if p.returncode else []}
    expected = before + 2 * n_ingest + n_commit + n_tune
    got = queries.record_count(db)
    stderr = " ".join(" ".join(o["stderr_tail"]) for o in outcomes.values())
    return {"writers": outcomes, "expected_records": expected, "records": got, "exact": got == expected,
            "lock_failures": stderr.count("locked") + sum("locked" in e for e in read_errors),
            "reads": reads, "read_errors": read_errors, "slowest_read_s": round(slowest, 3),
            "wall_s": round(wall, 1), "integrity": queries.integrity(db)}


# --------------------------------------------------------------------------- 2. SIGKILL
def kills(tmp: Path, n_records: int, n_kills: int, seed: int = 0) -> dict:
    folder = make_workdir(tmp / "big", n_records, seed=7)
    clean_db = tmp / "clean.db"
    t0 = time.perf_counter()
    p = python(INGEST, clean_db, folder)
    p.communicate()
    clean_wall = time.perf_counter() - t0
    clean = queries.record_count(clean_db)
    t0 = time.perf_counter()
    python(INGEST, tmp / "startup.db", tmp / "empty").communicate()  # imports only: no kill before
    startup = time.perf_counter() - t0
    rng = random.Random(seed)
    runs = []
    for k in range(n_kills):
        db = tmp / f"kill{k}.db"
        at = rng.uniform(startup, clean_wall)
        p = python(INGEST, db, folder)
        time.sleep(at)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        killed = p.returncode == -signal.SIGKILL  # (else it had finished before the signal)
        stored_at_kill = queries.record_count(db) if db.exists() and queries.integrity(db) == "ok" else None
        ok = queries.integrity(db) if db.exists() else "no file yet"
        r = python(INGEST, db, folder)
        r.communicate()
        runs.append({"kill_at_s": round(at, 2), "killed": killed, "records_at_kill": stored_at_kill, "integrity": ok,
                     "rerun_exit": r.returncode, "records_after_rerun": queries.record_count(db),
                     "exact": queries.record_count(db) == clean})
        for f in tmp.glob(f"kill{k}.db*"):
            f.unlink()
    return {"records": n_records, "clean_count": clean, "clean_wall_s": round(clean_wall, 1),
            "startup_s": round(startup, 1), "runs": runs,
            "all_exact": all(r["exact"] for r in runs),
            "all_integrity_ok": all(r["integrity"] in ("ok", "no file yet") for r in runs),
            # An input file is one transaction: killed inside it, none of its records are there.
            "killed_mid_ingest": sum(r["killed"] and (r["records_at_kill"] or 0) < clean for r in runs)}


# --------------------------------------------------------------------------- 3. memory
def peak_rss(tmp: Path, name: str, folder: Path) -> dict:
    db = tmp / f"{name}.db"
    p = python(INGEST, db, folder)
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read().split()
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"case": name, "peak_rss_mb": round(usage.ru_maxrss / 1024), "exit": p.returncode,
            "new_records": int(out[0]) if out else None, "skipped_lines": int(out[2]) if out else None,
            "warnings": int(out[3]) if out else None}


def memory(tmp: Path) -> list[dict]:
    good = (TINY / "database_tuning_record.json.gz")
    with gzip.open(good, "rt") as f:
        good_lines = f.read()
    cases = [peak_rss(tmp, "tiny work dir (baseline)", make_workdir(tmp / "base", 32))]
    bomb = make_workdir(tmp / "bomb", 0)
    rng = random.Random(1)
    with gzip.open(bomb / "database_tuning_record.json.gz", "wt", compresslevel=1) as f:
        f.write(good_lines)
        for _ in range(1_500_000):
            f.write("{junk %032x%064x\n" % (rng.getrandbits(128), rng.getrandbits(256)))
    (bomb / "database_tuning_record.json").unlink()
    cases.append(peak_rss(tmp, "gzip of 1.5 M junk lines", bomb))
    huge = make_workdir(tmp / "huge", 0)
    with open(huge / "database_tuning_record.json", "w") as f:
        f.write(good_lines)
        f.write("[")
        for _ in range(75):  # 150 MB on one line, written in pieces: this process stays small
            f.write("1," * (1 << 20))
        f.write("1]\n")
        f.write(good_lines)
    cases.append(peak_rss(tmp, "one 150 MB line", huge))
    return cases


# --------------------------------------------------------------------------- 4. validation cost
def ingest_rate(tmp: Path, n_records: int, baseline: Path, rounds: int) -> dict:
    """records/s of this tree and of ``baseline``, alternating, on a synthetic work dir of
    ``n_records`` (2 workloads: the per-record checks) and on the resnet50 fixture (one
    workload per task: the per-workload replay); ingest time only, measured inside each
    process (imports excluded)."""
    cases = {f"{n_records:,} records of 2 workloads (tiny_mlp's, perturbed)": make_workdir(tmp / "rate", n_records, seed=3),
             "the resnet50 fixture": ROOT / "fixtures" / "resnet50"}
    return {"rounds": rounds, "baseline_tree": str(baseline), "goal_records_per_s": 20_000,
            "cases": [dict(case=name, **_rates(tmp, folder, baseline, rounds)) for name, folder in cases.items()]}


def _rates(tmp: Path, folder: Path, baseline: Path, rounds: int) -> dict:
    rates: dict[str, list[float]] = {"this": [], "baseline": []}
    for k in range(rounds):
        for name, tree in (("this", ROOT), ("baseline", baseline))[:: 1 if k % 2 == 0 else -1]:
            db = tmp / f"rate-{name}.db"
            out, err = python(INGEST, db, folder, tree=tree).communicate()
            new, errors, *_, secs = out.split()
            assert errors == "0", err[-500:]
            rates[name].append(round(int(new) / float(secs)))
            for f in tmp.glob(f"rate-{name}.db*"):
                f.unlink()
    ratio = sorted(a / b for a, b in zip(rates["this"], rates["baseline"]))
    return {"records": int(new), "records_per_s": rates, "median_ratio": ratio[len(ratio) // 2],
            "median_records_per_s": sorted(rates["this"])[rounds // 2]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="a checkout from before validation: measure its cost (section 4)")
    ap.add_argument("--baseline-label", default="the baseline tree", help="what the baseline tree is, for the table")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only-rate", action="store_true", help="section 4 only")
    ap.add_argument("--replot", action="store_true", help="re-render both results' markdown; measure nothing")
    args = ap.parse_args()
    if args.replot:
        from report import RESULTS

        replot(RESULTS / "reliability.json", render)
        replot(RESULTS / "ingest_validation_cost.json", render_rate)
        return
    started = now()
    with tempfile.TemporaryDirectory(prefix="schedb-reliability-") as d:
        tmp = Path(d)
        # First, while this process is small (a child's peak RSS counts its fork from us).
        if args.only_rate:
            result = {"machine": describe(), "started": started, "args": {k: str(v) for k, v in vars(args).items()}}
            result["rate"] = ingest_rate(tmp, args.records, args.baseline_tree, args.rounds)
            result["finished"] = now()
            print(json.dumps(result["rate"], indent=1))
            write("ingest_validation_cost", result, *render_rate(result))
            return
        mem = memory(tmp)
        print(json.dumps(mem, indent=1), flush=True)
        result = {"machine": describe(), "started": started, "args": {k: str(v) for k, v in vars(args).items()},
                  "memory": mem}
        result["writers"] = concurrent_writers(tmp, 20_000, 500, 300)
        print(json.dumps(result["writers"], indent=1), flush=True)
        result["kills"] = kills(tmp, args.records, args.kills)
        print({k: v for k, v in result["kills"].items() if k != "runs"}, flush=True)
    result["finished"] = now()
    md, _ = render(result)
    print(md)
    write("reliability", result, md)


def render(result: dict) -> tuple[str, None]:
    w, k = result["writers"], result["kills"]
    md = "\n".join([
        "| check | result |", "| --- | --- |",
        f"| 4 concurrent writers + reader | {w['records']} of {w['expected_records']} records, "
        f"{w['lock_failures']} lock failures, slowest read {w['slowest_read_s']} s, integrity {w['integrity']} |",
        f"| SIGKILL during a {k['records']}-record ingest | {len(k['runs'])} kills "
        f"({k['killed_mid_ingest']} mid-ingest), integrity ok: {k['all_integrity_ok']}, "
        f"re-run exact: {k['all_exact']} |",
        *[f"| peak RSS: {m['case']} | {m['peak_rss_mb']} MB ({m['skipped_lines']} lines skipped, "
          f"{m['warnings']} warnings) |" for m in result["memory"]],
        "", machine_line(result["machine"]) + f" {result['started']} to {result['finished']}.",
    ])
    return md, None


def render_rate(result: dict) -> tuple[str, None]:
    r = result["rate"]
    rows = [f"| ingest of | records | records/s with the checks, median of {r['rounds']} | before them "
            "| this tree / before: median of per-round ratios (lowest) |", "| --- | --- | --- | --- | --- |"]
    for c in r["cases"]:
        low = min(a / b for a, b in zip(c["records_per_s"]["this"], c["records_per_s"]["baseline"]))
        rows.append(f"| {c['case']} | {c['records']:,} | **{c['median_records_per_s']:,}** "
                    f"| {sorted(c['records_per_s']['baseline'])[r['rounds'] // 2]:,} | {c['median_ratio']:.2f} "
                    f"({low:.2f}) |")
    return "\n".join([*rows, "", f"Before: {result['args']['baseline_label']}. Goal: the checks cost at most 10% (a ratio of "
                       f"0.90 or more); ingest >= {r['goal_records_per_s']:,} records/s.", "",
                       f"{machine_line(result['machine'])} {result['started']} to {result['finished']}."]) + "\n", None


if __name__ == "__main__":
    main()
