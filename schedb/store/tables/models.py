"""The ``models`` and ``model_tasks`` tables."""

from __future__ import annotations

from schedb.store.tables.base import Table, as_json, now


class Models(Table):
    def upsert(self, name, source=None, input_shapes=None, target=None, tvm_version=None) -> int:
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row:
            # Fill in what an earlier, less informed ingest did not know.
            self.conn.execute(
                "UPDATE models SET source = COALESCE(source, ?), input_shapes = COALESCE(input_shapes, ?),"
                " target = COALESCE(target, ?), tvm_version = COALESCE(tvm_version, ?) WHERE id = ?",
                (source, as_json(input_shapes), target, tvm_version, row[0]),
            )
            return row[0]
        return self.conn.execute(
            "INSERT INTO models (name, source, input_shapes, target, tvm_version, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (name, source, as_json(input_shapes), target, tvm_version, now()),
        ).lastrowid

    def add_task(self, model_id, workload_id, task_name=None, weight=None):
        self.conn.execute(
            "INSERT INTO model_tasks (model_id, workload_id, task_name, weight) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model_id, workload_id) DO UPDATE SET"
            " weight = COALESCE(excluded.weight, model_tasks.weight),"
            " task_name = COALESCE(model_tasks.task_name, excluded.task_name)",
            (model_id, workload_id, task_name, weight),
        )

    def id_of(self, name: str) -> int | None:
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def name_of(self, model_id: int | None) -> str | None:
        row = self.conn.execute("SELECT name FROM models WHERE id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM models ORDER BY id")]

    def task_weights(self, model_id: int) -> dict[int, int | None]:
        """{workload id: weight} of a model's tasks (weight: the kernel's occurrences)."""
        return dict(self.conn.execute(
            "SELECT workload_id, weight FROM model_tasks WHERE model_id = ? ORDER BY workload_id", (model_id,)))

    def rows(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM models"))

    def task_rows(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM model_tasks"))
