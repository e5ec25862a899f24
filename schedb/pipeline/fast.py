"""The fastest model a time budget buys from a database, in one step.

1. **transfer** (with droplet) from everything the database holds, within a share of the
   budget; every task gets its chosen kernel (a transferred or refined schedule, or the
   untuned kernel);
2. **tune** the tasks that carry most of the model's estimated latency (weight x chosen
   kernel time; the heaviest first, until ``latency_share`` of it is covered) with
   MetaSchedule, warm-started from the database's records (``tune(database=...)``), in
   turn (or with ``by_latency`` each batch to the task of largest weight x best kernel time
   so far, schedb.search.share) until the budget's time is spent, then each tuned task's
   records and its untuned kernel side by side (the choice);
3. compile the model from the database's choices and time it against PyTorch eager.

Everything is written to the database as it goes, so running again with the same
database goes on from there: the next transfer finds the earlier run's schedules as
exact matches.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field

from schedb.errors import SchedbError
from schedb.models import Model
from schedb.pipeline.evaluate import compile_model, time_interleaved
from schedb.pipeline.native import NativeOptions
from schedb.pipeline.phases import phase
from schedb.pipeline.runs import failing, fast_tasks
from schedb.pipeline.transfer import Options, TransferReport, transfer
from schedb.pipeline.tune import TuneBudget, tune
from schedb.search.allocate import heaviest
from schedb.store import Store
from schedb.store.database import Database
from schedb.tir.target import canonical
from schedb.tir.tasks import lower

# Seconds kept back for compiling and timing the final model, and the least worth tuning.
FINAL_S, MIN_TUNE_S = 60.0, 30.0


@dataclass
class FastOptions:
    budget_s: float  # the whole step: transfer, tuning and the final timing
    transfer_share: float = 0.4  # of the budget, at most, for the transfer (droplet included)
    latency_share: float = 0.8  # tune the heaviest tasks until they cover this share of the latency
    trials_per_iter: int = 8  # candidates per tuning batch: small, so the time limit bites soon
    by_latency: bool = False  # each batch to a task by its share of the latency (schedb.search.share), not in turn
    e2e_repeat: int = 10  # rounds of the final timing
    bind_params: bool = True

    def __post_init__(self):
        if self.budget_s <= 0:
            raise SchedbError(f"`budget_s` must be positive, not {self.budget_s}")
        for name in ("transfer_share", "latency_share"):
            if not 0 < getattr(self, name) <= 1:
                raise SchedbError(f"`{name}` must lie in (0, 1], not {getattr(self, name)}")


@dataclass
class FastReport:
    model: str
    target: str
    budget_s: float
    transfer: TransferReport
    tuned_tasks: list[str]  # the heaviest tasks the tuning phase worked on ([]: no time was left)
    tune_wall_s: float
    e2e: dict  # "final" and "pytorch": Latency dicts of the model as the database now builds it
    wall_s: float
    notes: list[str] = field(default_factory=list)
    run_id: int | None = None  # its row in store.runs (the transfer's and the tuning's name it as parent)

    def as_dict(self) -> dict:
        return asdict(self)


def fast(store: Store, model: Model, target, opts: FastOptions, progress=None, on_phase=None) -> FastReport:
    """Transfer, tune the heaviest tasks, choose, and time the model: see the module doc.
    ``progress`` is transfer's per-task callback; ``on_phase`` marks every phase. The run is
    kept in ``store.runs``, with its transfer and tuning as runs of their own within it."""
    run_id = store.runs.start("fast", model.name, canonical(target), asdict(opts))
    with failing(store, run_id):
        out = _fast(store, model, target, opts, progress, on_phase, run_id)
        store.runs.finish(run_id, fast_tasks(store, out.transfer.tasks, run_id), out.e2e)
    return out


def _fast(store, model, target, opts, progress, on_phase, run_id) -> FastReport:
    t0 = time.perf_counter()
    with phase(on_phase, "lowering"):
        lowered = lower(model, target, opts.bind_params)  # once, for the transfer, the tuning and the build
    # No native search inside the transfer: the tuning below is one, on the heaviest tasks of any ISA.
    rep = transfer(store, model, target, Options(droplet=True, budget_s=opts.transfer_share * opts.budget_s,
                                                 e2e_repeat=0, bind_params=opts.bind_params,
                                                 native=NativeOptions(trials=0)), progress, on_phase,
                   parent_run=run_id, lowered=lowered)
    heavy = heaviest(rep.tasks, opts.latency_share)
    left = opts.budget_s - (time.perf_counter() - t0) - FINAL_S
    notes, t_tune = [], time.perf_counter()
    if heavy and left >= MIN_TUNE_S:
        with tempfile.TemporaryDirectory(prefix="schedb-fast-") as logs:  # the records go to the database
            budget = TuneBudget(trials_per_task=10**6, trials_per_iter=opts.trials_per_iter, time_limit=left,
                                by_latency=opts.by_latency)
            tune(model, target, logs, budget, bind_params=opts.bind_params, database=store.path, only=set(heavy),
                 on_phase=on_phase, parent_run=run_id, lowered=lowered)
    else:
        notes.append(f"no tuning: {max(left, 0):.0f} s left after the transfer" if heavy else "no task to tune")
        heavy = []
    tune_wall = time.perf_counter() - t_tune
    with phase(on_phase, "compiling the model from the database's choices"):
        compiled = compile_model(lowered, target, Database(store.path, target=target))
    e2e, _ = time_interleaved(lowered, {"final": compiled}, opts.e2e_repeat, on_phase)
    return FastReport(model.name, canonical(target), opts.budget_s, rep, heavy, round(tune_wall, 1), e2e,
                      round(time.perf_counter() - t0, 1), rep.notes + notes, run_id)
