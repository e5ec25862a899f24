"""Choose: each task's schedule by measuring its contenders side by side.

A record's time was measured in its own batch, under that moment's load, and MetaSchedule
keeps one sample per candidate: the lowest of a task's many stored means is biased low, and
the untuned kernel is no record at all. After `schedb tune --db` from transferred schedules,
googlenet's pooling and concatenation kernels tuned by MetaSchedule were up to 2.4x slower
than the untuned ones that transfer had kept, yet they were the database's best. So the
schedule a model is built with is decided here: the untuned kernel and the task's best
records (by stored time, and the best of each origin) run in one batch, and the fastest
becomes the task's choice, which ``schedb.Database`` serves first until a newer record of
the task arrives.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from schedb.search.measure import Engine, Measurement
from schedb.store import Store
from schedb.tir.replay import apply_trace
from schedb.tir.signature import signature
from schedb.tir.target import canonical


@dataclass
class Choice:
    task: str
    record_id: int | None  # None: the untuned kernel was fastest
    chosen_us: float | None  # its mean in the batch
    contenders: int  # records measured beside the untuned kernel
    workload_id: int | None = None
    weight: int | None = None
    source: str = "untuned"  # the chosen record's origin, or untuned
    untuned_us: float | None = None  # the untuned kernel in the batch (None: it failed)

    def as_json(self) -> dict:
        return asdict(self)


def choose(store: Store, tasks, target, engine: Engine, top_k: int = 2) -> list[Choice]:
    """Measure, for every task with records and no standing choice, the untuned kernel and
    its contenders (store.records.contenders) in one batch, and record the fastest
    (store.choices.record). Tasks whose choice stands are not measured again."""
    target_key = canonical(target)
    out = []
    for task in tasks:
        wid = store.workloads.id_of(signature(task.func)[0])
        if wid is None or store.choices.get(wid, target_key) is not None:
            continue
        rows, mods = [], []
        for row in store.records.contenders(wid, target_key, top_k):
            r = apply_trace(json.loads(row["trace"]), task.func, target)
            if r.ok:
                rows.append(row)
                mods.append(r.mod)
        if not rows:
            continue
        measured = engine.measure([task.func, *mods])
        best = min(range(len(measured)), key=lambda i: measured[i].mean)
        if not measured[best].ok:
            continue  # nothing ran: no verdict
        chosen = rows[best - 1]["id"] if best else None  # index 0: the untuned kernel
        with store.transaction():
            store.choices.record(wid, target_key, chosen, [contender(row and row["id"], m)
                                                   for row, m in zip([None, *rows], measured)])
        untuned = measured[0].mean * 1e6 if measured[0].ok else None
        out.append(Choice(task.name, chosen, measured[best].mean * 1e6, len(rows), wid, task.weight,
                          rows[best - 1]["origin"] if best else "untuned", untuned))
    return out


def contender(record_id: int | None, m: Measurement) -> dict:
    """One entry of a choice's contenders (None: the untuned kernel)."""
    return {"record_id": record_id, "samples": m.samples, "error": m.error}
