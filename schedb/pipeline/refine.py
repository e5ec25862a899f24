"""Refine: droplet search from the best stored records of workloads, improvements committed."""

from __future__ import annotations

import json
from dataclasses import dataclass

from schedb.errors import SchedbError
from schedb.pipeline.runs import failing
from schedb.search.allocate import Allocator
from schedb.search.droplet import Droplet, DropletParams, spend
from schedb.store.records import commit_trace
from schedb.store.tables import RunTask
from schedb.tir.target import canonical


@dataclass
class Refinement:
    """What ``refine_stored`` did for one workload."""

    workload_id: int
    kind: str
    weight: int
    start_record_id: int
    start_us: float | None  # the start measured beside the best end point (when there was one); None: not searched
    best_us: float | None  # = start_us unless accepted
    trials: int  # 0: the shared budget was spent on heavier tasks
    failed: int
    pvalue: float | None  # of the final head-to-head; None: the search never moved
    accepted: bool
    record_id: int | None  # the committed improvement: set exactly when accepted
    elapsed: float

    @property
    def speedup(self) -> float | None:
        return None if self.best_us is None else self.start_us / self.best_us


def refine_stored(store, workloads: dict[int, int | None], target, engine, trials: int = 32, starts: int = 3,
                  pvalue: float = 0.05, seed: int = 0, save_path: bool = False, budget_s: float | None = None,
                  max_distance: int | None = None, model: str | None = None) -> list[Refinement]:
    """Droplet search from the best stored records of each workload (``{id: weight}``,
    weight the kernel's occurrences in the model, None: 1), multi-start from the ``starts``
    fastest distinct traces, within one budget of ``trials`` per workload on average (and
    ``budget_s`` seconds in all) spent where weight x kernel time is largest
    (schedb.search.allocate). An accepted improvement (schedb.search.droplet: significantly
    faster than its start measured beside it) is committed as a record with origin
    ``droplet`` whose parent is the start record; with ``save_path`` every measured point of
    the search is stored too, so the path is queryable in SQL. Starts may be records of other
    targets (closest first, at most ``max_distance`` away, schedb.tir.target.distance): every
    point is measured here and committed for ``target``.

    The run is kept in ``store.runs`` (``model``: the model the workloads are of, for its row)."""
    options = {"workloads": sorted(workloads), "trials": trials, "starts": starts, "pvalue": pvalue, "seed": seed,
               "save_path": save_path, "budget_s": budget_s, "max_distance": max_distance}
    runner = getattr(engine, "runner_spec", None)  # (a caller's own engine need not say)
    run_id = store.runs.start("droplet", model, canonical(target), options, runner)
    with failing(store, run_id):
        out = _refine(store, workloads, target, engine, trials, starts, pvalue, seed, save_path, budget_s,
                      max_distance, run_id)
        store.runs.finish(run_id, [RunTask(r.kind, "droplet" if r.accepted else "stored", r.workload_id, r.weight,
                                           None, r.start_record_id, r.record_id or r.start_record_id, None,
                                           r.best_us) for r in out])
    return out


def _refine(store, workloads, target, engine, trials, starts, pvalue, seed, save_path, budget_s, max_distance,
            run_id) -> list[Refinement]:
    from tvm.s_tir.meta_schedule.database import Workload

    target_key = canonical(target)
    tasks, searches = {}, {}
    alloc = Allocator(trials=trials * len(workloads), seconds=budget_s)
    params = DropletParams(pvalue=pvalue, seed=seed)
    for wid, weight in workloads.items():
        w = store.workloads.get(wid)
        top = store.records.top(wid, target_key, starts, max_distance=max_distance)
        if w is None or not w["ms_workload"] or not top:
            continue
        mod = Workload.from_json(json.loads(w["ms_workload"])).mod
        tasks[wid] = (w, top, weight)
        searches[wid] = Droplet([json.loads(r["trace"]) for r in top], mod, target, engine, params)
        alloc.add(wid, weight, top[0]["mean_s"])  # a prior: the stored time, replaced once measured here
    results = spend(searches, alloc)
    out = []
    for wid, (w, top, weight) in tasks.items():
        res = results.get(wid)
        if res is None:  # never given a batch
            out.append(Refinement(wid, w["kind"], weight or 1, top[0]["id"], None, None, 0, 0, None, False, None, 0.0))
        else:
            out.append(_commit(store, wid, w, target_key, top[res.start], weight or 1, res, save_path, run_id))
    return out


def _commit(store, wid, w, target_key, parent, weight, res, save_path, run_id) -> Refinement:
    """Store the accepted improvement (and with ``save_path`` the path) of one workload."""
    record_id = None
    with store.transaction():
        if save_path:
            for v in res.visited:
                if v.mean is not None:
                    commit_trace(store, wid, w["signature"], target_key, v.trace, [v.mean], "droplet",
                                 parent_id=parent["id"], run_id=run_id)
        if res.accepted:
            record_id = commit_trace(store, wid, w["signature"], target_key, res.best_trace, res.best_samples,
                                     "droplet", parent_id=parent["id"], search_time_s=round(res.elapsed, 3),
                                     run_id=run_id)
    return Refinement(wid, w["kind"], weight, parent["id"], res.start_mean * 1e6, res.best_mean * 1e6,
                      res.trials, res.failed, res.pvalue, res.accepted, record_id, res.elapsed)


def workloads_to_refine(store, model: str | None = None, workload_ids=()) -> dict[int, int | None]:
    """{workload id: weight} of ``workload_ids`` (weight unknown: None) and of every task of
    ``model`` (its occurrences in the model)."""
    if not model and not workload_ids:
        raise SchedbError("give a `model` or `workload_ids`")
    ids: dict[int, int | None] = dict.fromkeys(workload_ids)
    if model:
        mid = store.models.id_of(model)
        if mid is None:
            raise SchedbError(f"no model {model!r} in {store.path}")
        ids.update(store.models.task_weights(mid))
    return ids
