"""MetaSchedule work dirs: the two JSON files TVM writes, plain or gzip-compressed."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

from schedb.errors import SchedbError

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
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


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
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise SchedbError(f"{folder}: not empty (`force` replaces it)")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as e:
        raise SchedbError(f"{folder}: cannot write there ({e.strerror})") from None
    try:
        counts = _write_workdir(tmp, rows)
        if folder.exists():
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
