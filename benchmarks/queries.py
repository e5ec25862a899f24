"""The benchmarks' own SQL, in one place. What schedb can answer goes through `Store`; this
holds the rest: reads that check a database from outside schedb (counts, integrity, the
query plan of a lookup), the plain statements a timed lookup is compared with, and the
surgery a study does on a copy (relabelling its target, cutting a run back to a moment)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path


def _one(db: Path, sql: str, params=()):
    with closing(sqlite3.connect(db)) as c:
        return c.execute(sql, params).fetchone()[0]


# --------------------------------------------------------------------------- outside reads
def record_count(db: Path) -> int:
    return _one(db, "SELECT COUNT(*) FROM records")


def integrity(db: Path) -> str:
    return _one(db, "PRAGMA integrity_check")


def max_record_id(db: Path) -> int:
    return _one(db, "SELECT COALESCE(MAX(id), 0) FROM records")


def read_while_written(reader: sqlite3.Connection):
    """What a reader asks while writers run: a count and a page of the best records."""
    reader.execute("SELECT COUNT(*) FROM records").fetchone()
    reader.execute("SELECT * FROM best_records LIMIT 50").fetchall()


def a_record(store) -> tuple:
    """(workload_id, signature, target, trace) of some stored record."""
    return store.conn.execute(
        "SELECT r.workload_id, w.signature, r.target, r.trace FROM records r"
        " JOIN workloads w ON w.id = r.workload_id LIMIT 1").fetchone()


# --------------------------------------------------------------------------- a store at scale
def seed_parents(store, stamp: str):
    """The model and file rows the synthetic records of the stage timing point at."""
    store.conn.execute("INSERT INTO models (name, created_at) VALUES ('m', ?)", (stamp,))
    store.conn.execute("INSERT INTO files (path, sha256, format, ingested_at) VALUES ('f', 'h', 'x', ?)", (stamp,))


def checkpoint(store):
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def commonest_target(store) -> str:
    return store.conn.execute(
        "SELECT target FROM records GROUP BY target ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0]


def kind_count(store) -> int:
    return store.conn.execute("SELECT COUNT(DISTINCT kind) FROM workloads").fetchone()[0]


def workload_ids(store) -> list[int]:
    return [w for w, in store.conn.execute("SELECT id FROM workloads")]


def best_records_view(store, workload_id: int) -> list:
    return list(store.db.query("SELECT * FROM best_records WHERE workload_id = ?", [workload_id]))


def fastest_valid(store, workload_id: int, target: str):
    """The fastest valid mean by a plain scan: what `records.best` must agree with."""
    return store.conn.execute("SELECT MIN(mean_s) FROM records WHERE workload_id = ? AND target = ?"
                              " AND valid = 1", (workload_id, target)).fetchone()[0]


def best_record_plan(store) -> list[str]:
    return [row[-1] for row in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM records WHERE workload_id = ? AND valid = 1"
        " ORDER BY mean_s, id LIMIT 1", (1,))]


# --------------------------------------------------------------------------- surgery on copies
def relabel(db: Path, target: str):
    """Every record of ``db`` claims ``target``."""
    with closing(sqlite3.connect(db)) as c, c:
        c.execute("UPDATE records SET target = ?", (target,))


def drop_tuning_of(db: Path, model: str):
    """Forget the records tuned for ``model`` itself."""
    with closing(sqlite3.connect(db)) as c, c:
        c.execute("DELETE FROM records WHERE origin = 'tuned' AND model_id IN "
                  "(SELECT id FROM models WHERE name = ?)", (model,))


def cut_run(snap: Path, previous: Path, before: int, kept: list[tuple[str, int]]) -> int:
    """Cut the run that wrote records past id ``before`` back to its first ``kept[signature]``
    records of each workload (by signature), and take the choices of ``previous``; how many run records stay."""
    with closing(sqlite3.connect(snap, isolation_level=None)) as c:
        c.execute("ATTACH DATABASE ? AS previous", (str(previous),))  # outside a transaction
        c.execute("BEGIN")
        for sig, n in kept:
            c.execute("DELETE FROM main.records WHERE id > ? AND workload_id = (SELECT id FROM main.workloads"
                      " WHERE signature = ?) AND id NOT IN (SELECT r.id FROM main.records r JOIN main.workloads w"
                      " ON w.id = r.workload_id WHERE w.signature = ? AND r.id > ? ORDER BY r.id LIMIT ?)",
                      (before, sig, sig, before, n))
        c.execute("DELETE FROM main.choices")
        if previous != snap:
            c.execute("INSERT INTO main.choices SELECT * FROM previous.choices")
        stayed = c.execute("SELECT COUNT(*) FROM main.records WHERE id > ?", (before,)).fetchone()[0]
        c.execute("COMMIT")
    return stayed
