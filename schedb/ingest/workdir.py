"""MetaSchedule work dirs, all that schedb knows of them: the two JSON files TVM writes
(plain or gzip-compressed), schedb's sidecar, reading one back, exporting one, and a run
in progress (trials spent per task, a line cut short by a kill, the timeline in the
task scheduler's log) for ``schedb tune --resume``."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from schedb.errors import SchedbError
from schedb.ingest.gunzip import open_gzip

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
SIDECAR = "schedb.json"


def find(folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``folder``."""
    for p in (folder / name, folder / (name + ".gz")):
        if p.is_file():
            return p
    return None


def is_workdir(folder: Path) -> bool:
    return find(folder, WORKLOADS) is not None and find(folder, RECORDS) is not None


def open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def open_binary(path: Path):
    """A (gzip-compressed) file's bytes; a damaged .gz yields every byte before the damage."""
    return open_gzip(path) if path.suffix == ".gz" else open(path, "rb")


def read_sidecar(folder: Path) -> dict | None:
    p = folder / SIDECAR
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_bytes())
    except json.JSONDecodeError as e:
        raise SchedbError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise SchedbError(f"{p}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise SchedbError(f"{p}:1: not a schedb sidecar (expected a JSON object)")
    return meta


def tuned_with_bound_params(folder: Path) -> bool | None:
    """How a work dir's run lowered the model: True weights bound (``"params": "bound"``),
    False weights as inputs (also every sidecar written before schedb bound them), None
    when there is no sidecar to say."""
    meta = read_sidecar(Path(folder))
    return None if meta is None else meta.get("params", "inputs") == "bound"


def open_workdir(folder: Path):
    """TVM's ``JSONDatabase`` over ``folder``; compressed files are expanded to a temp dir."""
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    folder = Path(folder)
    if not is_workdir(folder):
        raise SchedbError(f"{folder}: not a MetaSchedule work dir ({WORKLOADS} + {RECORDS})")
    paths = {name: find(folder, name) for name in (WORKLOADS, RECORDS)}
    if any(p.suffix == ".gz" for p in paths.values()):
        tmp = Path(tempfile.mkdtemp(prefix="schedb-workdir-"))
        for name, p in paths.items():
            with open_text(p) as src, open(tmp / name, "w", encoding="utf-8") as dst:
                shutil.copyfileobj(src, dst)
        folder = tmp
    return JSONDatabase(
        path_workload=str(folder / WORKLOADS), path_tuning_record=str(folder / RECORDS),
        allow_missing=False,
    )


def export_workdir(store, folder: Path, model: str | None = None, target: str | None = None,
                   force: bool = False) -> tuple[int, int, list[int]]:
    """Write the store's MetaSchedule records (of ``model``'s workloads, if given) as a
    standard work dir that any TVM user can open with ``JSONDatabase``.
    Returns (workloads, records) written and the ids of records left out because their
    trace or run times do not parse (a damaged merge). Legacy Ansor records cannot be
    replayed by MetaSchedule and are left out.

    Atomic: the work dir is written beside ``folder`` and renamed into place, so a failed
    export leaves nothing and a symlink in the way is never written through. A non-empty
    ``folder`` is replaced only with ``force`` (and then whole: no old sidecar survives)."""
    folder = Path(folder).absolute()
    rows = store.records.ms(model=model, target=target)  # raises for an unknown model: before any file
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise SchedbError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not force:
            raise SchedbError(f"{folder}: not empty (`force` replaces it)")
        _check_replaceable(folder, Path(store.path))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as e:
        raise SchedbError(f"{folder}: cannot write there ({e.strerror})") from None
    try:
        counts = _write_workdir(tmp, rows)
        if counts[1] == 0:
            raise SchedbError(_nothing_to_export(store, model, target))
        if folder.exists():
            tmp.chmod(folder.stat().st_mode & 0o7777)  # the folder keeps its mode
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            folder.rename(old / folder.name)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SchedbError(f"{folder}: cannot write there ({e.strerror})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def _check_replaceable(folder: Path, database: Path) -> None:
    """``force`` replaces a MetaSchedule work dir, nothing else: not a folder holding other
    files, and never the database being exported."""
    if database.resolve().parent == folder.resolve() or folder.resolve() in database.resolve().parents:
        raise SchedbError(f"{folder}: holds the database being exported ({database.name}); not replaced")
    work_dir = {WORKLOADS, RECORDS, WORKLOADS + ".gz", RECORDS + ".gz", SIDECAR, "logs"}
    others = sorted(p.name for p in folder.iterdir() if p.name not in work_dir)
    if others:
        raise SchedbError(f"{folder}: holds more than a MetaSchedule work dir ({', '.join(others[:3])}"
                          + (", ..." if len(others) > 3 else "") + "); not replaced")


def _nothing_to_export(store, model: str | None, target: str | None) -> str:
    from schedb.tir.target import label

    legacy = store.records.count_legacy(model, target)
    which = " and".join(([f" model {model}"] if model else []) + ([f" target {label(target)}"] if target else []))
    return (f"0 records match{which}: nothing exported"
            + (f" ({legacy} legacy Ansor record{'s' * (legacy != 1)} cannot be exported)" if legacy else ""))


def _write_workdir(folder: Path, rows) -> tuple[int, int, list[int]]:
    index: dict[int, int] = {}
    n_records, bad = 0, []
    with open(folder / WORKLOADS, "w", encoding="utf-8") as wf, \
            open(folder / RECORDS, "w", encoding="utf-8") as rf:
        for row in rows:
            try:
                trace = json.loads(row["trace"])
                run = json.loads(row["run_secs"]) if row["run_secs"] else [1e10]  # MetaSchedule's "failed"
                args = json.loads(row["args_info"]) if row["args_info"] else []
                target = json.loads(row["target"])
            except (ValueError, RecursionError):
                bad.append(row["id"])
                continue
            wid = row["workload_id"]
            if wid not in index:
                index[wid] = len(index)
                wf.write(row["ms_workload"].strip() + "\n")
            rf.write(json.dumps([index[wid], [trace, run, target, args]], separators=(",", ":")) + "\n")
            n_records += 1
    return len(index), n_records, bad


# ------------------------------------------------------------------ a run in progress (schedb tune)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) .*?(?:picks Task #(\d+)|"
                   r"Sending (\d+) sample\(s\) to builder|Sending \d+ valid sample\(s\) to runner)")


def spent_trials(out: Path, tasks) -> list[int]:
    """Trials each task already has in ``out``'s records file (0s for a new work dir)."""
    import tvm_ffi

    wl_path, rec_path = out / WORKLOADS, out / RECORDS
    if not wl_path.is_file() or not rec_path.is_file():
        return [0] * len(tasks)
    shashes = [json.loads(line)[0] for line in wl_path.read_text().splitlines() if line.strip()]
    counts: dict[str, int] = {}
    for line in rec_path.read_text().splitlines():
        if line.strip():
            try:
                index = json.loads(line)[0]
            except (json.JSONDecodeError, IndexError, TypeError):
                continue  # a line cut short by the kill: that trial is lost
            counts[shashes[index]] = counts.get(shashes[index], 0) + 1
    return [counts.get(str(tvm_ffi.structural_hash(t.func)), 0) for t in tasks]


def drop_partial_line(path: Path):
    """A kill can leave a last line half written: MetaSchedule would append to it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])


def previous_run(out: Path) -> dict:
    """What the run so far knew: its sidecar, or for a run killed before it wrote one, its
    start, duration and timeline read back from MetaSchedule's task-scheduler log."""
    p = out / SIDECAR
    if p.is_file():
        return json.loads(p.read_text())
    log = next((out / "logs").glob("*task_scheduler.log"), None)
    stamps = [m[1] for m in map(_STAMP.match, log.read_text(errors="replace").splitlines()) if m] if log else []
    if not stamps:
        return {}
    # Local time, as the log writes it and timeline() reads it.
    first, last = (datetime.strptime(x, "%Y-%m-%d %H:%M:%S") for x in (stamps[0], stamps[-1]))
    return {"started": first.astimezone(timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": (last - first).total_seconds(), "timeline": timeline(out / "logs", first.timestamp())}


def timeline(logs: Path, started: float) -> dict:
    """When each task's candidates were measured: ``{"tasks": [[[seconds, candidates so
    far], ...] per task index]}``, from the task scheduler's log.

    MetaSchedule commits a batch's records only when it joins that task's batch (the
    gradient scheduler: when it next picks the task, after a whole round over all tasks),
    so neither the records file nor measure callbacks tell when a schedule was found; the
    log does. A task's records in the records file are in
    batch order, so its first n records are what the search knew at that time."""
    log = next(Path(logs).glob("*task_scheduler.log"), None)
    if log is None:
        return {}
    tasks: dict[int, list] = {}
    task, pending, stamp = None, 0, None

    def close():
        if task is not None and pending:
            steps = tasks.setdefault(task, [])
            steps.append([round(stamp - started, 1), (steps[-1][1] if steps else 0) + pending])

    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stamp_now = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp()
        if m[2] is not None:  # a new pick: a batch without valid builds ends here
            close()
            task, pending, stamp = int(m[2]), 0, stamp_now
        elif m[3] is not None:
            pending, stamp = int(m[3]), stamp_now
        else:  # sent to the runner: measured now (the runner takes seconds)
            stamp = stamp_now
            close()
            pending = 0
    close()
    n = max(tasks, default=-1) + 1
    return {"clock": "seconds since start when a batch went to the runner",
            "tasks": [tasks.get(i, []) for i in range(n)]}
