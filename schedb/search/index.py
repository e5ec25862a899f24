"""Index: nearest tuned workloads for a new one (scikit-learn), per computation kind.

A workload's features come from its TIR description (schedb.tir.signature.describe):
the computation kind is a hard partition (a conv2d never borrows from a pool), and
within a kind the distance is Euclidean over log2 features, so a distance of 1
means "one dimension twice as large" and sizes of very different scale compare sanely.
The partition is a function of the description: ``kind_of`` by default,
``schedb.tir.anchor.anchor_of`` (the main reduction block) for the anchor fallback.
"""

from __future__ import annotations

import json
import math
import dataclasses
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from schedb.tir.anchor import anchor_block
from schedb.tir.signature import kind_of

# Per block: up to this many spatial and reduction extents (largest first).
N_SPATIAL, N_REDUCE = 6, 4
FEATURES = (
    [f"spatial{i}" for i in range(N_SPATIAL)] + [f"reduce{i}" for i in range(N_REDUCE)]
    + ["spatial_total", "reduce_total", "flops", "bytes", "intensity", "stride", "padded", "blocks"]
)


def _log2(x: float) -> float:
    return math.log2(max(float(x), 1.0))


def _strides(expr, out: list):
    # Index expressions like v2 * 2 + v5: the constant multiplying an iterator is a stride.
    if isinstance(expr, list):
        if expr and expr[0] == "Mul" and len(expr) == 3:
            for side in expr[1:]:
                if isinstance(side, list) and side and side[0] == "IntImm":
                    out.append(side[2])
        for e in expr:
            _strides(e, out)


def features(desc: dict) -> np.ndarray:
    """The feature vector of a workload description (see FEATURES)."""
    block = anchor_block(desc)
    vec = np.zeros(len(FEATURES))
    if block is None:
        return vec
    spatial = sorted((e for k, e in block["iters"] if k == "S" and isinstance(e, int)), reverse=True)
    reduce = sorted((e for k, e in block["iters"] if k == "R" and isinstance(e, int)), reverse=True)
    vec[:N_SPATIAL] = [_log2(e) for e in (spatial + [1] * N_SPATIAL)[:N_SPATIAL]]
    vec[N_SPATIAL:N_SPATIAL + N_REDUCE] = [_log2(e) for e in (reduce + [1] * N_REDUCE)[:N_REDUCE]]
    s_total, r_total = math.prod(spatial or [1]), math.prod(reduce or [1])
    flops = 2 * s_total * r_total if reduce else s_total
    nbytes = sum(math.prod(p["shape"]) * 4 for p in desc["params"] if "shape" in p) or 1
    strides: list = []
    _strides(block["reads"], strides)
    base = N_SPATIAL + N_REDUCE
    vec[base:] = [
        _log2(s_total), _log2(r_total), _log2(flops), _log2(nbytes), math.log2(flops / nbytes),
        _log2(max(strides, default=1)), float(any(b["name"].startswith("pad") for b in desc["blocks"])),
        float(len(desc["blocks"])),
    ]
    return vec


@dataclass
class Neighbor:
    workload_id: int
    distance: float
    kind: str  # the neighbour's own kind
    models: list[str]
    target: str = ""  # the closest target its records were tuned for
    target_distance: int = 0  # schedb.tir.target.distance from the index's target


_THREADS = None


def _one_thread():
    """A one-thread limit for a k-NN query: scikit-learn answers even a one-row query on
    OpenMP threads, and on a busy machine a thread waiting for a core stalls the call by
    tens of ms (benchmarks/results/store.md). The controller is made once: threadpool_limits()
    scans the loaded libraries on every call (~1.6 ms, more than the query)."""
    global _THREADS
    if _THREADS is None:
        from threadpoolctl import ThreadpoolController  # (scikit-learn's own dependency)

        _THREADS = ThreadpoolController()
    return _THREADS.limit(limits=1)


class Index:
    """Nearest neighbours over tuned workloads, within the groups ``partition(description)``
    makes (None: in no group), optionally only workloads of ``sources`` models and never
    those only ``exclude`` models tuned. ``fit`` takes the rows of
    ``store.workloads.tuned``: which target a neighbour's records came from does not change
    its distance; a record is ranked by target when it is taken (store.records.top)."""

    def __init__(self, partition=kind_of, sources: list[str] | None = None, exclude: list[str] | None = None):
        self.partition = partition
        self.sources = sources
        self.exclude = exclude

    def fit(self, rows) -> "Index":
        groups: dict[str, tuple[list, list]] = {}
        sources, exclude = set(self.sources or ()), set(self.exclude or ())
        for r in rows:
            models = (r["models"] or "").split(",")
            if sources and not set(models) & sources or exclude and set(models) <= exclude:
                continue
            desc = json.loads(r["description"])
            group = self.partition(desc)
            if group is None:
                continue
            ids, feats = groups.setdefault(group, ([], []))
            ids.append(Neighbor(r["id"], 0.0, r["kind"], [m for m in models if m not in exclude], r["target"],
                                r["target_distance"]))
            feats.append(features(desc))
        self.groups_ = {g: (ids, NearestNeighbors().fit(np.array(feats))) for g, (ids, feats) in groups.items()}
        return self

    def __len__(self) -> int:
        return sum(len(ids) for ids, _ in self.groups_.values())

    def neighbors(self, desc: dict, group: str, k: int = 3) -> list[Neighbor]:
        """The ``k`` nearest workloads in ``group`` (a kind, or what ``partition`` gives)."""
        if group not in self.groups_:
            return []
        ids, nn = self.groups_[group]
        with _one_thread():
            dist, idx = nn.kneighbors(features(desc).reshape(1, -1), n_neighbors=min(k, len(ids)))
        return [dataclasses.replace(ids[i], distance=float(d)) for d, i in zip(dist[0], idx[0])]
