"""Index: nearest tuned workloads for a new one (scikit-learn), per computation kind.

A workload's features come from its TIR description (schedb.signature.describe):
the computation kind is a hard partition (a conv2d never borrows from a pool), and
within a kind the distance is Euclidean over log2 features, so a distance of 1
means "one dimension twice as large" and sizes of very different scale compare sanely.
The partition is a function of the description: ``kind_of`` by default,
``schedb.anchor.anchor_of`` (the main reduction block) for the anchor fallback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from schedb.signature import kind_of
from schedb.target import SAME_KIND, distance as target_distance

# Per block: up to this many spatial and reduction extents (largest first).
N_SPATIAL, N_REDUCE = 6, 4
FEATURES = (
    [f"spatial{i}" for i in range(N_SPATIAL)] + [f"reduce{i}" for i in range(N_REDUCE)]
    + ["spatial_total", "reduce_total", "flops", "bytes", "intensity", "stride", "padded", "blocks"]
)


def _log2(x: float) -> float:
    return math.log2(max(float(x), 1.0))


def anchor_block(desc: dict) -> dict | None:
    """The block doing the most work: the one a schedule is mostly about."""
    def work(b):
        return math.prod(e for _, e in b["iters"] if isinstance(e, int)) if b["iters"] else 0
    blocks = [b for b in desc["blocks"] if b["iters"]]
    return max(blocks, key=lambda b: (any(k == "R" for k, _ in b["iters"]), work(b)), default=None)


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
    target_distance: int = 0  # schedb.target.distance from the index's target


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
    """Nearest neighbours over the workloads that have valid MetaSchedule records for
    ``target`` or any target of its kind (at most ``max_distance`` away, see
    schedb.target.distance: 0 keeps only ``target``), optionally only from ``sources``
    models and never from ``exclude``, within the groups ``partition(description)`` makes
    (None: in no group). Which target a neighbour's records came from does not change its
    distance: a record is ranked by target when it is taken (Store.top_records)."""

    def __init__(self, store, target: str, sources: list[str] | None = None,
                 exclude: list[str] | None = None, partition=kind_of, max_distance: int | None = None):
        self.store = store
        usable = "r.valid = 1 AND r.format = 'ms-trace' AND target_distance(r.target, :t) <= :d"
        rows = store.db.query(
            f"""
            SELECT w.id, w.kind, w.description,
                   (SELECT group_concat(DISTINCT m.name) FROM records r JOIN models m ON m.id = r.model_id
                    WHERE r.workload_id = w.id AND {usable}) AS models,
                   (SELECT r.target FROM records r WHERE r.workload_id = w.id AND {usable}
                    ORDER BY target_distance(r.target, :t) LIMIT 1) AS target
            FROM workloads w
            WHERE w.description IS NOT NULL AND EXISTS (
                SELECT 1 FROM records r WHERE r.workload_id = w.id AND {usable})
            """,
            {"t": target, "d": SAME_KIND if max_distance is None else max_distance},
        )
        self.by_kind: dict[str, tuple[list, list, NearestNeighbors]] = {}
        groups: dict[str, tuple[list, list]] = {}
        for r in rows:
            models = (r["models"] or "").split(",")
            if sources and not set(models) & set(sources):
                continue
            if exclude and set(models) <= set(exclude):
                continue
            desc = json.loads(r["description"])
            group = partition(desc)
            if group is None:
                continue
            ids, feats = groups.setdefault(group, ([], []))
            ids.append((r["id"], [m for m in models if not exclude or m not in exclude], r["kind"],
                        r["target"], target_distance(r["target"], target)))
            feats.append(features(desc))
        for kind, (ids, feats) in groups.items():
            nn = NearestNeighbors().fit(np.array(feats))
            self.by_kind[kind] = (ids, feats, nn)

    def __len__(self) -> int:
        return sum(len(ids) for ids, _, _ in self.by_kind.values())

    def neighbors(self, desc: dict, group: str, k: int = 3) -> list[Neighbor]:
        """The ``k`` nearest workloads in ``group`` (a kind, or what ``partition`` gives)."""
        if group not in self.by_kind:
            return []
        ids, _, nn = self.by_kind[group]
        with _one_thread():
            dist, idx = nn.kneighbors(features(desc).reshape(1, -1), n_neighbors=min(k, len(ids)))
        return [Neighbor(ids[i][0], float(d), ids[i][2], ids[i][1], ids[i][3], ids[i][4])
                for d, i in zip(dist[0], idx[0])]
