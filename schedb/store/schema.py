"""The schema of a schedb file: one migration per version, applied in order on open.

A migration is SQL text or a function of the connection (for what SQL alone cannot do).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3

from schedb.errors import SchedbError

SCHEMA_VERSION = 8

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
        signature TEXT NOT NULL UNIQUE, -- schedb.tir.signature: stable across TVM versions
        kind TEXT NOT NULL,             -- readable computation kind (block names)
        shash TEXT,                     -- TVM's structural hash (secondary key)
        legacy_key TEXT,                -- Ansor workload_key for legacy workloads
        shapes TEXT NOT NULL,           -- JSON: argument shapes
        dtypes TEXT NOT NULL,           -- JSON: argument dtypes
        description TEXT,               -- JSON: schedb.tir.signature.describe()
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
    # 5: a model's legacy Ansor workloads (no TIR: ms_workload NULL) are counted apart from
    # its Relax tasks (googlenet with the seed logs read 72 + 60 = 132 tasks).
    """
    DROP VIEW model_summary;
    CREATE VIEW model_summary AS
    WITH model_targets AS (
        SELECT DISTINCT t.model_id, r.target FROM model_tasks t
        JOIN records r ON r.workload_id = t.workload_id AND r.valid = 1
    )
    SELECT m.id AS model_id, m.name AS model, mt.target,
           COUNT(CASE WHEN w.ms_workload IS NOT NULL THEN 1 END) AS tasks,
           SUM(CASE WHEN w.ms_workload IS NOT NULL THEN t.weight END) AS kernels,
           COUNT(CASE WHEN w.ms_workload IS NOT NULL AND b.id IS NOT NULL THEN 1 END) AS tasks_with_schedule,
           SUM(CASE WHEN w.ms_workload IS NOT NULL THEN t.weight * b.mean_s END) * 1e3 AS est_kernel_ms,
           COUNT(CASE WHEN w.id IS NOT NULL AND w.ms_workload IS NULL THEN 1 END) AS legacy_tasks,
           COUNT(CASE WHEN w.id IS NOT NULL AND w.ms_workload IS NULL AND b.id IS NOT NULL THEN 1 END)
               AS legacy_tasks_with_schedule,
           (SELECT COUNT(*) FROM records r WHERE r.model_id = m.id AND r.target IS mt.target) AS records
    FROM models m
    LEFT JOIN model_targets mt ON mt.model_id = m.id
    LEFT JOIN model_tasks t ON t.model_id = m.id
    LEFT JOIN workloads w ON w.id = t.workload_id
    LEFT JOIN best_records b ON b.workload_id = t.workload_id AND b.target IS mt.target
    GROUP BY m.id, mt.target;
    """,
    # 6: each task's schedule chosen by one measurement of its contenders side by side
    # (schedb.pipeline.choose): records' means come from separate batches, under other loads
    # and, for MetaSchedule's, one sample each, so the lowest of them is biased low.
    """
    CREATE TABLE choices (
        workload_id INTEGER NOT NULL REFERENCES workloads(id),
        target TEXT NOT NULL,
        record_id INTEGER REFERENCES records(id),  -- NULL: the untuned kernel was fastest
        upto_record_id INTEGER NOT NULL,  -- the workload's newest record then: a newer one voids it
        contenders TEXT NOT NULL,         -- JSON: [{"record_id": id | null, "samples": [s, ...]}]
        chosen_at TEXT NOT NULL,
        PRIMARY KEY (workload_id, target)
    );
    """,
    # 7: record_lineage stops at a parent already in the chain: a parent_id cycle (a damaged
    # or forged file) made `SELECT * FROM record_lineage` run forever. `cycle` = 1 on the row
    # whose ancestor's parent is already in its chain (the walk ends there).
    """
    DROP VIEW record_lineage;
    CREATE VIEW record_lineage AS
    WITH RECURSIVE chain(record_id, ancestor_id, depth, seen) AS (
        SELECT id, id, 0, ',' || id || ',' FROM records
        UNION ALL
        SELECT c.record_id, r.parent_id, c.depth + 1, c.seen || r.parent_id || ','
        FROM chain c JOIN records r ON r.id = c.ancestor_id
        WHERE r.parent_id IS NOT NULL AND instr(c.seen, ',' || r.parent_id || ',') = 0
    )
    SELECT c.record_id, c.depth, a.id AS ancestor_id, a.origin, a.workload_id, w.kind,
           m.name AS model, f.path AS file, a.line, a.mean_s, a.target, a.created_at,
           (a.parent_id IS NOT NULL AND instr(c.seen, ',' || a.parent_id || ',') > 0) AS cycle
    FROM chain c
    JOIN records a ON a.id = c.ancestor_id
    JOIN workloads w ON w.id = a.workload_id
    LEFT JOIN models m ON m.id = a.model_id
    LEFT JOIN files f ON f.id = a.file_id;
    """,
    # 8: runs: every transfer, tune, droplet and fast run with its options, target, versions,
    # each task's outcome and the end-to-end latencies it timed; records name the run that
    # made them. A transfer's result lived only in its JSON report before.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,               -- transfer | tune | droplet | fast
        model TEXT,                       -- the model's name (NULL: droplet on workloads)
        status TEXT NOT NULL,             -- running | done | failed (a killed run stays running)
        target TEXT,                      -- canonical target JSON
        runner TEXT,                      -- local | rpc://host:port/key
        sources TEXT,                     -- JSON list: models whose schedules it could use (NULL: all)
        options TEXT NOT NULL,            -- JSON: what it was asked
        tvm_version TEXT,
        schedb_version TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        error TEXT,                       -- why it failed
        parent_run_id INTEGER REFERENCES runs(id),  -- the fast run a transfer or tune ran in
        e2e TEXT,                         -- JSON: variant -> latency (median_ms, p25_ms, p75_ms, samples_ms)
        untuned_ms REAL,                  -- medians of the end-to-end timing: the untuned model,
        tvm_ms REAL,                      -- the model the run built,
        pytorch_ms REAL                   -- PyTorch eager, in the same rounds
    );
    CREATE TABLE run_tasks (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        task TEXT NOT NULL,
        source TEXT NOT NULL,             -- transfer: exact | neighbor | anchor | searched | untuned;
                                          -- tune: the chosen record's origin | untuned; droplet: droplet | stored
        workload_id INTEGER REFERENCES workloads(id),
        weight INTEGER,
        source_model TEXT,
        source_record_id INTEGER REFERENCES records(id),
        record_id INTEGER REFERENCES records(id),  -- the chosen record (NULL: the untuned kernel)
        untuned_us REAL,
        chosen_us REAL
    );
    CREATE INDEX run_tasks_run ON run_tasks(run_id);
    ALTER TABLE records ADD COLUMN run_id INTEGER REFERENCES runs(id);
    CREATE INDEX records_run ON records(run_id);
    """,
]

DIGEST_BYTES = 16  # records.digest: the first 128 bits of a sha256 (schedb.store.records.record_digest)


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


def statements(script: str):
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
