"""Store: the SQLite file that holds every schedule, with provenance plain SQL can follow.

One file, WAL mode, schema version kept in ``schema_info`` and migrated forward on
open. Tables are created and inspected with sqlite-utils; bulk writes go through
the connection directly so that a whole input file lands in one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import orjson
import sqlite_utils

from schedb.errors import SchedbError
from schedb.store import queries, schema
from schedb.tir.target import coverage_note, distance as target_distance

DEFAULT_DB = "schedb.db"
WRITE_CACHE_KIB = 64 * 1024  # page cache of a writing connection
# How long a writer waits for another's transaction (an ingest holds one per input file,
# ~4 s per 10^5 records) before giving up with "database is locked".
BUSY_TIMEOUT_S = 300.0


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
        self.readonly = readonly
        memory = str(self.path) == ":memory:"  # (benchmarks: a throwaway database)
        if readonly and not self.path.exists():
            raise SchedbError(f"{self.path}: no such database")
        if not readonly and not memory and not self.path.parent.is_dir():
            raise SchedbError(f"{self.path}: no such folder {str(self.path.parent)!r} for the database")
        try:
            # A URI, percent-encoded: a "?" or "#" in the path is part of the name, not a parameter.
            uri = ":memory:" if memory else self.path.resolve().as_uri() + ("?mode=ro" if readonly else "")
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as e:
            raise SchedbError(f"{self.path}: cannot open database ({e})") from None
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
            if readonly and not 0 < self.version() <= schema.SCHEMA_VERSION:
                # An older file reads fine (schema 2: digests are hex text, see digest_from_v2);
                # it is migrated on the next write.
                raise SchedbError(f"{self.path}: schema version {self.version()}, this schedb reads "
                                  f"1 to {schema.SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise SchedbError(f"{self.path}: not a schedb database ({e})") from None

    # ------------------------------------------------------------------ schema
    def version(self) -> int:
        if "schema_info" not in self.db.table_names():
            return 0
        row = self.conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except (TypeError, ValueError):
            raise SchedbError(f"{self.path}: schema version {row[0]!r} is not a number") from None

    def _migrate(self):
        current = self.version()
        if current > schema.SCHEMA_VERSION:
            raise SchedbError(f"{self.path}: written by a newer schedb (schema {current})")
        if current == 0 and self.db.table_names() and "schema_info" not in self.db.table_names():
            raise SchedbError(f"{self.path}: an SQLite file, but not a schedb database")
        if current == schema.SCHEMA_VERSION:
            return
        # A migration that rebuilds a table drops it while rows still reference it (SQLite's
        # ALTER TABLE procedure): foreign keys off meanwhile (a no-op inside a transaction).
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            while True:
                with self.transaction():
                    # Read again under the write lock: another process may be migrating (or
                    # creating) this file at the same moment.
                    version = self.version()
                    if version >= schema.SCHEMA_VERSION:
                        break
                    if version == 0:
                        self.conn.execute("CREATE TABLE schema_info (key TEXT PRIMARY KEY, value TEXT)")
                    step = schema.MIGRATIONS[version]
                    if callable(step):
                        step(self.conn)
                    else:
                        for stmt in schema.statements(step):
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
        the closest target first (schedb.tir.target.distance; at most ``max_distance`` away),
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

    def contenders(self, workload_id: int, target: str, n: int) -> list[dict]:
        """The records to measure side by side for a choice: the ``n`` best by stored time
        (top_records' order) and the best of each origin, one per distinct trace."""
        sql = ("SELECT * FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY target_distance, target, mean_s, id) AS rank,"
               " ROW_NUMBER() OVER (PARTITION BY origin ORDER BY target_distance, target, mean_s, id) AS origin_rank"
               " FROM (SELECT *, target_distance(target, ?) AS target_distance FROM records"
               " WHERE workload_id = ? AND valid = 1 AND format = 'ms-trace') WHERE target_distance IS NOT NULL)"
               " WHERE rank <= ? OR origin_rank = 1 ORDER BY rank")
        out, seen = [], set()
        for r in self.db.query(sql, [target, workload_id, n]):
            if r["trace"] not in seen:
                seen.add(r["trace"])
                out.append(r)
        return out

    def record_choice(self, workload_id: int, target: str, record_id: int | None, contenders: list[dict],
                      chosen_at: str | None = None):
        """Keep the outcome of one side-by-side measurement (``record_id`` None: the untuned
        kernel won), made now or at ``chosen_at``, until a newer record of the workload that
        could contend for ``target`` (any target of its kind: foreign records contend) arrives."""
        upto = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM records WHERE workload_id = ?"
                                 " AND target_distance(target, ?) IS NOT NULL", (workload_id, target)).fetchone()[0]
        self.conn.execute(
            "INSERT OR REPLACE INTO choices (workload_id, target, record_id, upto_record_id, contenders, chosen_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (workload_id, target, record_id, upto, dumps(contenders), chosen_at or now()))

    def choice(self, workload_id: int, target: str) -> dict | None:
        """The standing choice for a workload and target: {"record": the chosen record's row,
        or None for the untuned kernel}; None when there is none or a newer valid record voids it."""
        row = self.conn.execute(
            "SELECT c.record_id FROM choices c WHERE c.workload_id = ? AND c.target = ? AND NOT EXISTS"
            " (SELECT 1 FROM records r WHERE r.workload_id = c.workload_id"
            " AND target_distance(r.target, c.target) IS NOT NULL AND r.id > c.upto_record_id AND r.valid = 1)", (workload_id, target)).fetchone()
        if row is None:
            return None
        record = None if row[0] is None else self.record(row[0])
        return None if row[0] is not None and record is None else {"record": record}

    def coverage_note(self, target: str, same_target_only: bool = False) -> str | None:
        """schedb.tir.target.coverage_note for this database's records."""
        return coverage_note(self.target_counts(), target, same_target_only)

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
        return list(self.db.query(queries.LINEAGE, {"record": record_id}))

    def search_history(self, workload_id: int) -> list[dict]:
        """Every measurement of a workload in the order made, with the best time so far (us)."""
        return list(self.db.query(queries.SEARCH_HISTORY, {"workload": workload_id}))

    def model_id(self, name: str) -> int | None:
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def model_name(self, model_id: int | None) -> str | None:
        row = self.conn.execute("SELECT name FROM models WHERE id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    def model_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM models ORDER BY id")]

    def task_weights(self, model_id: int) -> dict[int, int | None]:
        """{workload id: weight} of a model's tasks (weight: the kernel's occurrences)."""
        return dict(self.conn.execute(
            "SELECT workload_id, weight FROM model_tasks WHERE model_id = ? ORDER BY workload_id", (model_id,)))

    def workload_id(self, signature: str) -> int | None:
        row = self.conn.execute("SELECT id FROM workloads WHERE signature = ?", (signature,)).fetchone()
        return row[0] if row else None

    def workload_models(self, workload_id: int) -> list[str]:
        """The models that have this workload as a task."""
        return [r[0] for r in self.conn.execute(
            "SELECT m.name FROM model_tasks t JOIN models m ON m.id = t.model_id WHERE t.workload_id = ?",
            (workload_id,))]

    def count_records(self, workload_id: int | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM records", []
        if workload_id is not None:
            sql, args = sql + " WHERE workload_id = ?", [workload_id]
        return self.conn.execute(sql, args).fetchone()[0]

    def count_ms_records(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM records WHERE format = 'ms-trace'").fetchone()[0]

    def ms_records(self, valid_only: bool = False, model: str | None = None, target: str | None = None):
        """MetaSchedule records joined with their workload's ``ms_workload``, by workload and
        id (only valid ones, of ``model``'s workloads, of ``target``, as asked): dict rows."""
        where = ["r.format = 'ms-trace'", "w.ms_workload IS NOT NULL", "r.target != ''"]
        args: list = []
        if valid_only:
            where.append("r.valid = 1")
        if model is not None:
            mid = self.model_id(model)
            if mid is None:
                raise SchedbError(f"no model {model!r} in {self.path}")
            where.append("r.workload_id IN (SELECT workload_id FROM model_tasks WHERE model_id = ?)")
            args.append(mid)
        if target is not None:
            where.append("r.target = ?")
            args.append(target)
        return self.db.query("SELECT r.*, w.ms_workload FROM records r JOIN workloads w ON w.id = r.workload_id"
                             f" WHERE {' AND '.join(where)} ORDER BY r.workload_id, r.id", args)

    def tuned_workloads(self, target: str, max_distance: int | None = None):
        """Workloads with valid MetaSchedule records for ``target`` or any target of its kind
        (at most ``max_distance`` away, schedb.tir.target.distance), each with its
        description, the models of those records, the closest of their targets and its
        ``target_distance``: dict rows."""
        usable = ("r.valid = 1 AND r.format = 'ms-trace' AND target_distance(r.target, :t) IS NOT NULL"
                  + ("" if max_distance is None else " AND target_distance(r.target, :t) <= :d"))
        return self.db.query(
            f"""
            SELECT *, target_distance(target, :t) AS target_distance FROM (
            SELECT w.id, w.kind, w.description,
                   (SELECT group_concat(DISTINCT m.name) FROM records r JOIN models m ON m.id = r.model_id
                    WHERE r.workload_id = w.id AND {usable}) AS models,
                   (SELECT r.target FROM records r WHERE r.workload_id = w.id AND {usable}
                    ORDER BY target_distance(r.target, :t) LIMIT 1) AS target
            FROM workloads w
            WHERE w.description IS NOT NULL AND EXISTS (
                SELECT 1 FROM records r WHERE r.workload_id = w.id AND {usable}))
            """,
            {"t": target, "d": max_distance},
        )

    def query(self, sql: str, params=()) -> tuple[list[str], list[tuple]]:
        """Run one statement of the user's: (column names, rows)."""
        # What the user selects need not be UTF-8 (another tool's text, a cast blob): shown
        # with replacement characters. Only here: decoding in Python slows every other read.
        self.conn.text_factory = _lenient_text
        try:
            cur = self.conn.execute(sql, params)
            return [d[0] for d in cur.description or []], cur.fetchall()
        except sqlite3.Error as e:
            # The hint only for what the read-only connection refused: a write, ATTACH (authorizer).
            refused = "readonly" in str(e) or "authoriz" in str(e)
            hint = " (the database is open read-only; --write allows changes)" if self.readonly and refused else ""
            raise SchedbError(f"SQL error: {e}{hint}") from None
        finally:
            self.conn.text_factory = str

    def workload_summary(self, workload_id: int) -> dict:
        """A workload in full for people: description parsed, its models, best record, record count."""
        w = self.workload(workload_id)
        if w is None:
            raise SchedbError(f"no workload {workload_id}")
        w.pop("ms_workload")
        w["description"] = json.loads(w["description"]) if w["description"] else None
        w["models"] = self.workload_models(workload_id)
        best = self.best_record(workload_id)
        w["best"] = best and {k: best[k] for k in ("id", "mean_s", "target", "origin")}
        w["records"] = self.count_records(workload_id)
        return w

    # ------------------------------------------------------------------ files and merges
    def add_file(self, path: str, sha256: str, fmt: str, size: int) -> int | None:
        """The row of an input file; None when this exact content was ingested before."""
        if self.conn.execute("SELECT 1 FROM files WHERE sha256 = ?", (sha256,)).fetchone():
            return None
        return self.conn.execute(
            "INSERT INTO files (path, sha256, format, size, ingested_at) VALUES (?, ?, ?, ?, ?)",
            (path, sha256, fmt, size, now())).lastrowid

    def mark_invalid(self, record_id: int, error: str):
        """A stored record found unusable (its trace does not replay on its own workload):
        never chosen again, with the reason kept for whoever looks."""
        self.conn.execute("UPDATE records SET valid = 0, mean_s = NULL, error = ? WHERE id = ?",
                          (error[:500], record_id))

    def set_file_lines(self, file_id: int, lines: int):
        self.conn.execute("UPDATE files SET lines = ? WHERE id = ?", (lines, file_id))

    def check_snapshot(self) -> list[str]:
        """Begin one read snapshot (a file may be written to meanwhile) and check the file
        whole: ``["ok"]`` or SQLite's problems (a damaged file can still answer queries)."""
        self.conn.execute("BEGIN")
        return [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]

    def merge_from(self, other: "Store", check=None) -> dict:
        """Copy every row of ``other`` in, ids mapped, duplicates (by digest) skipped:
        {new_workloads, new_records, duplicates, invalid, choices, skipped: [(what, why)]}.
        ``check(row)`` validates a record row (and may correct its validity) or raises
        ValueError(why): such a row is skipped, as are its descendants' links to it.
        ``other``'s standing choices come along where they still hold (:meth:`_merge_choices`);
        a malformed one is skipped."""
        out = dict.fromkeys(("new_workloads", "new_records", "duplicates", "invalid", "choices"), 0)
        out["skipped"] = []
        files = {f["id"]: self._merged_file(f) for f in other.db.query("SELECT * FROM files")}
        models = {m["id"]: self.upsert_model(m["name"], m["source"], m["input_shapes"], m["target"],
                                             m["tvm_version"])
                  for m in other.db.query("SELECT * FROM models")}
        workloads = {}
        for w in other.db.query("SELECT * FROM workloads"):
            wid, created = self.upsert_workload(
                w["signature"], w["kind"], json.loads(w["shapes"]), json.loads(w["dtypes"]),
                w["shash"], w["legacy_key"], w["description"], w["ms_workload"], w["tvm_version"])
            workloads[w["id"]] = wid
            out["new_workloads"] += created
        for t in other.db.query("SELECT * FROM model_tasks"):
            self.add_task(models[t["model_id"]], workloads[t["workload_id"]], t["task_name"], t["weight"])
        ids = {}
        old_digests = other.version() < 3  # hex text: as the schema 3 migration converts them
        # Parents before children: ids grow with insertion, and a parent is always older.
        for r in other.db.query("SELECT * FROM records ORDER BY id"):
            old = r.pop("id")
            if check is not None:
                try:
                    check(r)
                except ValueError as e:
                    out["skipped"].append((f"record {old}", str(e)))
                    continue
            if old_digests:
                r["digest"] = schema.digest_from_v2(r["digest"])
            r["workload_id"] = workloads[r["workload_id"]]
            r["source_workload_id"] = workloads.get(r["source_workload_id"])
            r["model_id"] = models.get(r["model_id"])
            r["file_id"] = files.get(r["file_id"])
            r["parent_id"] = ids.get(r["parent_id"])
            new = self.insert_records([r])
            out["new_records"] += new
            out["duplicates"] += 1 - new
            out["invalid"] += new and not r["valid"]
            ids[old] = self.conn.execute("SELECT id FROM records WHERE workload_id = ? AND digest = ?",
                                         (r["workload_id"], r["digest"])).fetchone()[0]
        if "choices" in other.db.table_names():  # schema 6 on
            out["choices"] = self._merge_choices(other, workloads, ids, out["skipped"])
        return out

    def _merge_choices(self, other: "Store", workloads: dict, ids: dict, skipped: list) -> int:
        """Copy ``other``'s standing choices whose contenders are still all there is: a choice
        is kept only where this file has none for the workload and target and every valid
        record it now holds for them is one the choice saw (a record of ``other`` no newer
        than the choice), since a record the measurement never met may be faster. A choice
        that does not parse is added to ``skipped``. -> how many were copied."""
        n = 0
        for c in other.db.query("SELECT * FROM choices"):
            try:
                n += self._merge_choice(other, c, workloads, ids)
            except (ValueError, TypeError, KeyError, AttributeError) as e:  # a damaged or forged row
                skipped.append((f"choice of workload {c['workload_id']}", f"malformed ({type(e).__name__})"))
        return n

    def _merge_choice(self, other: "Store", c: dict, workloads: dict, ids: dict) -> bool:
        if other.choice(c["workload_id"], c["target"]) is None or c["record_id"] not in ids | {None: None}:
            return False
        wid = workloads[c["workload_id"]]
        contends = "workload_id = ? AND target_distance(target, ?) IS NOT NULL"
        seen = {ids[i] for (i,) in other.conn.execute(f"SELECT id FROM records WHERE {contends} AND id <= ?",
                                                      (c["workload_id"], c["target"], c["upto_record_id"]))
                if i in ids}
        held = {i for (i,) in self.conn.execute(f"SELECT id FROM records WHERE {contends} AND valid = 1",
                                                (wid, c["target"]))}
        if self.conn.execute("SELECT 1 FROM choices WHERE workload_id = ? AND target = ?",
                             (wid, c["target"])).fetchone() or not held <= seen:
            return False
        if not isinstance(c["chosen_at"], str):
            raise TypeError("chosen_at is not text")
        contenders = [{**x, "record_id": ids.get(x["record_id"])} for x in json.loads(c["contenders"])]
        self.record_choice(wid, c["target"], ids.get(c["record_id"]), contenders, c["chosen_at"])
        return True

    def _merged_file(self, f: dict) -> int:
        row = self.conn.execute("SELECT id FROM files WHERE sha256 = ?", (f["sha256"],)).fetchone()
        if row:
            return row[0]
        return self.conn.execute(
            "INSERT INTO files (path, sha256, format, size, lines, ingested_at) VALUES (?, ?, ?, ?, ?, ?)",
            (f["path"], f["sha256"], f["format"], f["size"], f["lines"], f["ingested_at"])).lastrowid

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


def _lenient_text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _target_distance(a, b):
    return None if a is None or b is None else target_distance(a, b)


def _json(value):
    return None if value is None else (value if isinstance(value, str) else json.dumps(value))
