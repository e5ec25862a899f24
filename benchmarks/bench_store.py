"""Store benchmarks: ingest throughput and best-record lookup latency.

    nice -n 10 python benchmarks/bench_store.py            # full run, ~10 min on 2 cores
    nice -n 10 python benchmarks/bench_store.py --quick    # smaller sizes, to try it out

Measures
  1. ingest of the real seed Ansor logs (../shared/seed-logs/ansor-5000, ~10k lines):
     wall time (TVM already imported; median of --repeats runs, each into a fresh db);
  2. ingest rate (records/s) of a large generated MetaSchedule work dir: the records of
     fixtures/tiny_mlp replicated with perturbed run_secs, so every line is a distinct
     record (goal: >= 20k records/s); when below the goal, a cProfile of a smaller run
     says where the time goes;
  3. Store.best_record latency for random workload ids on databases of 10^4, 10^5 and
     10^6 records (rows generated directly with Store.insert_records; real traces;
     200 records per workload, 10% for a second target, 20% failed measurements),
     with and without a target (goal: < 1 ms), and the best_records view for comparison.

Prints a markdown table and writes JSON (with a machine description) to --out.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import hashlib
import io
import json
import os
import platform
import pstats
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schedb.ingest import ingest  # noqa: E402
from schedb.store import Store, now  # noqa: E402

TINY = ROOT / "fixtures" / "tiny_mlp"
SEED = ROOT.parent / "shared" / "seed-logs" / "ansor-5000"
WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
GOAL_INGEST = 20_000  # records/s
GOAL_LOOKUP_MS = 1.0
PER_WORKLOAD = 200


def gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def machine() -> dict:
    import sqlite_utils
    import tvm

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(next(x for x in f if x.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "platform": platform.platform(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "sqlite_utils": getattr(sqlite_utils, "__version__", None) or _dist_version("sqlite-utils"),
        "tvm": tvm.__version__, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
    }


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


# --------------------------------------------------------------------------- 1. seed Ansor logs
def bench_seed(tmp: Path, repeats: int) -> dict | None:
    if not SEED.is_dir():
        print(f"seed logs not found at {SEED}: skipped", file=sys.stderr)
        return None
    logs = [p for p in sorted(SEED.glob("*.json")) if p.name not in ("wkl_classes.json", "tuning_info.json")]
    lines = sum(1 for p in logs for line in p.open() if line.strip())
    times, report = [], None
    for i in range(repeats):
        store = Store(tmp / f"seed{i}.db")
        t0 = time.perf_counter()
        report = ingest(store, [SEED])
        times.append(time.perf_counter() - t0)
        store.close()
    assert not report.errors, report.errors
    wall = statistics.median(times)
    return {"files": len(logs), "bytes": sum(p.stat().st_size for p in logs), "lines": lines,
            "new_records": report.new_records, "duplicates": report.duplicates,
            "wall_s": round(wall, 3), "wall_s_all": [round(t, 3) for t in times],
            "lines_per_s": round(lines / wall)}


# --------------------------------------------------------------------------- 2. MetaSchedule ingest rate
def make_workdir(folder: Path, n_records: int, seed: int = 0) -> Path:
    """tiny_mlp's workloads and sidecar; its records replicated with perturbed run_secs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKLOADS).write_text("".join(w + "\n" for w in gz_lines(TINY / (WORKLOADS + ".gz"))))
    shutil.copy(TINY / "schedb.json", folder / "schedb.json")
    parts = []
    for line in gz_lines(TINY / (RECORDS + ".gz")):
        idx, (trace, run_secs, target, *rest) = json.loads(line)
        dump = lambda x: json.dumps(x, separators=(",", ":"))  # noqa: E731
        parts.append((idx, dump(trace), run_secs, dump(target), dump(rest[0]) if rest else "[]"))
    rng = random.Random(seed)
    with open(folder / RECORDS, "w", encoding="utf-8") as f:
        for i in range(n_records):
            idx, trace, run_secs, target, args = parts[i % len(parts)]
            secs = ",".join(repr(s * rng.uniform(0.8, 1.2)) for s in run_secs)
            f.write(f"[{idx},[{trace},[{secs}],{target},{args}]]\n")
    return folder


