"""Store: the SQLite file that holds every schedule, with provenance plain SQL can follow.

One file, WAL mode, schema version kept in ``schema_info`` and migrated forward on
open. Tables are created and inspected with sqlite-utils; bulk writes go through
the connection directly so that a whole input file lands in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import orjson
import sqlite_utils

from schedb.errors import SchedbError
from schedb.target import distance as target_distance

SCHEMA_VERSION = 4
DEFAULT_DB = "schedb.db"
WRITE_CACHE_KIB = 64 * 1024  # page cache of a writing connection

# Each entry migrates the schema from version i to i+1.
MIGRATIONS = [
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,            -- as given on the command line, resolved
        sha256 TEXT NOT NULL UNIQUE,   -- content hash: the same file is ingested once
        format TEXT NOT NULL,          -- metaschedule | ansor | schedb
        size INTEGER,
        lines INTEGER,
        ingested_at TEXT NOT NULL
    );
    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT,                   -- zoo:NAME, a file path, or a legacy log
        input_shapes TEXT,             -- JSON
        target TEXT,                   -- canonical target JSON it was tuned for
        tvm_version TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE workloads (
        id INTEGER PRIMARY KEY,
        signature TEXT NOT NULL UNIQUE, -- schedb.signature: stable across TVM versions
        kind TEXT NOT NULL,             -- readable computation kind (block names)
        shash TEXT,                     -- TVM's structural hash (secondary key)
        legacy_key TEXT,                -- Ansor workload_key for legacy workloads
        shapes TEXT NOT NULL,           -- JSON: argument shapes
        dtypes TEXT NOT NULL,           -- JSON: argument dtypes
        description TEXT,               -- JSON: schedb.signature.describe()
        ms_workload TEXT,               -- MetaSchedule's serialized IRModule (NULL: legacy)
        tvm_version TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX workloads_shash ON workloads(shash);
    CREATE TABLE model_tasks (
        model_id INTEGER NOT NULL REFERENCES models(id),
        workload_id INTEGER NOT NULL REFERENCES workloads(id),
        task_name TEXT,
        weight INTEGER,                 -- occurrences of the kernel in the model (NULL: unknown)
        PRIMARY KEY (model_id, workload_id)
    );
    CREATE INDEX model_tasks_workload ON model_tasks(workload_id);
    CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        workload_id INTEGER NOT NULL REFERENCES workloads(id),
        target TEXT NOT NULL,           -- canonical target JSON
        format TEXT NOT NULL,           -- ms-trace | ansor-steps
        trace TEXT NOT NULL,            -- JSON, exactly as the tuner wrote it
        run_secs TEXT,                  -- JSON list: every measured sample
        mean_s REAL,                    -- mean of run_secs (NULL when invalid)
        valid INTEGER NOT NULL,         -- 0: failed measurement, never chosen as best
        error TEXT,
        args_info TEXT,                 -- JSON (MetaSchedule ArgInfo)
        origin TEXT NOT NULL,           -- tuned | transferred | droplet | legacy-ansor
        parent_id INTEGER REFERENCES records(id),
        source_workload_id INTEGER REFERENCES workloads(id),  -- where a transferred schedule came from
        distance REAL,                  -- neighbour distance of that source workload
        search_time_s REAL,
        model_id INTEGER REFERENCES models(id),
        file_id INTEGER REFERENCES files(id),
        line INTEGER,                   -- line in that file (1-based)
        measured_at TEXT,
        tvm_version TEXT,
        created_at TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE     -- identity: ingesting twice adds nothing
    );
    CREATE INDEX records_best ON records(workload_id, target, valid, mean_s);
    CREATE INDEX records_parent ON records(parent_id);
    CREATE INDEX records_model ON records(model_id);

    CREATE VIEW best_records AS
    SELECT * FROM (
        SELECT r.*, ROW_NUMBER() OVER (
            PARTITION BY r.workload_id, r.target ORDER BY r.mean_s, r.id) AS rank
        FROM records r WHERE r.valid = 1
    ) WHERE rank = 1;

    CREATE VIEW record_lineage AS
    WITH RECURSIVE chain(record_id, ancestor_id, depth) AS (
        SELECT id, id, 0 FROM records
        UNION ALL
        SELECT c.record_id, r.parent_id, c.depth + 1
        FROM chain c JOIN records r ON r.id = c.ancestor_id
        WHERE r.parent_id IS NOT NULL
    )
    SELECT c.record_id, c.depth, a.id AS ancestor_id, a.origin, a.workload_id, w.kind,
           m.name AS model, f.path AS file, a.line, a.mean_s, a.created_at
    FROM chain c
    JOIN records a ON a.id = c.ancestor_id
    JOIN workloads w ON w.id = a.workload_id
    LEFT JOIN models m ON m.id = a.model_id
    LEFT JOIN files f ON f.id = a.file_id;

    CREATE VIEW model_summary AS
    SELECT m.id AS model_id, m.name AS model,
           COUNT(t.workload_id) AS tasks,
           SUM(t.weight) AS kernels,
           SUM(b.id IS NOT NULL) AS tasks_with_schedule,
           SUM(t.weight * b.mean_s) * 1e3 AS est_kernel_ms,
           (SELECT COUNT(*) FROM records r WHERE r.model_id = m.id) AS records
    FROM models m
    LEFT JOIN model_tasks t ON t.model_id = m.id
    LEFT JOIN (SELECT workload_id, MIN(id) AS id, MIN(mean_s) AS mean_s
               FROM best_records GROUP BY workload_id) b ON b.workload_id = t.workload_id
    GROUP BY m.id;
    """,
    # 2: best record of a workload for any target without a sort (target sits in records_best).
    """
    CREATE INDEX records_best_any ON records(workload_id, valid, mean_s);
    """,
    # 3: records.digest is 16 bytes (BLOB), not 64 hex characters, unique per workload:
    # see _records_digest_blob.
    lambda conn: _records_digest_blob(conn),
    # 4: records of several CPUs share a database: model_summary gets a row per model and
    # target (it mixed the targets), record_lineage names each ancestor's target.
    """
    DROP VIEW model_summary;
    DROP VIEW record_lineage;
    CREATE VIEW record_lineage AS
    WITH RECURSIVE chain(record_id, ancestor_id, depth) AS (
        SELECT id, id, 0 FROM records
        UNION ALL
        SELECT c.record_id, r.parent_id, c.depth + 1
        FROM chain c JOIN records r ON r.id = c.ancestor_id
        WHERE r.parent_id IS NOT NULL
    )
    SELECT c.record_id, c.depth, a.id AS ancestor_id, a.origin, a.workload_id, w.kind,
           m.name AS model, f.path AS file, a.line, a.mean_s, a.target, a.created_at
    FROM chain c
    JOIN records a ON a.id = c.ancestor_id
    JOIN workloads w ON w.id = a.workload_id
    LEFT JOIN models m ON m.id = a.model_id
    LEFT JOIN files f ON f.id = a.file_id;
    CREATE VIEW model_summary AS
    WITH model_targets AS (
        SELECT DISTINCT t.model_id, r.target FROM model_tasks t
        JOIN records r ON r.workload_id = t.workload_id AND r.valid = 1
    )
    SELECT m.id AS model_id, m.name AS model, mt.target,
           COUNT(t.workload_id) AS tasks,
           SUM(t.weight) AS kernels,
           SUM(b.id IS NOT NULL) AS tasks_with_schedule,
           SUM(t.weight * b.mean_s) * 1e3 AS est_kernel_ms,
           (SELECT COUNT(*) FROM records r WHERE r.model_id = m.id AND r.target IS mt.target) AS records
    FROM models m
    LEFT JOIN model_targets mt ON mt.model_id = m.id
    LEFT JOIN model_tasks t ON t.model_id = m.id
    LEFT JOIN best_records b ON b.workload_id = t.workload_id AND b.target IS mt.target
    GROUP BY m.id, mt.target;
    """,
]

