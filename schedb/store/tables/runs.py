"""The ``runs`` and ``run_tasks`` tables: every transfer, tune, droplet and fast run, with
what it was asked, what each task ended with and the end-to-end latencies it timed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from schedb.errors import SchedbError
from schedb.store.tables.base import Table, dumps, loads, now

KINDS = ("transfer", "tune", "droplet", "fast")
# A run row's status: written "running" at the start, one of the others at the end. A
# killed process leaves "running" and no finish time.
STATUSES = ("running", "done", "failed")
# The medians kept as columns, for SQL: the untuned model, the model the run built (its
# last TVM variant: refined after droplet, the final build of fast), PyTorch eager.
E2E_COLUMNS = {"untuned_ms": ("untuned",), "tvm_ms": ("final", "refined", "transferred"), "pytorch_ms": ("pytorch",)}


@dataclass
class RunTask:
    """What one task of a run ended with. ``source``: for a transfer exact / neighbor /
    anchor / searched / untuned; for tune and fast the origin of the chosen record (or
    untuned); for droplet ``droplet`` (an accepted refinement) or ``stored`` (its start kept)."""

    task: str
    source: str
    workload_id: int | None = None
    weight: int | None = None
    source_model: str | None = None  # the model whose schedule it came from
    source_record_id: int | None = None  # the record it was transferred or refined from
    record_id: int | None = None  # the record chosen (None: the untuned kernel)
    untuned_us: float | None = None  # the untuned kernel measured beside it
    chosen_us: float | None = None  # the chosen kernel in that measurement

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RunTask":
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass
class Run:
    """One row of ``runs`` (with its tasks when read with ``Runs.get``)."""

    id: int
    kind: str
    model: str | None
    status: str
    target: str | None = None
    runner: str | None = None
    sources: list | None = None  # the models whose schedules it could use (None: every model)
    options: dict = field(default_factory=dict)
    tvm_version: str | None = None
    schedb_version: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    parent_run_id: int | None = None  # the fast run a transfer or tune ran in
    e2e: dict = field(default_factory=dict)  # variant -> {median_ms, p25_ms, p75_ms, samples_ms}
    untuned_ms: float | None = None
    tvm_ms: float | None = None
    pytorch_ms: float | None = None
    n_tasks: int = 0
    records: int = 0  # records the run committed
    tasks: list[RunTask] = field(default_factory=list)

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Run":
        d = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        for name in ("sources", "options", "e2e"):  # stored as JSON text
            if isinstance(d.get(name), str):
                d[name] = loads(d[name])
        d["options"], d["e2e"] = d.get("options") or {}, d.get("e2e") or {}
        d["tasks"] = [t if isinstance(t, RunTask) else RunTask.from_json(t) for t in d.get("tasks") or []]
        return cls(**d)


_SELECT = ("SELECT r.*, (SELECT COUNT(*) FROM run_tasks t WHERE t.run_id = r.id) AS n_tasks,"
           " (SELECT COUNT(*) FROM records x WHERE x.run_id = r.id) AS records FROM runs r")
_TASK_COLUMNS = [f.name for f in fields(RunTask)]


def _schedb_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("schedb")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return None


class Runs(Table):
    def start(self, kind: str, model: str | None, target: str | None, options: dict, runner: str | None = None,
              sources: list | None = None, parent_run_id: int | None = None) -> int:
        """A run row for a run starting now ("running"); -> its id, for ``finish`` or ``fail``."""
        import tvm

        if kind not in KINDS:
            raise SchedbError(f"run kind {kind!r} is not one of {', '.join(KINDS)}")
        with self.store.transaction():
            return self.conn.execute(
                "INSERT INTO runs (kind, model, status, target, runner, sources, options, tvm_version,"
                " schedb_version, started_at, parent_run_id) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, model, target, runner, None if sources is None else dumps(sources), dumps(options),
                 tvm.__version__, _schedb_version(), now(), parent_run_id)).lastrowid

    def finish(self, run_id: int, tasks: list[RunTask], e2e: dict | None = None):
        """A run ended well: its tasks' outcomes, the latencies it timed (variant -> a
        Latency dict), the time."""
        e2e = e2e or {}
        medians = {col: next((e2e[v]["median_ms"] for v in variants if v in e2e), None)
                   for col, variants in E2E_COLUMNS.items()}
        with self.store.transaction():
            self.conn.executemany(
                f"INSERT INTO run_tasks (run_id, {', '.join(_TASK_COLUMNS)})"
                f" VALUES (?, {', '.join('?' * len(_TASK_COLUMNS))})",
                [(run_id, *(getattr(t, c) for c in _TASK_COLUMNS)) for t in tasks])
            self.conn.execute(
                "UPDATE runs SET status = 'done', finished_at = ?, e2e = ?, untuned_ms = ?, tvm_ms = ?,"
                " pytorch_ms = ? WHERE id = ?",
                (now(), dumps(e2e), medians["untuned_ms"], medians["tvm_ms"], medians["pytorch_ms"], run_id))

    def fail(self, run_id: int, error: str):
        """A run that raised: marked failed, with the error's first line."""
        with self.store.transaction():
            self.conn.execute("UPDATE runs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                              (now(), error[:500], run_id))

    def get(self, run_id: int) -> Run | None:
        """A run with its tasks, None if there is none."""
        if not self._exists():
            return None
        row = self.one(f"{_SELECT} WHERE r.id = ?", [run_id])
        if row is None:
            return None
        tasks = self.db.query("SELECT * FROM run_tasks WHERE run_id = ? ORDER BY rowid", [run_id])
        return Run.from_json({**row, "tasks": list(tasks)})

    def list(self, model: str | None = None, kind: str | None = None, parent: int | None = None) -> list[Run]:
        """Every run (of ``model``, of ``kind``, within run ``parent``, as asked), the newest
        first, without their tasks (``n_tasks`` counts them)."""
        if not self._exists():  # a file of schema 6 or earlier, opened read-only
            return []
        where = " AND ".join(f"(:{k} IS NULL OR r.{c} = :{k})"
                             for k, c in (("model", "model"), ("kind", "kind"), ("parent", "parent_run_id")))
        rows = self.db.query(f"{_SELECT} WHERE {where} ORDER BY r.id DESC",
                             {"model": model, "kind": kind, "parent": parent})
        return [Run.from_json(r) for r in rows]

    def _exists(self) -> bool:
        return "runs" in self.db.table_names()