def bench_ms_ingest(tmp: Path, n_records: int) -> dict:
    folder = make_workdir(tmp / f"ms{n_records}", n_records)
    size = (folder / RECORDS).stat().st_size
    store = Store(tmp / f"ms{n_records}.db")
    t0 = time.perf_counter()
    report = ingest(store, [folder])
    wall = time.perf_counter() - t0
    assert not report.errors and report.new_records == n_records, report.as_dict()
    db_size = store.path.stat().st_size
    store.close()
    return {"records": n_records, "file_mb": round(size / 2**20, 1), "db_mb": round(db_size / 2**20, 1),
            "wall_s": round(wall, 2), "records_per_s": round(n_records / wall),
            "goal_records_per_s": GOAL_INGEST, "meets_goal": n_records / wall >= GOAL_INGEST}


def profile_ms_ingest(tmp: Path, n_records: int, top: int = 18) -> dict:
    folder = make_workdir(tmp / f"prof{n_records}", n_records, seed=1)
    store = Store(tmp / f"prof{n_records}.db")
    prof = cProfile.Profile()
    prof.enable()
    ingest(store, [folder])
    prof.disable()
    store.close()
    stats = pstats.Stats(prof)
    total = stats.total_tt

    def rows(key):
        out = []
        for (file, line, func), (cc, nc, tt, ct, _) in sorted(
                stats.stats.items(), key=lambda kv: kv[1][key], reverse=True)[:top]:
            out.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc,
                        "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3),
                        "tottime_pct": round(100 * tt / total, 1), "cumtime_pct": round(100 * ct / total, 1)})
        return out

    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return {"records": n_records, "profiled_total_s": round(total, 2),
            "by_tottime": rows(2), "by_cumtime": rows(3), "text": buf.getvalue()}


def breakdown_ms_ingest(tmp: Path, n_records: int) -> dict:
    """The stages of MetaSchedule ingest timed one at a time, without profiler overhead:
    microseconds per record."""
    from schedb.ingest import _Targets, record_digest
    from schedb.workdir import open_text

    folder = make_workdir(tmp / f"stages{n_records}", n_records, seed=2)
    names = ["read line", "json.loads(line)", "json.dumps(trace) (re-serialize)",
             "target: cache key json.dumps(sort_keys) + lookup", "run_secs/args_info json.dumps",
             "record_digest (sha256)", "now() timestamp"]
    acc = dict.fromkeys(names, 0.0)
    targets = _Targets()
    pending = []  # (workload index, target, trace, run_secs, digest): strings only, like ingest's chunk
    clock = time.perf_counter
    with open_text(folder / RECORDS) as f:
        it = iter(f)
        while True:
            t0 = clock()
            line = next(it, None)
            t1 = clock()
            if line is None:
                break
            o = json.loads(line)
            t2 = clock()
            trace = json.dumps(o[1][0], separators=(",", ":"))
            t3 = clock()
            tgt = targets(o[1][2])
            t4 = clock()
            samples = [float(x) for x in o[1][1]]
            run_secs, _args = json.dumps(samples), json.dumps(o[1][3])
            t5 = clock()
            digest = record_digest("sig", tgt, trace, samples)
            t6 = clock()
            now()
            t7 = clock()
            for name, dt in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
                acc[name] += dt
            pending.append((o[0], tgt, trace, run_secs, sum(samples) / len(samples), digest))
    per = {k: round(v / n_records * 1e6, 1) for k, v in acc.items()}

    def stage(name, fn):
        t0 = time.perf_counter()
        fn()
        per[name] = round((time.perf_counter() - t0) / n_records * 1e6, 1)

    store = Store(tmp / f"stages{n_records}.db")
    with store.transaction():
        wids = [store.upsert_workload(f"s:{i}", "k", [], [])[0] for i in range(4)]
    rows = [{"workload_id": wids[w % 4], "target": t, "format": "ms-trace", "trace": tr,
             "run_secs": rs, "mean_s": mean, "valid": 1, "args_info": "[]",
             "origin": "tuned", "model_id": None, "file_id": None, "line": i, "tvm_version": "x",
             "created_at": "2026-01-01T00:00:00+00:00", "digest": d}
            for i, (w, t, tr, rs, mean, d) in enumerate(pending)]

    def insert():
        with store.transaction():
            for k in range(0, len(rows), 5000):
                store.insert_records(rows[k:k + 5000])
    stage("Store.insert_records + COMMIT (SQLite)", insert)
    store.close()
    per["sum of stages"] = round(sum(per.values()), 1)
    store = Store(tmp / f"stages{n_records}-real.db")
    t0 = time.perf_counter()
    ingest(store, [folder])
    per["actual ingest()"] = round((time.perf_counter() - t0) / n_records * 1e6, 1)
    store.close()
    return {"records": n_records, "us_per_record": per}


