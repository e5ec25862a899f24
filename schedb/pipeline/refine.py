"""Refine: droplet search from the best stored records of workloads, improvements committed."""

from __future__ import annotations

import json
from dataclasses import dataclass

from schedb.errors import SchedbError
from schedb.search.droplet import refine_many
from schedb.store.records import commit_trace
from schedb.tir.target import canonical


@dataclass
class Refinement:
    """What ``refine_stored`` did for one workload."""

    workload_id: int
    kind: str
    start_record_id: int
    start_us: float
    best_us: float
    trials: int
    failed: int
    pvalue: float | None
    record_id: int | None  # the committed improvement, if any
    elapsed: float


def refine_stored(store, workload_ids: list[int], target, engine, trials: int = 32, starts: int = 3,
                  pvalue: float = 0.05, seed: int = 0, save_path: bool = False,
                  progress=None, max_distance: int | None = None) -> list[Refinement]:
    """Droplet search from the best stored records of each workload (multi-start from the
    ``starts`` fastest distinct traces). An improvement is committed as a record with
    origin ``droplet`` whose parent is the start record; with ``save_path`` every
    measured point of the search is stored too, so the path is queryable in SQL. Starts may
    be records of other targets (closest first, at most ``max_distance`` away,
    schedb.tir.target.distance): every point is measured here and committed for ``target``."""
    from tvm.s_tir.meta_schedule.database import Workload

    tgt = canonical(target)
    out = []
    for wid in workload_ids:
        w = store.workload(wid)
        top = store.top_records(wid, tgt, starts, max_distance=max_distance)
        if w is None or not w["ms_workload"] or not top:
            continue
        mod = Workload.from_json(json.loads(w["ms_workload"])).mod
        try:
            res = refine_many([json.loads(r["trace"]) for r in top], mod, target, engine, trials=trials,
                              pvalue=pvalue, seed=seed)
        except SchedbError:
            continue
        parent = top[0]
        record_id = None
        with store.transaction():
            if save_path:
                for v in res.visited:
                    if v.mean is not None:
                        commit_trace(store, wid, w["signature"], tgt, v.trace, [v.mean], "droplet",
                                     parent_id=parent["id"])
            if res.pvalue is not None and res.best_mean < res.start_mean:
                record_id = commit_trace(store, wid, w["signature"], tgt, res.best_trace, res.best_samples,
                                         "droplet", parent_id=parent["id"],
                                         search_time_s=round(res.elapsed, 3))
        out.append(Refinement(wid, w["kind"], parent["id"], res.start_mean * 1e6, res.best_mean * 1e6,
                              res.trials, res.failed, res.pvalue, record_id, res.elapsed))
        if progress:
            progress(out[-1])
    return out


def workloads_to_refine(store, model: str | None = None, workload_ids=()) -> list[int]:
    """The ids of ``workload_ids`` and of every task of ``model``."""
    if not model and not workload_ids:
        raise SchedbError("give --model NAME or --workload ID")
    ids = list(workload_ids)
    if model:
        mid = store.model_id(model)
        if mid is None:
            raise SchedbError(f"no model {model!r} in {store.path}")
        ids += store.model_workloads(mid)
    return ids
