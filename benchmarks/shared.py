"""What the benchmarks share: the fixtures' base database and copies of it, a transfer
between seed models kept as a result, a pair's winners as a MetaSchedule database,
interleaved timing, and a generated MetaSchedule work dir. No script imports another."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import report

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ["alexnet", "resnet50", "googlenet"]  # the order that names the deep results' files
TINY = ROOT / "fixtures" / "tiny_mlp"
WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
# Seconds between one runtime's run and the next one's, each timed run after a warm-up run.
# Without both, googlenet's PyTorch (in a second process) took up to 2.3 s instead of about
# 45 ms in 9 of 15 rounds, and ONNX Runtime and OpenVINO (in the same process) ran AlexNet
# at 26-44 ms in most rounds and 12-19 ms in the rest: the thread pools of the runtime
# before them were still busy on the 2 cores. With both, in none.
SETTLE_S = 1.0


def scratch(name: str) -> str:
    """The default scratch folder of a resumable benchmark, in this system's temp dir."""
    return os.path.join(tempfile.gettempdir(), f"schedb-{name}")


def base_db(work: Path, models: list[str]) -> Path:
    """The models' fixtures, ingested once, in a folder of ``work`` named by the fixtures'
    content: databases derived from it live beside it, and a fixture tuned anew never
    meets a scratch database built from its old records."""
    import hashlib

    from schedb.ingest import ingest
    from schedb import Store

    digest = hashlib.sha256()
    for m in models:
        for f in sorted((ROOT / "fixtures" / m).iterdir()):
            digest.update(f.name.encode() + f.read_bytes())
    folder = work / digest.hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.db"
    if not path.exists():
        store = Store(folder / "base.tmp.db")
        rep = ingest(store, [ROOT / "fixtures" / m for m in models])
        store.close()
        if rep.errors:
            sys.exit(f"ingest of the fixtures failed: {rep.errors}")
        (folder / "base.tmp.db").rename(path)
    return path


def own_fixture(model: str, tasks, target, work: Path):
    """A model's own fixture as a user gets it from schedb (what ``tune --db`` ends with):
    ingested alone, each task's best records and its untuned kernel measured side by side
    (``schedb.choose``), served by ``schedb.Database``; kept in ``work`` and reused."""
    from schedb import Database, Engine, Store, choose
    from schedb.ingest import ingest

    path = Path(work) / f"{model}_own_chosen.db"
    if not path.exists():
        tmp = path.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        store = Store(tmp)
        ingest(store, [ROOT / "fixtures" / model])
        choose(store, tasks, target, Engine(target))
        store.close()
        tmp.rename(path)
    return Database(path, target=target)


