"""The ``choices`` table: a task's schedule decided by one side-by-side measurement."""

from __future__ import annotations

from schedb.store.tables.base import Table, dumps, loads, now

# A record contends for a target when its own target is of the same kind (foreign CPUs too).
CONTENDS = "workload_id = ? AND target_distance(target, ?) IS NOT NULL"


class Choices(Table):
    def record(self, workload_id: int, target: str, record_id: int | None, contenders: list[dict],
               chosen_at: str | None = None):
        """Keep the outcome of one side-by-side measurement (``record_id`` None: the untuned
        kernel won), made now or at ``chosen_at``, until a newer record of the workload that
        could contend for ``target`` (any target of its kind: foreign records contend) arrives."""
        upto = self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM records WHERE {CONTENDS}",
                                 (workload_id, target)).fetchone()[0]
        self.conn.execute(
            "INSERT OR REPLACE INTO choices (workload_id, target, record_id, upto_record_id, contenders, chosen_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (workload_id, target, record_id, upto, dumps(contenders), chosen_at or now()))

    def get(self, workload_id: int, target: str) -> dict | None:
        """The standing choice for a workload and target: {"record": the chosen record's row,
        or None for the untuned kernel}; None when there is none or a newer valid record voids it."""
        row = self.conn.execute(
            "SELECT c.record_id FROM choices c WHERE c.workload_id = ? AND c.target = ? AND NOT EXISTS"
            " (SELECT 1 FROM records r WHERE r.workload_id = c.workload_id"
            " AND target_distance(r.target, c.target) IS NOT NULL AND r.id > c.upto_record_id AND r.valid = 1)",
            (workload_id, target)).fetchone()
        if row is None:
            return None
        record = None if row[0] is None else self.store.records.get(row[0])
        return None if row[0] is not None and record is None else {"record": record}

    def measured(self, workload_id: int, target: str) -> dict:
        """The batch behind the kept choice (standing or voided): {record_id or None (untuned):
        mean seconds} of the contenders that ran ({} without a choice)."""
        row = self.conn.execute("SELECT contenders FROM choices WHERE workload_id = ? AND target = ?",
                                (workload_id, target)).fetchone()
        return {} if row is None else {c["record_id"]: sum(c["samples"]) / len(c["samples"])
                                       for c in loads(row[0]) if c.get("samples")}

    def exists(self, workload_id: int, target: str) -> bool:
        """Whether any choice, standing or voided, is kept for the workload and target."""
        return self.conn.execute("SELECT 1 FROM choices WHERE workload_id = ? AND target = ?",
                                 (workload_id, target)).fetchone() is not None

    def contender_ids(self, workload_id: int, target: str, upto: int | None = None) -> set[int]:
        """Ids of the records that contend for ``target`` (valid ones; with ``upto``, every one
        no newer than that id, as a choice made then saw them)."""
        if upto is None:
            sql, args = f"SELECT id FROM records WHERE {CONTENDS} AND valid = 1", (workload_id, target)
        else:
            sql, args = f"SELECT id FROM records WHERE {CONTENDS} AND id <= ?", (workload_id, target, upto)
        return {i for (i,) in self.conn.execute(sql, args)}

    def rows(self) -> list[dict]:
        if "choices" not in self.db.table_names():  # schema 6 on
            return []
        return list(self.db.query("SELECT * FROM choices"))
