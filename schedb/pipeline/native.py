"""Native search: a few MetaSchedule trials where a task's schedule came from another vector ISA.

A record tuned for another vector unit, even adapted to this one (schedb.tir.isa), is a
start, not a schedule tuned here: a short search of MetaSchedule's own from it pays at
once (an AVX-512 record of AlexNet's first convolution ran 8x faster on an AVX2 host after
32 trials). So the tasks whose transferred schedule is of another ISA, the heaviest first
until ``latency_share`` of their latency is covered, are tuned by schedb.pipeline.tune
into the database, warm-started from its records (the adapted winners among them), for
``trials`` each and at most ``budget_s`` x the share of the model's latency they carry
(skipped when that is under ``min_s``);
each is then decided side by side against its transferred and untuned kernels
(schedb.pipeline.choose).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field

from schedb.pipeline.tune import TuneBudget, tune
from schedb.search.allocate import heaviest


@dataclass
class NativeOptions:
    trials: int = 16  # per task (0: no native search)
    budget_s: float | None = 300.0  # seconds for a model all of whose latency is of another ISA
    latency_share: float = 0.8  # of the other-ISA tasks' latency: the heaviest tasks until covered
    trials_per_iter: int = 8
    min_s: float = 30.0  # a search given less time is skipped: MetaSchedule's first batch alone takes longer


@dataclass
class NativeOutcome:
    tasks: list[str]  # the tasks tuned
    share: float  # of the model's estimated latency they carry
    time_limit_s: float | None
    wall_s: float
    chosen: dict = field(default_factory=dict)  # task -> {"record_id", "chosen_us"} after the search

    def as_dict(self) -> dict:
        return asdict(self)


def cost_us(t) -> float | None:
    """A task result's estimated share of the model's latency: weight x chosen kernel time."""
    us = t.refined_us or t.transferred_us or t.untuned_us
    return None if us is None else t.weight * us


def native_search(store, model, target, results, opts: NativeOptions, bind_params: bool = True,
                  time_left: float | None = None, on_phase=None) -> NativeOutcome | None:
    """Tune the heaviest tasks of ``results`` (TaskResults) whose source is of another ISA
    (``source_isa``) into ``store``; None when there is none or no budget."""
    other = [t for t in results if t.source_isa and t.record_id is not None]
    names = heaviest(other, opts.latency_share)
    total = sum(c for t in results if (c := cost_us(t)))
    if not names or opts.trials <= 0 or not total:
        return None
    share = sum(cost_us(t) for t in other if t.task in names) / total
    limits = [x for x in (None if opts.budget_s is None else opts.budget_s * share, time_left) if x is not None]
    limit = min(limits) if limits else None
    if limit is not None and limit < opts.min_s:
        return None
    t0 = time.perf_counter()
    budget = TuneBudget(trials_per_task=opts.trials, trials_per_iter=min(opts.trials_per_iter, opts.trials),
                        time_limit=limit)
    with tempfile.TemporaryDirectory(prefix="schedb-native-") as logs:  # the records go to the database
        meta = tune(model, target, logs, budget, bind_params=bind_params, database=store.path, only=set(names),
                    on_phase=on_phase)
    chosen = {c["task"]: {"record_id": c["record_id"], "chosen_us": c["chosen_us"]}
              for c in meta.get("choices", {}).get("tasks", [])}
    return NativeOutcome(names, round(share, 4), limit, round(time.perf_counter() - t0, 1), chosen)
