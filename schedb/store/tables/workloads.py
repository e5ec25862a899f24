"""The ``workloads`` table: one row per distinct computation."""

from __future__ import annotations

import json

from schedb.errors import SchedbError
from schedb.store import queries
from schedb.store.tables.base import Table, as_json, now
from schedb.tir.target import distance as target_distance

# Each workload's targets with valid MetaSchedule records, and the models of those records.
_TUNED_BY_TARGET = """
    SELECT r.workload_id, r.target, group_concat(DISTINCT m.name)
    FROM records r LEFT JOIN models m ON m.id = r.model_id
    WHERE r.valid = 1 AND r.format = 'ms-trace'
    GROUP BY r.workload_id, r.target"""


class Workloads(Table):
    def upsert(self, signature, kind, shapes, dtypes, shash=None, legacy_key=None,
               description=None, ms_workload=None, tvm_version=None) -> tuple[int, bool]:
        """-> (id, created)."""
        row = self.conn.execute("SELECT id FROM workloads WHERE signature = ?", (signature,)).fetchone()
        if row:
            return row[0], False
        cur = self.conn.execute(
            "INSERT INTO workloads (signature, kind, shash, legacy_key, shapes, dtypes, description,"
            " ms_workload, tvm_version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (signature, kind, shash, legacy_key, json.dumps(shapes), json.dumps(dtypes),
             as_json(description), ms_workload, tvm_version, now()),
        )
        return cur.lastrowid, True

    def get(self, workload_id: int) -> dict | None:
        return self.one("SELECT * FROM workloads WHERE id = ?", [workload_id])

    def id_of(self, signature: str) -> int | None:
        row = self.conn.execute("SELECT id FROM workloads WHERE signature = ?", (signature,)).fetchone()
        return row[0] if row else None

    def models_of(self, workload_id: int) -> list[str]:
        """The models that have this workload as a task."""
        return [r[0] for r in self.conn.execute(
            "SELECT m.name FROM model_tasks t JOIN models m ON m.id = t.model_id WHERE t.workload_id = ?",
            (workload_id,))]

    def summary(self, workload_id: int) -> dict:
        """A workload in full for people: description parsed, its models, best record, record count."""
        w = self.get(workload_id)
        if w is None:
            raise SchedbError(f"no workload {workload_id}")
        w.pop("ms_workload")
        w["description"] = json.loads(w["description"]) if w["description"] else None
        w["models"] = self.models_of(workload_id)
        best = self.store.records.best(workload_id)
        w["best"] = best and {k: best[k] for k in ("id", "mean_s", "target", "origin")}
        w["records"] = self.store.records.count(workload_id)
        return w

    def search_history(self, workload_id: int) -> list[dict]:
        """Every measurement of a workload in the order made, with the best time so far (us)."""
        return list(self.db.query(queries.SEARCH_HISTORY, {"workload": workload_id}))

    def tuned(self, target: str, max_distance: int | None = None) -> list[dict]:
        """Workloads with valid MetaSchedule records for ``target`` or any target of its kind
        (at most ``max_distance`` away, schedb.tir.target.distance), each with its
        description, the models of those records, the closest of their targets and its
        ``target_distance``: dict rows, by workload id.

        One pass over the records in index order, grouped by workload and target, with the
        distance worked out once per distinct target: per-record distance calls in SQL took
        137 s at 10^7 records."""
        found: dict[int, list] = {}  # workload id -> [closest target, its distance, models]
        distances: dict[str, int | None] = {}
        for wid, t, models in self.conn.execute(_TUNED_BY_TARGET):
            if t not in distances:
                distances[t] = target_distance(t, target)
            d = distances[t]
            if d is None or (max_distance is not None and d > max_distance):
                continue
            entry = found.setdefault(wid, [t, d, set()])
            if d < entry[1]:  # (targets come in order: the first of equally close ones is kept)
                entry[:2] = t, d
            entry[2].update(models.split(",") if models else ())
        return [{"id": wid, "kind": kind, "description": desc, "models": ",".join(sorted(found[wid][2])) or None,
                 "target": found[wid][0], "target_distance": found[wid][1]}
                for wid, kind, desc in self.conn.execute(
                    "SELECT id, kind, description FROM workloads WHERE description IS NOT NULL ORDER BY id")
                if wid in found]

    def rows(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM workloads"))
