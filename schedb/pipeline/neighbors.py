"""Neighbours: for every task of a model, the nearest tuned workloads in the database."""

from __future__ import annotations

from dataclasses import dataclass

from schedb.models import Model
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
              same_target_only: bool = False, bind_params: bool = True) -> tuple[str | None, list[TaskNeighbors]]:
    """(a note when the database holds nothing for ``target``, the neighbours of every task)."""
    target_key = canonical(target)
    index = Index(exclude=exclude).fit(store.workloads.tuned(target_key, max_distance(same_target_only)))
    out = []
    for task in extract_tasks(lower(model, target, bind_params), target):
        sig, kind, desc = signature(task.func)
        found = index.neighbors(desc, kind, k)
        own = store.workloads.id_of(sig)
        out.append(TaskNeighbors(task.name, kind, found, [nb.workload_id == own for nb in found]))
    return store.records.coverage_note(target_key, same_target_only), out
