"""Tune: MetaSchedule over every task of a model, into a standard work dir + a sidecar.

The work dir is what TVM itself writes (``database_workload.json`` and
``database_tuning_record.json``), so TVM users can load it with ``JSONDatabase``;
``schedb.json`` beside them keeps the provenance that those files lack.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from schedb.models import Model
from schedb.tir.target import canonical, load_intrinsics
from schedb.tir.tasks import extract_tasks, lower

from schedb.ingest.workdir import SIDECAR


def tune(
    model: Model,
    target,
    out: str | Path,
    trials: int | None = None,
    trials_per_task: int | None = 32,
    trials_per_iter: int = 32,
    seed: int = 0,
    progress=None,
    time_limit: float | None = None,
    bind_params: bool = True,
) -> dict:
    """Tune ``model`` on ``target``; returns the sidecar dict (also written to ``out``).

    ``trials`` is the global budget (default: ``trials_per_task`` x number of tasks).
    ``progress(task_name, trials_done, trials_total, best_seconds, tasks_done, n_tasks)``
    is called after every measured batch. ``time_limit`` (seconds) ends the search at the
    first batch measured past it (batches in flight are measured and kept); the work dir
    and sidecar are complete as usual. ``bind_params``: see schedb.tir.tasks.lower."""
    from tvm.s_tir import meta_schedule as ms

    from schedb.search.measure import WarmBuilder, make_runner

    load_intrinsics(target)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lowered = lower(model, target, bind_params)
    tasks = extract_tasks(lowered, target)
    if trials is None:
        trials = (trials_per_task or 32) * len(tasks)
    trials_per_iter = min(trials_per_iter, trials)  # MetaSchedule overshoots by up to a batch
    _drop_unnamed_handlers()  # before MetaSchedule sets up its loggers (here and in tune_tasks)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        [t.extracted for t in tasks], work_dir=str(out), seed=seed
    )
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0, epoch0 = time.perf_counter(), time.time()
    callbacks = ms.measure_callback.MeasureCallback.create("default")
    if progress is not None:
        callbacks = [*callbacks, _Progress([c.task_name for c in contexts], trials, trials_per_task, progress)]
    deadline = None if time_limit is None else _Deadline(t0 + time_limit)
    if deadline is not None:
        callbacks = [*callbacks, deadline]
    try:
        ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(out),
            max_trials_global=trials,
            max_trials_per_task=trials_per_task,
            num_trials_per_iter=trials_per_iter,
            builder=WarmBuilder(),
            runner=make_runner("local", number=3, repeat=1, min_repeat_ms=50),
            database=ms.database.JSONDatabase(work_dir=str(out)),
            measure_callbacks=callbacks,
        )
    except Exception:
        if deadline is None or not deadline.reached:
            raise
    meta = _sidecar(model, target, tasks, trials, trials_per_task, trials_per_iter, seed, started,
                    time.perf_counter() - t0, time_limit, timeline(out / "logs", epoch0))
    meta["params"] = "bound" if bind_params else "inputs"
    (out / SIDECAR).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _sidecar(model, target, tasks, trials, trials_per_task, trials_per_iter, seed, started, wall_s,
             time_limit, steps) -> dict:
    """What the work dir's own files lack: the model, target, budget and timeline."""
    import tvm
    import tvm_ffi

    return {
        "model": model.name,
        "source": model.source,
        "input_shapes": model.input_shapes,
        "target": canonical(target),
        "tvm_version": tvm.__version__,
        "trials": trials,
        "trials_per_task": trials_per_task,
        "trials_per_iter": trials_per_iter,
        "seed": seed,
        "started": started,
        "wall_time_s": round(wall_s, 1),
        "time_limit_s": time_limit,
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


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) .*?(?:picks Task #(\d+)|"
                   r"Sending (\d+) sample\(s\) to builder|Sending \d+ valid sample\(s\) to runner)")


def timeline(logs: Path, started: float) -> dict:
    """When each task's candidates were measured: ``{"tasks": [[[seconds, candidates so
    far], ...] per task index]}``, from the task scheduler's log.

    MetaSchedule commits a batch's records only when it next picks that task (after a
    whole round over all tasks), so neither the records file nor measure callbacks tell
    when a schedule was found; the log does. A task's records in the records file are in
    batch order, so its first n records are what the search knew at that time."""
    log = next(Path(logs).glob("*task_scheduler.log"), None)
    if log is None:
        return {}
    tasks: dict[int, list] = {}
    task, pending, stamp = None, 0, None

    def close():
        if task is not None and pending:
            steps = tasks.setdefault(task, [])
            steps.append([round(stamp - started, 1), (steps[-1][1] if steps else 0) + pending])

    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stamp_now = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp()
        if m[2] is not None:  # a new pick: a batch without valid builds ends here
            close()
            task, pending, stamp = int(m[2]), 0, stamp_now
        elif m[3] is not None:
            pending, stamp = int(m[3]), stamp_now
        else:  # sent to the runner: measured now (the runner takes seconds)
            stamp = stamp_now
            close()
            pending = 0
    close()
    n = max(tasks, default=-1) + 1
    return {"clock": "seconds since start when a batch went to the runner", "tasks": [tasks.get(i, []) for i in range(n)]}


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