# --------------------------------------------------------------------------- 3. best-record lookup
def make_lookup_db(path: Path, n_records: int, seed: int = 0) -> dict:
    records = [json.loads(x) for x in gz_lines(TINY / (RECORDS + ".gz"))]
    traces = [json.dumps(r[1][0], separators=(",", ":")) for r in records]
    args_info = json.dumps(records[0][1][3])
    t_main = json.dumps(records[0][1][2], sort_keys=True, separators=(",", ":"))
    t_other = json.dumps({**records[0][1][2], "mcpu": "skylake-avx512"}, sort_keys=True, separators=(",", ":"))
    rng = random.Random(seed)
    store = Store(path)
    n_wl = max(1, n_records // PER_WORKLOAD)
    t0 = time.perf_counter()
    with store.transaction():
        wids = [store.upsert_workload(f"bench:{i}", "bench", [[1, 64], [64, 32]], ["float32"] * 2)[0]
                for i in range(n_wl)]
    created = now()
    batch = []
    for i in range(n_records):
        valid = rng.random() >= 0.2
        mean = rng.lognormvariate(-11.5, 1.0)
        samples = [mean * rng.uniform(0.95, 1.05) for _ in range(3)] if valid else [1e10]
        batch.append({
            "workload_id": wids[rng.randrange(n_wl)], "target": t_main if rng.random() < 0.9 else t_other,
            "format": "ms-trace", "trace": traces[i % len(traces)], "run_secs": json.dumps(samples),
            "mean_s": sum(samples) / len(samples) if valid else None, "valid": int(valid),
            "error": None if valid else "failed measurement", "args_info": args_info, "origin": "tuned",
            "line": i + 1, "created_at": created, "digest": hashlib.sha256(b"%d" % i).hexdigest(),
        })
        if len(batch) == 50_000 or i == n_records - 1:
            with store.transaction():
                store.insert_records(batch)
            batch.clear()
    build = time.perf_counter() - t0
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return {"workloads": n_wl, "build_s": round(build, 1), "db_mb": round(path.stat().st_size / 2**20, 1),
            "target": t_main}


def _time_calls(fn, args_list) -> dict:
    """Wall time per call, and this thread's CPU time per call: on a loaded machine the
    wall-time tail is the scheduler's (a ~4 ms time slice lost to other processes)."""
    wall, cpu = [], []
    for args in args_list:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        fn(*args)
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        wall.append((t1 - t0) / 1e6)
        cpu.append((c1 - c0) / 1e6)
    wall.sort()
    cpu.sort()
    q = lambda xs, p: round(xs[min(len(xs) - 1, int(p * len(xs)))], 4)  # noqa: E731
    return {"n": len(wall), "median_ms": round(statistics.median(wall), 4),
            "mean_ms": round(statistics.fmean(wall), 4), "p95_ms": q(wall, 0.95), "p99_ms": q(wall, 0.99),
            "max_ms": round(wall[-1], 4), "cpu_median_ms": round(statistics.median(cpu), 4),
            "cpu_p99_ms": q(cpu, 0.99)}


def bench_lookup(path: Path, target: str, n_lookups: int, n_view: int) -> dict:
    store = Store(path, readonly=True)
    wids = [w for w, in store.conn.execute("SELECT id FROM workloads")]
    rng = random.Random(1)
    pick = lambda n: [rng.choice(wids) for _ in range(n)]  # noqa: E731
    for w in pick(200):  # warm SQLite's and the OS page cache as a long-lived process would be
        store.best_record(w)
    out = {
        "best_record(wid)": _time_calls(store.best_record, [(w,) for w in pick(n_lookups)]),
        "best_record(wid, target)": _time_calls(store.best_record, [(w, target) for w in pick(n_lookups)]),
        "best_records view, one workload": _time_calls(
            lambda w: list(store.db.query("SELECT * FROM best_records WHERE workload_id = ?", [w])),
            [(w,) for w in pick(n_view)]),
    }
    # Sanity: the fastest valid record, as a plain scan finds it.
    for w in pick(20):
        best = store.best_record(w, target)
        want = store.conn.execute("SELECT MIN(mean_s) FROM records WHERE workload_id = ? AND target = ?"
                                  " AND valid = 1", (w, target)).fetchone()[0]
        assert (best is None and want is None) or best["mean_s"] == want
    plan = store.conn.execute("EXPLAIN QUERY PLAN SELECT * FROM records WHERE workload_id = ? AND valid = 1"
                              " ORDER BY mean_s, id LIMIT 1", (1,)).fetchall()
    store.close()
    out["plan best_record(wid)"] = [row[-1] for row in plan]
    return out


# --------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, SQLite {m['sqlite']}, "
           f"TVM {m['tvm']}; load average at start {m['load_avg_at_start']} (nice {m['nice']}).", "",
           "| benchmark | size | result | goal |", "| --- | --- | --- | --- |"]
    s = res.get("seed_ansor_ingest")
    if s:
        out.append(f"| ingest seed Ansor logs | {s['files']} files, {s['lines']:,} lines | "
                   f"{s['wall_s']:.2f} s ({s['lines_per_s']:,} lines/s) | |")
    for r in res["ms_ingest"]:
        out.append(f"| ingest MetaSchedule work dir | {r['records']:,} records ({r['file_mb']} MB) | "
                   f"{r['wall_s']:.1f} s = **{r['records_per_s']:,} records/s** | >= {GOAL_INGEST:,}/s "
                   f"{'ok' if r['meets_goal'] else 'MISSED'} |")
    for r in res["lookup"]:
        size = f"{r['records']:,} records, {r['workloads']:,} workloads"
        for k in ("best_record(wid, target)", "best_record(wid)", "best_records view, one workload"):
            t = r[k]
            goal = "" if k.startswith("best_records") else (
                f"< {GOAL_LOOKUP_MS} ms {'ok' if t['median_ms'] < GOAL_LOOKUP_MS else 'MISSED'}")
            out.append(f"| {k} | {size} | median {t['median_ms']:.3f} ms, p99 {t['p99_ms']:.3f} ms "
                       f"(CPU: median {t['cpu_median_ms']:.3f}, p99 {t['cpu_p99_ms']:.3f} ms) | {goal} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: 20k-record ingest, 10^4/10^5 lookups")
    ap.add_argument("--ms-records", type=int, default=None, help="records in the generated work dir (200000)")
    ap.add_argument("--sizes", default=None, help="lookup database sizes, comma separated (10000,100000,1000000)")
    ap.add_argument("--repeats", type=int, default=3, help="seed-log ingest runs (median reported)")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--profile-records", type=int, default=50_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "store.json"))
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a new temp dir, removed after)")
    a = ap.parse_args(argv)
    ms_records = a.ms_records or (20_000 if a.quick else 200_000)
    sizes = [int(x) for x in (a.sizes or ("10000,100000" if a.quick else "10000,100000,1000000")).split(",")]

    import tvm  # noqa: F401  (imported up front: the timings below exclude TVM's import)

    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="schedb-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    res = {"machine": machine(), "started": now(), "args": vars(a)}
    try:
        print("1/3 seed Ansor ingest ...", file=sys.stderr)
        res["seed_ansor_ingest"] = bench_seed(tmp, a.repeats)
        print("2/3 MetaSchedule ingest ...", file=sys.stderr)
        res["ms_ingest"] = [bench_ms_ingest(tmp, ms_records)]
        if not res["ms_ingest"][0]["meets_goal"]:
            print("    below the goal: profiling ...", file=sys.stderr)
            res["ms_ingest_profile"] = profile_ms_ingest(tmp, min(a.profile_records, ms_records))
            res["ms_ingest_stages"] = breakdown_ms_ingest(tmp, min(a.profile_records, ms_records))
        res["lookup"] = []
        for n in sizes:
            print(f"3/3 lookups on {n:,} records ...", file=sys.stderr)
            path = tmp / f"lookup{n}.db"
            info = make_lookup_db(path, n)
            target = info.pop("target")
            r = {"records": n, **info,
                 **bench_lookup(path, target, a.lookups, n_view=max(5, min(200, 2_000_000 // n)))}
            res["lookup"].append(r)
            path.unlink()
    finally:
        if a.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    res["finished"] = now()
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table = markdown(res)
    res["markdown"] = table
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(table)
    if "ms_ingest_profile" in res:
        print("\nWhere MetaSchedule ingest spends its time (cProfile, by own time):\n")
        print(res["ms_ingest_profile"]["text"])
        print("Stages timed separately (microseconds per record):\n")
        print("| stage | us/record |\n| --- | --- |")
        for k, v in res["ms_ingest_stages"]["us_per_record"].items():
            print(f"| {k} | {v} |")
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