def copy_db(src: Path, dst: Path):
    dst.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def search(sources: list[str], target_model: str, base: Path, target, droplet_trials: int | None,
           pair_dir: Path, e2e_repeat: int = 0, exclude: list[str] | None = None, options: dict | None = None) -> dict:
    """Transfer (+ droplet unless ``droplet_trials`` is None) from ``sources`` to
    ``target_model`` in a fresh copy of the base database (beside it); kept in ``pair_dir`` and reused.
    ``e2e_repeat``: the transfer's own timing (0: none, only its final model compiled; the
    benchmark times every variant itself, so the wall time is the search's alone). ``exclude``:
    default the target model (None); ``options``: more schedb.Options fields."""
    from schedb import load_model, Options, Store, transfer

    name = f"{'+'.join(sources)}_to_{target_model}"
    out = pair_dir / f"{name}.json"
    if out.exists() and Path((kept := json.loads(out.read_text())).get("db", "")).exists():
        return kept  # (a kept transfer whose database is gone runs again)
    db = base.parent / f"{name}.db"
    copy_db(base, db)
    store = Store(db)
    machine, started = report.describe(), report.now()
    t0 = time.perf_counter()
    opts = Options(sources=sources, exclude=[target_model] if exclude is None else exclude,
                   droplet=droplet_trials is not None, droplet_trials=droplet_trials or 0, e2e_repeat=e2e_repeat,
                   **(options or {}))
    rep = transfer(store, load_model(target_model), target, opts,
                   progress=lambda d, n, r: print(f"  {name} {d}/{n} {r.task}: {r.source}", file=sys.stderr))
    store.close()
    res = {"source": "+".join(sources), "target_model": target_model, "db": str(db), "machine": machine,
           "started": started, "finished": report.now(), "load_average_before": machine["load_average_at_start"],
           "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "wall_s": round(time.perf_counter() - t0, 1), **rep.as_dict()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res


def pair_database(pair: dict, tasks, target, refined: bool):
    """The pair's chosen schedule per task (the droplet one where it won, the native search's
    where it ran), as a MetaSchedule
    database: the traces were stored as applied to these very tasks, so they replay as is."""
    from schedb import apply_trace, Store
    from schedb.pipeline.evaluate import winners_database
    from schedb.pipeline.transfer import Winner

    store = Store(pair["db"], readonly=True)
    by_task = {t["task"]: t for t in pair["tasks"]}
    winners = {}
    for task in tasks:
        t = by_task[task.name]
        rid = (refined and t["refined_record_id"]) or t["record_id"]
        if t.get("native_us") is not None:  # the native search decided last (None: the untuned kernel)
            rid = t["native_record_id"]
        if rid is None:
            continue
        row = store.records.get(rid)
        r = apply_trace(json.loads(row["trace"]), task.func, target)
        if not r.ok:
            sys.exit(f"record {rid} of {pair['db']} no longer applies to {task.name}: {r.error}")
        winners[task.name] = Winner(r.trace, json.loads(row["run_secs"]), rid)
    store.close()
    return winners_database(tasks, winners, target)


def interleaved(lowered, compiled: dict, rounds: int, with_torch: bool = False) -> dict:
    """schedb.pipeline.evaluate.interleaved_samples, PyTorch named "pytorch eager" as in every
    benchmark result, with progress on stderr."""
    from schedb.pipeline.evaluate import interleaved_samples

    samples = interleaved_samples(lowered, compiled, rounds, with_torch,
                                  lambda i: print(f"  {lowered.model.name}: round {i + 1}/{rounds}", file=sys.stderr))
    return {("pytorch eager" if k == "pytorch" else k): v for k, v in samples.items()}


def by_source(tasks: list[dict]) -> dict:
    """How many of a transfer report's tasks came from each source."""
    return {s: sum(t["source"] == s for t in tasks) for s in ("exact", "neighbor", "anchor", "searched", "untuned")}


def others(model: str) -> list[str]:
    """The seed models a target transfers from, in the order that names its results file."""
    return [m for m in SEEDS if m != model]


def gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def tiny_records() -> list[tuple]:
    """(workload index, trace, run_secs, target dict, args_info) of tiny_mlp's records."""
    out = []
    for line in gz_lines(TINY / (RECORDS + ".gz")):
        idx, (trace, run_secs, target, *rest) = json.loads(line)
        out.append((idx, trace, run_secs, target, rest[0] if rest else []))
    return out


def dump(x) -> str:
    return json.dumps(x, separators=(",", ":"))


def make_workdir(folder: Path, n_records: int, seed: int = 0) -> Path:
    """tiny_mlp's workloads and sidecar; its records replicated with perturbed run_secs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKLOADS).write_text("".join(w + "\n" for w in gz_lines(TINY / (WORKLOADS + ".gz"))))
    shutil.copy(TINY / "schedb.json", folder / "schedb.json")
    parts = [(idx, dump(trace), run_secs, dump(target), dump(args))
             for idx, trace, run_secs, target, args in tiny_records()]
    rng = random.Random(seed)
    with open(folder / RECORDS, "w", encoding="utf-8") as f:
        for i in range(n_records):
            idx, trace, run_secs, target, args = parts[i % len(parts)]
            secs = ",".join(repr(s * rng.uniform(0.8, 1.2)) for s in run_secs)
            f.write(f"[{idx},[{trace},[{secs}],{target},{args}]]\n")
    return folder


# --------------------------------------------------------------------------- resumable runs
def load_state(scratch: Path) -> dict:
    p = scratch / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {"jobs": {}}


def save_state(scratch: Path, state: dict) -> None:
    tmp = scratch / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, scratch / "state.json")


class Search:
    """A tuning work dir replayed over time."""

    def __init__(self, folder: Path, tasks):
        import tvm_ffi
        from tvm.s_tir.meta_schedule.database import Workload

        from schedb.ingest.workdir import RECORDS, WORKLOADS, find, open_text, read_sidecar

        meta = read_sidecar(folder)
        self.wall_s, self.per_task = meta["wall_time_s"], meta.get("trials_per_task")
        self.steps = meta["timeline"]["tasks"]
        with open_text(find(folder, WORKLOADS)) as f:
            self.workloads = [Workload.from_json(json.loads(line)) for line in f if line.strip()]
        # The timeline is per task index; make sure workload i is task i.
        for i, (w, t) in enumerate(zip(self.workloads, meta["tasks"])):
            if str(tvm_ffi.structural_hash(w.mod)) != t["shash"]:
                sys.exit(f"{folder}: workload {i} is not task {i} ({t['name']})")
        self.records: dict[int, list] = {}
        with open_text(find(folder, RECORDS)) as f:
            for line in f:
                if line.strip():
                    widx, rec = json.loads(line)
                    self.records.setdefault(widx, []).append(rec)
        self.events = sorted({t for s in self.steps for t, _ in s})
        names = {t.name for t in tasks}
        self.covered = sum(1 for t in meta["tasks"] if t["name"] in names)
        self.name = folder.name

    def at(self, t: float, work: Path, tasks, target, engine):
        """What the search had measured by ``t`` seconds, as a user gets it from schedb (as
        ``tune --db`` ends): each task's best records and its untuned kernel measured side by
        side (``schedb.choose``), served by ``schedb.Database``; kept in ``work`` and reused."""
        from tvm.s_tir.meta_schedule.database import TuningRecord

        from schedb import Database, Store, choose

        path = work / f"{self.name}-at-{t:.1f}s.db"
        if not path.exists():
            tmp = path.with_suffix(".tmp.db")
            tmp.unlink(missing_ok=True)
            db = Database(tmp, target=target)
            for i, steps in enumerate(self.steps):
                n = max((c for s, c in steps if s <= t), default=0)
                if n:
                    w = db.commit_workload(self.workloads[i].mod)
                    for rec in self.records.get(i, [])[:n]:
                        db.commit_tuning_record(TuningRecord.from_json(rec, w))
            db.store.close()  # its WAL checkpointed before the file is renamed
            store = Store(tmp)
            choose(store, tasks, target, engine)
            store.close()
            tmp.rename(path)
        return Database(path, target=target)


def log_points(events: list[float], n: int) -> list[int]:
    """Indices of ``events`` nearest ``n`` log-spaced times from the first to the last."""
    import numpy as np

    ts = np.geomspace(max(events[0], 1.0), events[-1], n)
    return sorted({min(int(np.searchsorted(events, t)), len(events) - 1) for t in ts} | {len(events) - 1})