DIGEST_BYTES = 16  # records.digest: the first 128 bits of a sha256 (schedb.ingest.record_digest)


def digest_from_v2(digest) -> bytes:
    """A schema-2 digest (64 hex characters of a sha256) as stored from schema 3 on: its
    first 16 bytes, so a converted record equals the same record ingested anew. A digest
    that is not hex (a caller's own identity string) becomes the first 16 bytes of its sha256."""
    if isinstance(digest, bytes):
        return digest
    try:
        if len(digest) == 64:
            return bytes.fromhex(digest)[:DIGEST_BYTES]
    except ValueError:
        pass
    return hashlib.sha256(str(digest).encode()).digest()[:DIGEST_BYTES]


def _records_digest_blob(conn):
    """Schema 3: rebuild ``records`` with ``digest BLOB`` and the identity constraint
    ``UNIQUE (workload_id, digest)`` instead of ``digest TEXT UNIQUE`` (SQLite cannot change a
    column in place): new table, every row copied with its id, old table dropped, the new one
    renamed, then its indexes and the views recreated from their stored SQL. Foreign keys are
    off during the migration (Store._migrate) and checked before it commits.

    Why: the unique index took one random-page insert per record (a digest is random), so
    each ingested work dir rewrote most of that index once the database outgrew a few 10^4
    records. Keyed by workload first, a work dir's records land in its workloads' few key
    ranges. The constraint means the same: a digest covers the workload's signature, and one
    signature is one workload row. 16 bytes instead of 64 characters: a third the size."""
    cols = [r[1] for r in conn.execute("PRAGMA table_info(records)")]
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone()[0]
    new_sql, n = re.subn(r"digest\s+TEXT\s+NOT\s+NULL\s+UNIQUE",
                         "digest BLOB NOT NULL, UNIQUE (workload_id, digest)", sql)
    if n != 1:
        raise SchedbError("schema 3 migration: unexpected records table definition")
    new_sql = re.sub(r"CREATE TABLE\s+\"?records\"?", "CREATE TABLE records_v3", new_sql, count=1)
    indexes = [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL")]
    views = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY rowid").fetchall()
    conn.create_function("schedb_digest_from_v2", 1, digest_from_v2, deterministic=True)
    for name, _ in views:
        conn.execute(f'DROP VIEW "{name}"')
    conn.execute(new_sql)
    col_list = ", ".join(cols)
    select = ", ".join("schedb_digest_from_v2(digest)" if c == "digest" else c for c in cols)
    # INSERT OR IGNORE: two old digests that differ only past their first 128 bits (never
    # seen in practice) would keep the first record.
    conn.execute(f"INSERT OR IGNORE INTO records_v3 ({col_list}) SELECT {select} FROM records ORDER BY id")
    conn.execute("DROP TABLE records")
    conn.execute("ALTER TABLE records_v3 RENAME TO records")
    for stmt in indexes:
        conn.execute(stmt)
    for _, stmt in views:
        conn.execute(stmt)
    if conn.execute("PRAGMA foreign_key_check").fetchone():
        raise SchedbError("schema 3 migration: foreign key check failed")


def dumps(obj, sort_keys: bool = False) -> str:
    """The one JSON serializer for stored text (digests depend on it): compact, orjson
    (several times faster than json, which dominated ingest time)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()


def loads(text):
    """orjson, falling back to json for what only Python's json writes (NaN, Infinity)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_path() -> str:
    return os.environ.get("SCHEDB_DB", DEFAULT_DB)


def _no_attach(action, *_):
    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else sqlite3.SQLITE_OK


class Store:
    """An open schedb database. ``Store(path)`` creates or migrates the file."""

    def __init__(self, path: str | os.PathLike | None = None, readonly: bool = False):
        self.path = Path(path or default_path())
        if readonly:
            if not self.path.exists():
                raise SchedbError(f"{self.path}: no such database")
            uri = f"file:{self.path.resolve()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        # Candidates of every target are ranked in SQL by how alike their target is.
        conn.create_function("target_distance", 2, _target_distance, deterministic=True)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                # Records are ~2 KB (the trace): 16 KiB pages hold several, 4 KiB pages one.
                conn.execute("PRAGMA page_size = 16384")  # no effect once the file has tables
                # Index pages stay in memory during bulk inserts (the default 2 MiB thrashes on
                # the digest and best-record indexes beyond a few 10^4 records). Allocated lazily.
                conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
            else:
                conn.execute("PRAGMA query_only = ON")  # also refuses VACUUM INTO and the like
                # ... but only after SQLite has created the file it names: refuse ATTACH
                # (which VACUUM INTO does first) when the statement is prepared.
                conn.set_authorizer(_no_attach)
            if readonly and not 0 < self.version() <= SCHEMA_VERSION:
                # An older file reads fine (schema 2: digests are hex text, see digest_from_v2);
                # it is migrated on the next write.
                raise SchedbError(f"{self.path}: schema version {self.version()}, this schedb reads "
                                  f"1 to {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise SchedbError(f"{self.path}: not a schedb database ({e})") from None

    # ------------------------------------------------------------------ schema
    def version(self) -> int:
        if "schema_info" not in self.db.table_names():
            return 0
        row = self.conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self):
        current = self.version()
        if current > SCHEMA_VERSION:
            raise SchedbError(f"{self.path}: written by a newer schedb (schema {current})")
        if current == 0 and self.db.table_names() and "schema_info" not in self.db.table_names():
            raise SchedbError(f"{self.path}: an SQLite file, but not a schedb database")
        if current == SCHEMA_VERSION:
            return
        # A migration that rebuilds a table drops it while rows still reference it (SQLite's
        # ALTER TABLE procedure): foreign keys off meanwhile (a no-op inside a transaction).
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            for version in range(current, SCHEMA_VERSION):
                with self.transaction():
                    if version == 0:
                        self.conn.execute("CREATE TABLE schema_info (key TEXT PRIMARY KEY, value TEXT)")
                    step = MIGRATIONS[version]
                    if callable(step):
                        step(self.conn)
                    else:
                        for stmt in _statements(step):
                            self.conn.execute(stmt)
                    self.conn.execute(
                        "INSERT OR REPLACE INTO schema_info VALUES ('version', ?)", (str(version + 1),)
                    )
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

    # ------------------------------------------------------------------ transactions
    def transaction(self):
        return _Transaction(self.conn)

    def close(self):
        self.conn.close()

    # ------------------------------------------------------------------ writes
    def upsert_model(self, name, source=None, input_shapes=None, target=None, tvm_version=None) -> int:
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row:
            # Fill in what an earlier, less informed ingest did not know.
            self.conn.execute(
                "UPDATE models SET source = COALESCE(source, ?), input_shapes = COALESCE(input_shapes, ?),"
                " target = COALESCE(target, ?), tvm_version = COALESCE(tvm_version, ?) WHERE id = ?",
                (source, _json(input_shapes), target, tvm_version, row[0]),
            )
            return row[0]
        cur = self.conn.execute(
            "INSERT INTO models (name, source, input_shapes, target, tvm_version, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, source, _json(input_shapes), target, tvm_version, now()),
        )
        return cur.lastrowid

    def upsert_workload(self, signature, kind, shapes, dtypes, shash=None, legacy_key=None,
                        description=None, ms_workload=None, tvm_version=None) -> tuple[int, bool]:
        """-> (id, created)."""
        row = self.conn.execute("SELECT id FROM workloads WHERE signature = ?", (signature,)).fetchone()
        if row:
            return row[0], False
        cur = self.conn.execute(
            "INSERT INTO workloads (signature, kind, shash, legacy_key, shapes, dtypes, description,"
            " ms_workload, tvm_version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (signature, kind, shash, legacy_key, json.dumps(shapes), json.dumps(dtypes),
             _json(description), ms_workload, tvm_version, now()),
        )
        return cur.lastrowid, True

    def add_task(self, model_id, workload_id, task_name=None, weight=None):
        self.conn.execute(
            "INSERT INTO model_tasks (model_id, workload_id, task_name, weight) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model_id, workload_id) DO UPDATE SET"
            " weight = COALESCE(excluded.weight, model_tasks.weight),"
            " task_name = COALESCE(model_tasks.task_name, excluded.task_name)",
            (model_id, workload_id, task_name, weight),
        )

    RECORD_COLUMNS = (
        "workload_id", "target", "format", "trace", "run_secs", "mean_s", "valid", "error",
        "args_info", "origin", "parent_id", "source_workload_id", "distance", "search_time_s",
        "model_id", "file_id", "line", "measured_at", "tvm_version", "created_at", "digest",
    )

    _INSERT_RECORDS = (f"INSERT OR IGNORE INTO records ({', '.join(RECORD_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(RECORD_COLUMNS))})")

    def insert_records(self, rows: list) -> int:
        """Insert records: dicts keyed by RECORD_COLUMNS (missing keys are NULL), or
        tuples with every column in RECORD_COLUMNS order (ingest's bulk path: no
        per-row dict work). Duplicates by (workload, digest) are skipped. Returns how many were new."""
        if not rows:
            return 0
        cols = self.RECORD_COLUMNS
        rows = [r if type(r) is tuple else tuple(r.get(c) for c in cols) for r in rows]
        return self.conn.executemany(self._INSERT_RECORDS, rows).rowcount  # ignored duplicates count 0

    def add_record(self, **row) -> int | None:
        """Insert one record; returns its id (the existing one for a duplicate)."""
        row.setdefault("created_at", now())
        self.insert_records([row])
        found = self.conn.execute("SELECT id FROM records WHERE workload_id = ? AND digest = ?",
                                  (row["workload_id"], row["digest"])).fetchone()
        return found[0] if found else None

    # ------------------------------------------------------------------ reads
    def best_record(self, workload_id: int, target: str | None = None) -> dict | None:
        """The fastest valid record of a workload (for ``target``, if given)."""
        sql = "SELECT * FROM records WHERE workload_id = ? AND valid = 1"
        args: list = [workload_id]
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        rows = list(self.db.query(sql + " ORDER BY mean_s, id LIMIT 1", args))
        return rows[0] if rows else None

    def top_records(self, workload_id: int, target: str | None, n: int,
                    model_ids: list[int] | None = None, max_distance: int | None = None) -> list[dict]:
        """The ``n`` best valid MetaSchedule records, one per distinct trace (only records
        of ``model_ids``, if given). With a ``target``: records of every target of its kind,
        the closest target first (schedb.target.distance; at most ``max_distance`` away),
        the fastest first within a target, since times of different CPUs do not compare.
        Each row carries its ``target_distance``."""
        sql = "SELECT *, target_distance(target, ?) AS target_distance FROM records" \
              " WHERE workload_id = ? AND valid = 1 AND format = 'ms-trace'"
        args: list = [target, workload_id]
        order = "mean_s, id"
        if target is not None:
            sql += " AND target_distance IS NOT NULL"
            if max_distance is not None:
                sql += " AND target_distance <= ?"
                args.append(max_distance)
            order = "target_distance, target, mean_s, id"
        if model_ids is not None:
            sql += f" AND model_id IN ({', '.join('?' * len(model_ids))})"
            args += list(model_ids)
        out, seen = [], set()
        for r in self.db.query(f"{sql} ORDER BY {order} LIMIT ?", args + [n * 4]):
            if r["trace"] not in seen:
                seen.add(r["trace"])
                out.append(r)
            if len(out) == n:
                break
        return out

    def target_counts(self, kind: str | None = None) -> dict[str, int]:
        """Valid MetaSchedule records per target (of workloads of ``kind``, if given)."""
        sql = "SELECT r.target, COUNT(*) FROM records r"
        args: list = []
        if kind is not None:
            sql += " JOIN workloads w ON w.id = r.workload_id AND w.kind = ?"
            args.append(kind)
        sql += " WHERE r.valid = 1 AND r.format = 'ms-trace' GROUP BY r.target"
        return dict(self.conn.execute(sql, args).fetchall())

    def workload(self, workload_id: int) -> dict | None:
        rows = list(self.db.query("SELECT * FROM workloads WHERE id = ?", [workload_id]))
        return rows[0] if rows else None

    def record(self, record_id: int) -> dict | None:
        rows = list(self.db.query("SELECT * FROM records WHERE id = ?", [record_id]))
        return rows[0] if rows else None

    def lineage(self, record_id: int) -> list[dict]:
        """The chain from a record back through its parents to the original log line."""
        sql = """
        WITH RECURSIVE chain(id, depth) AS (
            SELECT ?, 0
            UNION ALL
            SELECT r.parent_id, c.depth + 1 FROM chain c JOIN records r ON r.id = c.id
            WHERE r.parent_id IS NOT NULL
        )
        SELECT c.depth, r.id, r.origin, r.workload_id, w.kind, r.mean_s, r.valid,
               r.source_workload_id, r.distance, r.search_time_s,
               m.name AS model, f.path AS file, f.format AS file_format, r.line, r.target,
               r.tvm_version, r.created_at
        FROM chain c JOIN records r ON r.id = c.id
        JOIN workloads w ON w.id = r.workload_id
        LEFT JOIN models m ON m.id = r.model_id
        LEFT JOIN files f ON f.id = r.file_id
        ORDER BY c.depth
        """
        return list(self.db.query(sql, [record_id]))

    def model_id(self, name: str) -> int | None:
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict:
        return {t: self.db[t].count for t in ("files", "models", "workloads", "model_tasks", "records")}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (also KeyboardInterrupt)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def _target_distance(a, b):
    return None if a is None or b is None else target_distance(a, b)


def _json(value):
    return None if value is None else (value if isinstance(value, str) else json.dumps(value))


def _statements(script: str):
    """Split a migration script into statements (sqlite3.complete_statement aware)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()
