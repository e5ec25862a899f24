"""The ``records`` table: every measured schedule."""

from __future__ import annotations

from schedb.errors import SchedbError
from schedb.store import queries
from schedb.store.tables.base import Table, now
from schedb.tir.target import coverage_note

COLUMNS = (
    "workload_id", "target", "format", "trace", "run_secs", "mean_s", "valid", "error",
    "args_info", "origin", "parent_id", "source_workload_id", "distance", "search_time_s",
    "model_id", "file_id", "line", "measured_at", "tvm_version", "created_at", "digest",
)
_INSERT = f"INSERT OR IGNORE INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
# Candidates for a target: records of every target of its kind, the closest first.
_RANKED = ("SELECT *, target_distance(target, ?) AS target_distance FROM records"
           " WHERE workload_id = ? AND valid = 1 AND format = 'ms-trace'")


def distinct_traces(rows, n: int | None = None) -> list[dict]:
    """The first row of each distinct trace, at most ``n``."""
    out, seen = [], set()
    for r in rows:
        if r["trace"] not in seen:
            seen.add(r["trace"])
            out.append(r)
        if len(out) == n:
            break
    return out


class Records(Table):
    COLUMNS = COLUMNS

    def insert(self, rows: list) -> int:
        """Insert records: dicts keyed by COLUMNS (missing keys are NULL), or tuples with
        every column in COLUMNS order (ingest's bulk path: no per-row dict work).
        Duplicates by (workload, digest) are skipped. Returns how many were new."""
        if not rows:
            return 0
        rows = [r if type(r) is tuple else tuple(r.get(c) for c in COLUMNS) for r in rows]
        return self.conn.executemany(_INSERT, rows).rowcount  # ignored duplicates count 0

    def add(self, run_id: int | None = None, **row) -> int | None:
        """Insert one record, made by run ``run_id`` (store.runs) if given; returns its id (the
        existing one for a duplicate, which keeps the run that first made it)."""
        row.setdefault("created_at", now())
        new = self.insert([row])
        record_id = self.id_of(row["workload_id"], row["digest"])
        if new and run_id is not None:  # not in COLUMNS: ingest's tuples and merges carry no run
            self.conn.execute("UPDATE records SET run_id = ? WHERE id = ?", (run_id, record_id))
        return record_id

    def id_of(self, workload_id: int, digest) -> int | None:
        found = self.conn.execute("SELECT id FROM records WHERE workload_id = ? AND digest = ?",
                                  (workload_id, digest)).fetchone()
        return found[0] if found else None

    def get(self, record_id: int) -> dict | None:
        return self.one("SELECT * FROM records WHERE id = ?", [record_id])

    def best(self, workload_id: int, target: str | None = None) -> dict | None:
        """The fastest valid record of a workload (for ``target``, if given)."""
        sql = "SELECT * FROM records WHERE workload_id = ? AND valid = 1"
        args: list = [workload_id]
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        return self.one(sql + " ORDER BY mean_s, id LIMIT 1", args)

    def top(self, workload_id: int, target: str | None, n: int,
            model_ids: list[int] | None = None, max_distance: int | None = None,
            distinct: bool = True) -> list[dict]:
        """The ``n`` best valid MetaSchedule records, one per distinct trace unless not
        ``distinct`` (only records of ``model_ids``, if given). With a ``target``: records of every target of its kind,
        the closest target first (schedb.tir.target.distance; at most ``max_distance`` away),
        the fastest first within a target, since times of different CPUs do not compare.
        Each row carries its ``target_distance``."""
        sql, args, order = _RANKED, [target, workload_id], "mean_s, id"
        if target is not None:
            sql += " AND target_distance IS NOT NULL"
            if max_distance is not None:
                sql += " AND target_distance <= ?"
                args.append(max_distance)
            order = "target_distance, target, mean_s, id"
        if model_ids is not None:
            sql += f" AND model_id IN ({', '.join('?' * len(model_ids))})"
            args += list(model_ids)
        if not distinct:
            return list(self.db.query(f"{sql} ORDER BY {order} LIMIT ?", args + [n]))
        return distinct_traces(self.db.query(f"{sql} ORDER BY {order} LIMIT ?", args + [n * 4]), n)

    def contenders(self, workload_id: int, target: str, n: int) -> list[dict]:
        """The records to measure side by side for a choice: the ``n`` best by stored time
        (top's order) and the best of each origin, one per distinct trace."""
        sql = ("SELECT * FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY target_distance, target, mean_s, id) AS rank,"
               " ROW_NUMBER() OVER (PARTITION BY origin ORDER BY target_distance, target, mean_s, id) AS origin_rank"
               f" FROM ({_RANKED}) WHERE target_distance IS NOT NULL)"
               " WHERE rank <= ? OR origin_rank = 1 ORDER BY rank")
        return distinct_traces(self.db.query(sql, [target, workload_id, n]))

    def lineage(self, record_id: int) -> list[dict]:
        """The chain from a record back through its parents to the original log line; it
        stops at a parent already in the chain (then the last row's ``parent_id`` is set)."""
        return list(self.db.query(queries.LINEAGE, {"record": record_id}))

    def count(self, workload_id: int | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM records", []
        if workload_id is not None:
            sql, args = sql + " WHERE workload_id = ?", [workload_id]
        return self.conn.execute(sql, args).fetchone()[0]

    def count_legacy(self, model: str | None = None, target: str | None = None) -> int:
        """Legacy (Ansor) records, which no MetaSchedule work dir can hold: of ``model``'s
        workloads and for ``target``, as asked."""
        sql, args = "SELECT COUNT(*) FROM records WHERE format != 'ms-trace'", []
        if model is not None:
            sql += (" AND workload_id IN (SELECT t.workload_id FROM model_tasks t JOIN models m"
                    " ON m.id = t.model_id WHERE m.name = ?)")
            args.append(model)
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        return self.conn.execute(sql, args).fetchone()[0]

    def count_ms(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM records WHERE format = 'ms-trace'").fetchone()[0]

    def ms(self, valid_only: bool = False, model: str | None = None, target: str | None = None):
        """MetaSchedule records joined with their workload's ``ms_workload``, by workload and
        id (only valid ones, of ``model``'s workloads, of ``target``, as asked): dict rows."""
        where = ["r.format = 'ms-trace'", "w.ms_workload IS NOT NULL", "r.target != ''"]
        args: list = []
        if valid_only:
            where.append("r.valid = 1")
        if model is not None:
            mid = self.store.models.id_of(model)
            if mid is None:
                raise SchedbError(f"no model {model!r} in {self.store.path}")
            where.append("r.workload_id IN (SELECT workload_id FROM model_tasks WHERE model_id = ?)")
            args.append(mid)
        if target is not None:
            where.append("r.target = ?")
            args.append(target)
        return self.db.query("SELECT r.*, w.ms_workload FROM records r JOIN workloads w ON w.id = r.workload_id"
                             f" WHERE {' AND '.join(where)} ORDER BY r.workload_id, r.id", args)

    def all(self):
        """Every record, oldest first (parents before children: ids grow with insertion)."""
        return self.db.query("SELECT * FROM records ORDER BY id")

    def mark_invalid(self, ids: list[int], error: str) -> int:
        """Stored records found unusable (a trace that does not replay on its own workload):
        never chosen again, with the reason kept for whoever looks. -> how many were valid."""
        return self.conn.executemany("UPDATE records SET valid = 0, mean_s = NULL, error = ? WHERE id = ? AND valid = 1",
                                     [(error[:500], i) for i in ids]).rowcount

    def mark_file_invalid(self, file_id: int, workload_id: int, error: str) -> int:
        """Every valid record of one file for one workload stored invalid with ``error``
        (its traces were tuned for another workload): -> how many."""
        return self.conn.execute("UPDATE records SET valid = 0, mean_s = NULL, error = ? WHERE workload_id = ?"
                                 " AND file_id = ? AND valid = 1", (error[:500], workload_id, file_id)).rowcount

    def target_counts(self, kind: str | None = None) -> dict[str, int]:
        """Valid MetaSchedule records per target (of workloads of ``kind``, if given)."""
        sql = "SELECT r.target, COUNT(*) FROM records r"
        args: list = []
        if kind is not None:
            sql += " JOIN workloads w ON w.id = r.workload_id AND w.kind = ?"
            args.append(kind)
        sql += " WHERE r.valid = 1 AND r.format = 'ms-trace' GROUP BY r.target"
        return dict(self.conn.execute(sql, args).fetchall())

    def coverage_note(self, target: str, same_target_only: bool = False) -> str | None:
        """schedb.tir.target.coverage_note for this database's records."""
        return coverage_note(self.target_counts(), target, same_target_only)
