"""A learned order for droplet's neighbourhoods: MetaSchedule's XGBoost cost model.

Most neighbours of a good kernel are much slower (a random one about twice as slow, on
the heaviest convolutions of the seed models), so measuring them in random order spends
most of a small budget on points that cannot win. :class:`Guide` ranks the replayed
neighbourhood with MetaSchedule's own ``XGBModel`` over its per-store features, trained
on kernels measured on this machine (a workload's stored records, a transfer's candidates)
and on every batch droplet measures, so the batches start with the likeliest winners.

The model only orders candidates: every point is still measured, and acceptance is the
t-test's alone (schedb.search.droplet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Guide", "replayed"]


@dataclass
class Guide:
    """Ranks scheduled kernels of a workload, fastest predicted first.

    ``warmup``: measured kernels needed before ranking (fewer: the order is kept as given).
    ``seed``: XGBoost's. One guide can serve many workloads: costs are normalised per
    workload (MetaSchedule groups them by the workload's structural hash)."""

    target: object
    warmup: int = 16
    seed: int = 0
    seen: int = field(default=0, init=False)
    _model: object = field(default=None, init=False, repr=False)
    _contexts: dict = field(default_factory=dict, init=False, repr=False)

    def fit(self, examples) -> Guide:
        """Learn from ``examples``: (workload mod, scheduled mod, seconds) triples."""
        by_mod: dict = {}
        for mod, scheduled, seconds in examples:
            by_mod.setdefault(id(mod), (mod, []))[1].append((scheduled, seconds))
        for mod, pairs in by_mod.values():
            self.update(mod, [s for s, _ in pairs], [[t] for _, t in pairs])
        return self

    def update(self, mod, scheduled: list, samples: list[list[float] | None]) -> None:
        """Add measured kernels of workload ``mod`` (samples in seconds; None: failed)."""
        from tvm.s_tir.meta_schedule.runner import RunnerResult

        ok = [(s, t) for s, t in zip(scheduled, samples) if t]
        if not ok:
            return
        self.model().update(self._context(mod), [_candidate(s) for s, _ in ok],
                            [RunnerResult([float(x) for x in t], None) for _, t in ok])
        self.seen += len(ok)

    @property
    def ready(self) -> bool:
        """Whether :meth:`rank` orders anything yet."""
        return self.seen >= self.warmup

    def rank(self, mod, scheduled: list) -> list[int]:
        """Indexes into ``scheduled``, the fastest predicted first; as given while the
        model has seen fewer than ``warmup`` kernels."""
        if not self.ready or len(scheduled) < 2:
            return list(range(len(scheduled)))
        scores = self.model().predict(self._context(mod), [_candidate(s) for s in scheduled])
        return sorted(range(len(scheduled)), key=lambda i: -scores[i])

    def model(self):
        if self._model is None:
            from tvm.s_tir.meta_schedule.cost_model import XGBModel
            from tvm.s_tir.meta_schedule.cost_model.xgb_model import XGBConfig

            # warmup 0: XGBModel would answer random scores before 100 samples; ours keeps order.
            self._model = XGBModel(config=XGBConfig(seed=self.seed), num_warmup_samples=0, verbose_eval=10**9)
        return self._model

    def _context(self, mod):
        from tvm.s_tir.meta_schedule import TuneContext

        from schedb.tir.target import load_intrinsics

        key = id(mod)
        if key not in self._contexts:
            load_intrinsics(self.target)  # TuneContext imports every backend's intrinsics otherwise
            self._contexts[key] = (mod, TuneContext(mod=mod, target=self.target))
        return self._contexts[key][1]


def replayed(mod, target, timed) -> list:
    """Examples for :meth:`Guide.fit` from ``timed`` (trace JSON, seconds) pairs of ``mod``'s
    records: each trace replayed on ``mod``; those that no longer apply are left out."""
    from schedb.tir.replay import apply_trace

    out = []
    for trace, seconds in timed:
        r = apply_trace(trace, mod, target)
        if r.ok:
            out.append((mod, r.mod, seconds))
    return out


def _candidate(scheduled):
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate

    from schedb.tir.signature import prim_func

    return MeasureCandidate(Schedule(scheduled), ArgInfo.from_prim_func(prim_func(scheduled)))
