"""Tune: MetaSchedule over every task of a model, into a standard work dir + a sidecar.

The work dir is what TVM itself writes (``database_workload.json`` and
``database_tuning_record.json``), so TVM users can load it with ``JSONDatabase``;
``schedb.json`` beside them keeps the provenance that those files lack.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from schedb.models import Model
from schedb.tir.target import canonical, load_intrinsics
from schedb.tir.tasks import extract_tasks, lower, select_tasks

from schedb.errors import SchedbError
from schedb.ingest.workdir import RECORDS, SIDECAR, WORKLOADS, drop_partial_line, previous_run, spent_trials, timeline
from schedb.pipeline.phases import phase
from schedb.pipeline.runs import choice_tasks, failing
from schedb.search.measure import rpc_config, rpc_servers


@dataclass(frozen=True)
class TuneBudget:
    """How much a tuning run may spend, checked on construction."""

    trials: int | None = None  # global (None: trials_per_task x the tasks)
    trials_per_task: int | None = 32  # None: the global budget, shared by MetaSchedule's gradient scheduler
    trials_per_iter: int = 32  # candidates per batch
    time_limit: float | None = None  # seconds; the batches in flight are measured and kept
    by_latency: bool = False  # each batch to the task by its share of the latency (schedb.search.share)

    def __post_init__(self):
        for name in ("trials", "trials_per_task", "trials_per_iter"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SchedbError(f"`{name}` must be positive, not {value}")
        if self.time_limit is not None and self.time_limit < 0:  # 0: stop after the first batches
            raise SchedbError(f"`time_limit` must not be negative, not {self.time_limit}")

    def resolved(self, n_tasks: int) -> "TuneBudget":
        """The same budget with its global trials worked out for ``n_tasks`` tasks."""
        trials = self.trials if self.trials is not None else (self.trials_per_task or 32) * n_tasks
        return TuneBudget(trials, self.trials_per_task, self.trials_per_iter, self.time_limit, self.by_latency)


def tune(
    model: Model,
    target,
    out: str | Path,
    budget: TuneBudget = TuneBudget(),
    seed: int = 0,
    progress=None,
    bind_params: bool = True,
    resume: bool = False,
    database: str | Path | None = None,
    on_phase=None,
    only: set[str] | None = None,
    parent_run: int | None = None,
    tasks: str | None = None,
    runner: str = "local",
    lowered=None,
) -> dict:
    """Tune ``model`` on ``target``; returns the sidecar dict (also written to ``out``).

    ``budget`` (:class:`TuneBudget`): the trials, globally and per task, and a time limit
    that ends the search at the first batch measured past it (batches in flight are
    measured and kept); the work dir and sidecar are complete as usual.
    ``progress(task_name, trials_done, trials_total, best_seconds, tasks_done, n_tasks)``
    is called after every measured batch; ``on_phase`` at the start and end of every phase
    (schedb.pipeline.phases). ``bind_params``: see schedb.tir.tasks.lower.

    ``resume``: ``out`` holds an interrupted (or finished) run of this model; the trials
    its records file already holds count against each task's budget, MetaSchedule's
    evolutionary search starts from those records, and the timeline goes on from the
    time already spent. Without it, a work dir that already holds records is refused.

    ``database``: a schedb database to tune into instead of the work dir's JSON files
    (which then hold only logs and the sidecar). Its records of the model's workloads,
    from any earlier tuning or a transfer, seed MetaSchedule's evolutionary search: tuning
    goes on from the transferred schedules rather than from random samples, and its cost
    model learns from their measurements before the first batch (schedb.search.warm; so
    does a resumed run's from the work dir's records; the sidecar's
    ``cost_model_warm_samples``). At the end,
    each task's records and its untuned kernel are measured side by side and the fastest
    becomes its choice (schedb.pipeline.choose; the sidecar's ``choices``): the model is built
    with what ran fastest side by side, the untuned kernel included.

    ``only``: tune just the tasks of these names (the others keep what they have).
    ``tasks``: tune just the tasks this names (schedb.tir.tasks.select_tasks): name patterns,
    or ``i/n``, shard i of n (equal task counts, about equal estimated cost; the same split on
    every machine), so n runs tune disjoint parts of the model whose work dirs ingest into one
    database.

    ``runner``: ``local``, or ``rpc://host:port/key`` to measure on the servers a TVM RPC
    tracker has for the key, one candidate per server at a time (the builds stay in this
    machine's warm pool); a candidate whose session failed runs once more
    (schedb.search.measure.RetryRunner). The sidecar records the runner, and so does the
    run's row when tuning into a database.

    ``lowered``: ``model`` already lowered for ``target`` (schedb.tir.tasks.lower with
    ``bind_params``), by a caller that also transfers and compiles it.

    Tuning into a database keeps the run in its ``runs`` table (the sidecar's ``run_id``;
    within run ``parent_run`` if given): options, each decided task, its records linked."""
    if database is not None and resume:
        raise SchedbError("`database` and `resume` do not go together: a database run counts no work dir trials")
    setup = _Setup(seed, progress, runner, lowered=lowered)
    if runner != "local":
        with phase(on_phase, f"asking the tracker at {runner}"):
            setup.servers = rpc_servers(rpc_config(runner))
    args = (model, target, out, budget, bind_params, resume, database, on_phase, only, tasks, setup)
    if database is None:
        return _tune(*args, run_id=None)
    from schedb.store import Store

    store = Store(database)
    try:
        options = {"budget": asdict(budget), "seed": seed, "bind_params": bind_params,
                   "only": sorted(only) if only else None, "tasks": tasks, "out": str(out)}
        run_id = store.runs.start("tune", model.name, canonical(target), options, runner, None, parent_run)
        with failing(store, run_id):
            meta = _tune(*args, run_id=run_id)
            store.runs.finish(run_id, choice_tasks(store, meta["choices"]["tasks"]))
        return meta
    finally:
        store.close()


def _tune(model, target, out, budget, bind_params, resume, database, on_phase, only, tasks, setup,
          run_id) -> dict:
    """tune(), with the id of its run row when tuning into a database."""
    with phase(on_phase, "loading tensor intrinsics"):
        load_intrinsics(target)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lowered = setup.lowered
    if lowered is None:
        with phase(on_phase, "lowering"):
            lowered = lower(model, target, bind_params)
    with phase(on_phase, "extracting tasks"):
        every = [t for t in extract_tasks(lowered, target) if only is None or t.name in only]
        if not every:
            raise SchedbError(f"none of the tasks in `only` ({', '.join(sorted(only))}) is a task of {model.name}")
        selection, tasks = tasks, select_tasks(every, tasks)
    if not tasks:
        raise SchedbError(f"`tasks` {selection}: this shard of {model.name}'s {len(every)} tasks is empty")
    budget = budget.resolved(len(tasks))
    spent = spent_trials(out, tasks)
    if any(spent) and not resume:
        raise SchedbError(f"{out} already holds {sum(spent)} trials of a tuning run: `resume` continues it")
    if resume:
        for name in (WORKLOADS, RECORDS):
            drop_partial_line(out / name)
    before = previous_run(out) if resume else {}
    started = before.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    with phase(on_phase, f"tuning {len(tasks)} tasks"):
        setup.database = lambda: trials_database(out, database, target, model.name, run_id)
        steps, offset = _tune_parts(out, tasks, spent, budget, before, setup)
    meta = _sidecar(model, target, tasks, budget, setup.seed, started, offset,
                    {"clock": "seconds of tuning when a batch went to the runner", "tasks": steps})
    if database is not None:
        meta["database"], meta["run_id"] = str(database), run_id
        with phase(on_phase, "choosing each task's schedule"):
            meta["choices"] = _choose(database, tasks, target)
    meta["params"] = "bound" if bind_params else "inputs"
    meta["runner"] = setup.runner
    meta["runner_retries"] = setup.retried
    meta["cost_model_warm_samples"] = setup.warm_samples
    # where the search's time went (MetaSchedule's profiler: search, cost model, builder, runner)
    meta["profile_s"] = {scope: round(s, 3) for scope, s in sorted(setup.profile.items(), key=lambda x: -x[1])}
    if selection is not None:
        meta["task_selection"] = {"tasks": selection, "of": len(every)}
    if resume:
        meta["resumed_from_trials"] = sum(spent)
    (out / SIDECAR).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _choose(path, tasks, target) -> dict:
    """schedb.pipeline.choose over the database tuned into: its records of a task compete
    with each other and the untuned kernel in one batch -> the sidecar's summary."""
    from schedb.pipeline.choose import choose
    from schedb.search.measure import Engine
    from schedb.store import Store

    t0 = time.perf_counter()
    store = Store(path)
    try:
        chosen = choose(store, tasks, target, Engine(target))
    finally:
        store.close()
    return {"wall_s": round(time.perf_counter() - t0, 1), "measured_tasks": len(chosen),
            "untuned": sum(c.record_id is None for c in chosen), "tasks": [c.as_json() for c in chosen]}


@dataclass
class _Setup:
    """What every MetaSchedule call of one tune run shares."""

    seed: int
    progress: object  # see tune
    runner: str  # local or rpc://host:port/key
    servers: int = 1  # candidates measured at once (the tracker's servers for the key)
    retried: list = field(default_factory=list)  # RPC session errors whose candidates ran again
    database: object = None  # () -> the MetaSchedule database the trials go to
    warm_samples: int = 0  # stored measurements the cost model learned from before searching
    profile: dict = field(default_factory=dict)  # seconds per MetaSchedule profiler scope, over the run
    lowered: object = None  # the model lowered already (see tune), or None


def _tune_parts(out: Path, tasks, spent: list[int], budget: TuneBudget, before: dict, setup: _Setup):
    """Tune the tasks with trials left, one MetaSchedule call per group of equal budget, the
    timeline going on from ``before`` (the run so far): -> (timeline per task, seconds)."""
    t0 = time.perf_counter()
    offset = before.get("wall_time_s", 0.0)
    steps = [list(s) for s in before.get("timeline", {}).get("tasks", [])] + [[] for _ in tasks]
    for group, per_task in _groups(spent, budget.trials, budget.trials_per_task):
        done = sum(spent_trials(out, tasks))
        if done >= budget.trials:
            break
        # MetaSchedule writes its logs under the work dir it is given: a resumed part's apart.
        run = _Run(tasks, group, out if not done else out / f"resume-{done}", setup)
        limit = None if budget.time_limit is None else max(budget.time_limit - (time.perf_counter() - t0), 0)
        total = budget.trials - done if per_task is None else min(per_task * len(group), budget.trials - done)
        elapsed = run.tune(total, per_task, budget.trials_per_iter, limit, budget.by_latency)
        for local, global_id in enumerate(group):
            base = steps[global_id][-1][1] if steps[global_id] else 0
            steps[global_id] += [[round(offset + t, 1), base + n] for t, n in elapsed.get(local, [])]
        offset += run.wall_s
        if run.stopped:
            break
    return steps[:len(tasks)], offset


def trials_database(out: Path, path, target, model: str, run_id: int | None = None):
    """Where the trials go: the work dir's JSON files, or a schedb database (records linked to run ``run_id``)."""
    if path is None:
        from tvm.s_tir import meta_schedule as ms

        return ms.database.JSONDatabase(work_dir=str(out))
    from schedb.store.database import Database

    # A search seeded from the database starts from different schedules: one record per trace.
    return Database(path, target=target, model=model, origin="tuned", distinct_traces=True, run_id=run_id)




def _groups(spent: list[int], trials: int, per_task: int | None):
    """[(task indices, per-task budget)]: tasks with the same trials left tune together
    (MetaSchedule takes one per-task budget per call); more trials left first."""
    if per_task is None:
        left = max(trials - sum(spent), 0)
        return [(list(range(len(spent))), None)] if left else []
    by_left: dict[int, list[int]] = {}
    for i, n in enumerate(spent):
        if per_task - n > 0:
            by_left.setdefault(per_task - n, []).append(i)
    return sorted(((ids, left) for left, ids in by_left.items()), key=lambda g: -g[1])


class _Run:
    """One MetaSchedule ``tune_tasks`` call over some of the model's tasks."""

    def __init__(self, tasks, group, log_root, setup: _Setup):
        self.tasks, self.group, self.log_root, self.setup = tasks, group, log_root, setup
        self.seed, self.progress, self.database = setup.seed, setup.progress, setup.database()
        self.wall_s, self.stopped = 0.0, False

    def tune(self, total, budget, per_iter, time_limit, by_latency=False) -> dict:
        """Tune the group; -> {task index in the group: [[seconds, candidates], ...]}."""
        from tvm.s_tir import meta_schedule as ms

        from schedb.search.measure import WarmBuilder, make_runner
        from schedb.search.warm import warm_cost_model

        _drop_unnamed_handlers()  # before MetaSchedule sets up its loggers (here and in tune_tasks)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [self.tasks[i].extracted for i in self.group], work_dir=str(self.log_root), seed=self.seed)
        per_iter = min(per_iter, total)  # MetaSchedule overshoots by up to a batch
        t0, epoch0 = time.perf_counter(), time.time()
        cost_model, learned = warm_cost_model(contexts, self.database)
        self.setup.warm_samples += learned
        callbacks = ms.measure_callback.MeasureCallback.create("default")
        if self.progress is not None:
            callbacks = [*callbacks, _Progress([c.task_name for c in contexts], total, budget, self.progress)]
        deadline = None if time_limit is None else _Deadline(t0 + time_limit)
        runner = make_runner(self.setup.runner, number=3, repeat=1, min_repeat_ms=50,
                             workers=self.setup.servers)
        if deadline is not None:
            callbacks = [*callbacks, deadline]
        profiler = ms.Profiler()
        try:
            with profiler:
                ms.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=str(self.log_root),
                    max_trials_global=total, max_trials_per_task=budget, num_trials_per_iter=per_iter,
                    builder=WarmBuilder(), runner=runner, cost_model=cost_model,
                    database=self.database, measure_callbacks=callbacks,
                    task_scheduler=_scheduler(total, budget, len(self.group), by_latency, self.database),
                )
        except Exception:
            if deadline is None or not deadline.reached:
                raise
        finally:
            self.setup.retried += getattr(runner, "retried", [])
        for scope, seconds in profiler.get().items():
            self.setup.profile[str(scope)] = self.setup.profile.get(str(scope), 0.0) + float(seconds)
        self.stopped = deadline is not None and deadline.reached
        self.wall_s = time.perf_counter() - t0
        steps = timeline(self.log_root / "logs", epoch0)
        return dict(enumerate(steps.get("tasks", [])))


def _scheduler(total: int, per_task: int | None, n_tasks: int, by_latency: bool = False, database=None):
    """By latency share when asked (schedb.search.share, reading ``database``). Otherwise
    round-robin when every task gets its whole per-task budget anyway: the gradient
    scheduler would only change the order, and it commits nothing of its first pass over
    the tasks until that pass is over (a kill then loses all of it: googlenet's pass is
    30-40 minutes here), while round-robin commits each batch once it has run."""
    if by_latency:
        from schedb.search.share import LatencyShare

        return LatencyShare(database)
    return "round-robin" if per_task is not None and total >= per_task * n_tasks else "gradient"


def _sidecar(model, target, tasks, budget: TuneBudget, seed, started, wall_s, steps) -> dict:
    """What the work dir's own files lack: the model, target, budget and timeline."""
    import tvm
    import tvm_ffi

    return {
        "model": model.name,
        "source": model.source,
        "input_shapes": model.input_shapes,
        "target": canonical(target),
        "tvm_version": tvm.__version__,
        "trials": budget.trials,  # the budget
        "measured": sum(s[-1][1] for s in steps["tasks"] if s),  # candidates sent to the runner
        "trials_per_task": budget.trials_per_task,
        "trials_per_iter": budget.trials_per_iter,
        "by_latency": budget.by_latency,
        "seed": seed,
        "started": started,
        "wall_time_s": round(wall_s, 1),
        "time_limit_s": budget.time_limit,
        "timeline": steps,
        "tasks": [
            {"name": t.name, "weight": t.weight, "shash": str(tvm_ffi.structural_hash(t.func))}
            for t in tasks
        ],
    }


def _drop_unnamed_handlers():
    """TVM's create_loggers formats the name of every handler on its logger, and an unnamed
    one (pytest's log capture, a user's own StreamHandler) fails it with ``None.format``.
    Its dictConfig replaces that logger's handlers anyway: remove the unnamed ones first."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)




@derived_object
class _Progress(PyMeasureCallback):
    """Reports trials, tasks finished and the best time after every measured batch."""

    def __init__(self, names, total, per_task, report):
        super().__init__()
        self.names, self.total, self.per_task, self.report = names, total, per_task, report
        self.done = [0] * len(names)
        self.best = [float("inf")] * len(names)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.done[task_id] += len(runner_results)
        for r in runner_results:
            if r.error_msg is None and r.run_secs:
                self.best[task_id] = min(self.best[task_id], sum(float(s) for s in r.run_secs) / len(r.run_secs))
        finished = sum(1 for d in self.done if self.per_task and d >= self.per_task)
        self.report(self.names[task_id], sum(self.done), self.total, self.best[task_id],
                    finished, len(self.names))


@derived_object
class _Deadline(PyMeasureCallback):
    """Ends tuning once the clock passes ``deadline``.

    MetaSchedule has no time budget, and terminating tasks from a callback trips its
    schedulers' own checks. So past the deadline this joins every other batch still in
    flight (their records are committed as usual), then raises; ``tune`` expects that."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline, self.reached = deadline, False

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if self.reached or time.perf_counter() < self.deadline:
            return
        self.reached = True  # (also stops the joins below from coming back here)
        for i, task in enumerate(task_scheduler.tasks_):
            if i != task_id and task.measure_candidates is not None:  # a batch in flight
                task_scheduler.join_running_task(i)
        raise TimeoutError("time limit reached")
