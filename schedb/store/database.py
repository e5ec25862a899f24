"""``schedb.Database``: the store as a MetaSchedule ``Database``.

TVM's own tuning (``tune_relax(..., database=schedb.Database(path))``) writes into it
and ``MetaScheduleApplyDatabase`` reads the best schedules from it. Workloads are
matched by schedb's signature, so a schedule found for one TVM version's IR of an
operator is found again for another's.
"""

from __future__ import annotations

import json

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.database import PyDatabase, TuningRecord, Workload

from schedb.store.records import commit_mod, commit_trace
from schedb.store.store import Store, dumps
from schedb.tir.replay import as_json
from schedb.tir.signature import signature
from schedb.tir.target import canonical


@derived_object
class Database(PyDatabase):
    """A MetaSchedule database backed by a schedb SQLite file.

    ``target``: its records come first, then those of the closest targets of its kind
    (schedb.tir.target.distance: MetaSchedule's own lookup ignores the target); default: the
    fastest records of any target. A task's standing choice for ``target``
    (schedb.pipeline.choose) comes before all: its record, or none when the untuned kernel won.
    ``model``: records committed through this object are attributed to this model, and
    ``run_id`` names the run that made them (store.runs).

    As TVM's own databases: ``get_top_k`` returns every valid record by mean run time, and a
    record is valid when one of its run times is (TuningRecord::IsValid). ``distinct_traces``:
    one record per distinct trace instead, the fastest (a search seeded from the database
    then starts from k different schedules; ``tune --db`` asks for it)."""

    def __init__(self, path=None, target=None, model: str | None = None, origin: str = "tuned",
                 distinct_traces: bool = False, run_id: int | None = None):
        super().__init__()
        self.distinct_traces = distinct_traces
        self.store = Store(path)
        self.target = canonical(target) if target is not None else None
        self.model_id = self.store.models.upsert(model) if model else None
        self.origin, self.run_id = origin, run_id
        self._sigs: dict = {}  # structural hash -> (workload id, signature)

    def _lookup(self, mod, create: bool):
        import tvm_ffi

        key = tvm_ffi.structural_hash(mod)
        if key not in self._sigs:
            if not create:
                sig = signature(mod)[0]
                wid = self.store.workloads.id_of(sig)
                if wid is None:
                    return None, sig
                self._sigs[key] = (wid, sig)
            else:
                with self.store.transaction():
                    wid, sig, _, _ = commit_mod(self.store, mod)
                self._sigs[key] = (wid, sig)
        return self._sigs[key]

    # ------------------------------------------------------------------ PyDatabase
    def has_workload(self, mod) -> bool:
        wid, _ = self._lookup(mod, create=False)
        return wid is not None

    def commit_workload(self, mod) -> Workload:
        self._lookup(mod, create=True)
        return Workload(mod)

    def commit_tuning_record(self, record: TuningRecord) -> None:
        wid, sig = self._lookup(record.workload.mod, create=True)
        trace, run_secs, _, args_info = record.as_json()
        target = canonical(record.target) if record.target is not None else self.target or ""
        samples = [float(s) for s in run_secs] if run_secs else None
        with self.store.transaction():
            commit_trace(self.store, wid, sig, target, trace, samples, self.origin, partial=True,
                         args_info=dumps(as_json(args_info)), model_id=self.model_id, run_id=self.run_id)

    def get_top_k(self, workload: Workload, top_k: int) -> list[TuningRecord]:
        wid, _ = self._lookup(workload.mod, create=False)
        if wid is None or top_k <= 0:
            return []
        out = []
        for row in self._ranked(wid, top_k):
            try:
                out.append(self._to_record(row, workload))
            except Exception:  # a stored trace this TVM cannot read: never let it break a build
                continue
        return out

    def _ranked(self, wid: int, top_k: int) -> list[dict]:
        """top_records, after the task's standing choice (schedb.pipeline.choose) if there is
        one for this target: its record first, or nothing when the untuned kernel won."""
        choice = self.store.choices.get(wid, self.target) if self.target is not None else None
        top = self.store.records.top(wid, self.target, top_k, distinct=self.distinct_traces)
        if choice is None:
            return top
        chosen = choice["record"]
        if chosen is None or not chosen["valid"]:
            return []
        key = "trace" if self.distinct_traces else "id"
        return [chosen, *[r for r in top if r[key] != chosen[key]]][:top_k]

    def get_all_tuning_records(self) -> list[TuningRecord]:
        out = []
        workloads: dict = {}
        for r in self.store.records.ms(valid_only=True):
            if r["workload_id"] not in workloads:
                workloads[r["workload_id"]] = Workload.from_json(json.loads(r["ms_workload"]))
            out.append(self._to_record(r, workloads[r["workload_id"]]))
        return out

    def __len__(self) -> int:
        return self.store.records.count_ms()

    @staticmethod
    def _to_record(row: dict, workload: Workload) -> TuningRecord:
        obj = [json.loads(row["trace"]), json.loads(row["run_secs"]), json.loads(row["target"]),
               json.loads(row["args_info"]) if row["args_info"] else None]
        return TuningRecord.from_json(obj, workload)
