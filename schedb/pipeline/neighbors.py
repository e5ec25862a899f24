"""Neighbours: for every task of a model, the nearest tuned workloads in the database."""

from __future__ import annotations

from dataclasses import dataclass

from schedb.models import Model
from schedb.pipeline.phases import PhaseCallback, phase
from schedb.search.index import Index, Neighbor
from schedb.store import Store
from schedb.tir.signature import signature
from schedb.tir.target import canonical, max_distance
from schedb.tir.tasks import extract_tasks, lower


@dataclass
class TaskNeighbors:
    task: str
    kind: str
    neighbors: list[Neighbor]
    exact: list[bool]  # per neighbour: the very workload of the task


def neighbors(store: Store, model: Model, target, k: int = 5, exclude: list[str] | None = None,
              same_target_only: bool = False, bind_params: bool = True,
              on_phase: PhaseCallback | None = None) -> tuple[str | None, list[TaskNeighbors]]:
    """(a note when the database holds nothing for ``target``, the neighbours of every task).
    ``on_phase``: schedb.pipeline.phases, for indexing, lowering and the search."""
    target_key = canonical(target)
    with phase(on_phase, "indexing the tuned workloads"):
        index = Index(exclude=exclude).fit(store.workloads.tuned(target_key, max_distance(same_target_only)))
    with phase(on_phase, "lowering the model and extracting its tasks"):
        tasks = extract_tasks(lower(model, target, bind_params), target)
    out = []
    with phase(on_phase, f"finding the neighbours of {len(tasks)} tasks"):
        for task in tasks:
            sig, kind, desc = signature(task.func)
            found = index.neighbors(desc, kind, k)
            own = store.workloads.id_of(sig)
            out.append(TaskNeighbors(task.name, kind, found, [nb.workload_id == own for nb in found]))
    return store.records.coverage_note(target_key, same_target_only), out
