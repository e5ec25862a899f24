"""What the ingest, merge, corruption, database and CLI tests share: the tiny_mlp
fixture's lines, writers of work dirs and Ansor logs, and database snapshots."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest



ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures" / "tiny_mlp"
SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seed-logs" / "ansor-5000"
needs_seed = pytest.mark.skipif(not SEED.is_dir(), reason=f"seed Ansor logs not found at {SEED}")

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
ANSOR_TARGET = "llvm -keys=cpu -mcpu=core-avx2 -mtriple=x86_64-linux-gnu"


# --------------------------------------------------------------------------- helpers
def text_lines(path: Path) -> list[str]:
    """The non-blank lines of a (possibly gzip-compressed) text file, read independently."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


TINY_W = text_lines(TINY / (WORKLOADS + ".gz"))
TINY_R = text_lines(TINY / (RECORDS + ".gz"))
TINY_SIDECAR = json.loads((TINY / "schedb.json").read_text())


def write_workdir(folder: Path, workloads=TINY_W, records=TINY_R, sidecar=True) -> Path:
    """A plain-text MetaSchedule work dir (one JSON value a line), like TVM writes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKLOADS).write_text("".join(w + "\n" for w in workloads))
    (folder / RECORDS).write_text("".join(r + "\n" for r in records))
    if sidecar:
        shutil.copy(TINY / "schedb.json", folder / "schedb.json")
    return folder


def ansor_line(i: int, key_hash="0123abcd", shapes=([1, 64], [64, 32], [1, 32]), costs=None,
               error_no=0, ts=1_700_000_000, target=ANSOR_TARGET) -> str:
    """A synthetic legacy Ansor record in the documented format (seed README)."""
    key = json.dumps([key_hash, *shapes])
    return json.dumps({
        "i": [[key, target, [4, 64, 64, 0, 0, 0, 0, 0], "llvm -keys=cpu ", 2, []],
              [[], [["SP", 2, 0, 64, [i % 64 + 1], 1], ["AN", 2, 0, 3]]]],
        "r": [list(costs) if costs is not None else [1e-5 * (i + 1), 1.1e-5 * (i + 1)],
              error_no, 0.5, ts],
        "v": "v0.6",
    })


def write_ansor(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_secs_valid(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(x, (int, float)) and 0 < x < 1e9 for x in value))


def clone_db(src: Path, dst: Path) -> Path:
    """A byte-for-byte consistent copy of a database (WAL content included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def snapshot(conn, max_ids=None) -> dict:
    """Every row that matters, keyed so that two databases can be compared."""
    def q(sql, limit=None):
        if limit is not None:
            return conn.execute(sql + " WHERE id <= ? ORDER BY id", (limit,)).fetchall()
        return conn.execute(sql + " ORDER BY id").fetchall()

    m = max_ids or {}
    return {
        "records": q("SELECT id, digest, workload_id, file_id, line, valid, mean_s, model_id FROM records",
                     m.get("records")),
        "workloads": q("SELECT id, signature, kind, shash FROM workloads", m.get("workloads")),
        "files": q("SELECT id, sha256, path, lines FROM files", m.get("files")),
        "models": q("SELECT id, name FROM models", m.get("models")),
    }


def max_ids(conn) -> dict:
    return {t: conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0]
            for t in ("records", "workloads", "files", "models")}


def logical(conn) -> dict:
    """Database content independent of row ids (for merge comparisons)."""
    return {
        "workloads": set(conn.execute(
            "SELECT signature, kind, shash, legacy_key, shapes, dtypes, description, ms_workload,"
            " tvm_version FROM workloads")),
        "records": set(conn.execute(
            "SELECT r.digest, w.signature, r.target, r.format, r.trace, r.run_secs, r.mean_s, r.valid,"
            " r.error, r.args_info, r.origin, p.digest, sw.signature, r.distance, m.name, f.path,"
            " f.sha256, r.line, r.measured_at, r.tvm_version"
            " FROM records r JOIN workloads w ON w.id = r.workload_id"
            " LEFT JOIN records p ON p.id = r.parent_id"
            " LEFT JOIN workloads sw ON sw.id = r.source_workload_id"
            " LEFT JOIN models m ON m.id = r.model_id LEFT JOIN files f ON f.id = r.file_id")),
        "models": set(conn.execute("SELECT name, source, input_shapes, target, tvm_version FROM models")),
        "tasks": set(conn.execute(
            "SELECT m.name, w.signature, t.task_name, t.weight FROM model_tasks t"
            " JOIN models m ON m.id = t.model_id JOIN workloads w ON w.id = t.workload_id")),
        "files": set(conn.execute("SELECT path, sha256, format, size, lines FROM files")),
    }


def cli_ok(result):
    """No traceback: either a clean exit or a SystemExit (click's own error path)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output


