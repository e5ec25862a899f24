"""Transfer: make a new model fast with schedules other models were tuned with.

Transfer-tuning (Gibson & Cano, PACT'22) on MetaSchedule traces. For every task of
the model: an exact signature match reuses the stored best records; otherwise the
top records of the k nearest workloads of the same kind (schedb.index) are replayed
on the task (schedb.replay adapts decisions that do not fit); when no workload of the
kind is tuned, those of the nearest workloads with the same anchor, the main reduction
block, are retargeted (schedb.anchor: another epilogue, e.g. bias + ReLU instead of a
batch norm) and replayed the same way, and the task's source is "anchor". Every candidate **and the task's
untuned kernel** are measured for real and the fastest is kept, so no task ends up
slower than untuned. Winners can be refined by droplet search, are committed as
records with their provenance, and the whole model is compiled and timed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from schedb.anchor import anchor_of, retarget
from schedb.compile import compile_model, time_torch, time_vm
from schedb.database import commit_mod, commit_trace
from schedb.index import Index
from schedb.measure import Engine, Measurement
from schedb.models import Model
from schedb.replay import apply_trace
from schedb.store import Store
from schedb.target import SAME, canonical, coverage_note, label, load_intrinsics
from schedb.tasks import extract_tasks, lower


@dataclass
class Options:
    k: int = 3  # neighbour workloads per task
    per_source: int = 2  # top records taken from each neighbour
    sources: list[str] | None = None  # only schedules of these models
    exclude: list[str] = field(default_factory=list)  # never schedules of these models
    droplet: bool = False
    droplet_trials: int = 16  # per task
    trials: int | None = None  # global cap on measured candidates
    budget_s: float | None = None  # global wall-clock cap on the search
    repeat: int = 5  # samples per measured candidate
    e2e_repeat: int = 10
    pvalue: float = 0.05
    seed: int = 0
    runner: str = "local"
    same_target_only: bool = False  # only records tuned for this very target

    @property
    def max_distance(self) -> int | None:
        """How far a candidate's target may be from this one (schedb.target.distance)."""
        return SAME if self.same_target_only else None


@dataclass
class TaskResult:
    task: str
    weight: int
    workload_id: int
    source: str  # exact | neighbor | anchor (same main reduction, other kind) | untuned
    reason: str | None = None  # why a task stayed untuned
    source_model: str | None = None
    source_workload_id: int | None = None
    source_record_id: int | None = None
    source_target: str | None = None  # the target the source record was tuned for
    distance: float | None = None
    untuned_us: float | None = None
    transferred_us: float | None = None
    refined_us: float | None = None
    refined_pvalue: float | None = None
    candidates: int = 0
    failed: int = 0
    droplet_trials: int = 0
    record_id: int | None = None
    refined_record_id: int | None = None
    search_time_s: float = 0.0


@dataclass
class TransferReport:
    model: str
    target: str
    tasks: list[TaskResult]
    search_time_s: float
    measured: int  # candidates measured (transfer + droplet), not counting untuned baselines
    e2e: dict  # untuned / transferred / refined / pytorch -> Latency dicts
    check: dict  # max abs errors against the framework
    notes: list[str] = field(default_factory=list)  # what the user should know, e.g. foreign targets

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Candidate:
    row: dict  # the stored record
    distance: float
    source: str  # exact | neighbor | anchor
    trace: list  # JSON trace to replay on the task


@dataclass
class _Winner:
    trace: object  # tvm Trace as applied to the task
    samples: list[float]
    record_id: int | None


def _allowed_models(store: Store, opts: Options) -> list[int] | None:
    if not opts.sources and not opts.exclude:
        return None
    names = [r["name"] for r in store.db.query("SELECT name FROM models")]
    keep = [n for n in names if (not opts.sources or n in opts.sources) and n not in opts.exclude]
    return [store.model_id(n) for n in keep]


def transfer(store: Store, model: Model, target, opts: Options | None = None, progress=None) -> TransferReport:
    """Transfer schedules to every task of ``model``; see the module doc.

    ``progress(done, total, task_result)`` is called after every task."""
    import tvm

    opts = opts or Options()
    load_intrinsics(target)
    tgt = canonical(target)
    lowered = lower(model, target)
    tasks = extract_tasks(lowered, target)
    note = coverage_note(store.target_counts(), tgt, opts.same_target_only)
    index = Index(store, tgt, opts.sources, opts.exclude, max_distance=opts.max_distance)
    anchors: list[Index] = []  # built when a task first needs it

    def anchor_index() -> Index:
        if not anchors:
            anchors.append(Index(store, tgt, opts.sources, opts.exclude, partition=anchor_of,
                                 max_distance=opts.max_distance))
        return anchors[0]

    allowed = _allowed_models(store, opts)
    engine = Engine(target, runner=opts.runner, repeat=opts.repeat)
    with store.transaction():
        model_id = store.upsert_model(model.name, model.source, model.input_shapes, tgt, tvm.__version__)
    t_start = time.perf_counter()
    results: list[TaskResult] = []
    transferred: dict[str, _Winner] = {}
    refined: dict[str, _Winner] = {}

    baseline = 0  # untuned measurements: always made, not charged to the budget

    def trials_left() -> int | None:
        return None if opts.trials is None else max(opts.trials - (engine.count - baseline), 0)

    def time_left() -> float | None:
        return None if opts.budget_s is None else max(opts.budget_s - (time.perf_counter() - t_start), 0)

    for n, task in enumerate(tasks):
        t0 = time.perf_counter()
        with store.transaction():
            wid, sig, kind, desc = commit_mod(store, task.func)
            store.add_task(model_id, wid, task.name, task.weight)
        res = TaskResult(task.name, task.weight, wid, "untuned")
        candidates = _candidates(store, index, anchor_index, task.func, wid, desc, kind, tgt, allowed,
                                 opts, res)
        replayed = []
        for cand in candidates:
            if trials_left() is not None and len(replayed) >= trials_left() or time_left() == 0:
                res.reason = "search budget spent"
                break
            r = apply_trace(cand.trace, task.func, target)
            if r.ok:
                replayed.append((cand, r))
            else:
                res.failed += 1
        res.candidates = len(candidates)
        measured = engine.measure([task.func] + [r.mod for _, r in replayed])
        baseline += 1
        untuned = measured[0]
        res.untuned_us = untuned.mean * 1e6 if untuned.ok else None
        res.failed += sum(not m.ok for m in measured[1:])
        ranked = sorted(((m, c, r) for m, (c, r) in zip(measured[1:], replayed) if m.ok),
                        key=lambda x: x[0].mean)
        if not ranked:
            res.reason = res.reason or (f"all {res.candidates} candidates failed" if res.candidates
                                        else "no candidates")
        elif untuned.ok and untuned.mean <= ranked[0][0].mean:
            res.reason = (f"untuned kernel fastest ({res.untuned_us:.1f} us vs "
                          f"{ranked[0][0].mean * 1e6:.1f} us)")
        else:
            m, c, r = ranked[0]
            cand, dist = c.row, c.distance
            res.source = c.source
            res.reason = None
            res.source_record_id, res.source_workload_id, res.distance = cand["id"], cand["workload_id"], dist
            res.source_model = _model_name(store, cand["model_id"])
            res.source_target = cand["target"]
            res.transferred_us = m.mean * 1e6
            rid = _commit(store, wid, sig, tgt, r.trace, m, "transferred", cand["id"], cand["workload_id"],
                          dist, time.perf_counter() - t0, model_id)
            res.record_id = rid
            transferred[task.name] = _Winner(r.trace, m.samples, rid)
            left = opts.droplet_trials if trials_left() is None else min(opts.droplet_trials, trials_left())
            if opts.droplet and left > 0 and time_left() != 0:
                # Multi-start: the three best transferred traces, not only the winner.
                starts = [x[2].trace for x in ranked[:3]]
                win = _refine(store, task, target, engine, starts, opts, left, time_left(), wid, sig, tgt,
                              rid, cand["workload_id"], dist, model_id, res, t0)
                if win is not None:
                    refined[task.name] = win
        res.search_time_s = round(time.perf_counter() - t0, 3)
        results.append(res)
        if progress:
            progress(n + 1, len(tasks), res)

    search_time = time.perf_counter() - t_start
    e2e, check = _end_to_end(lowered, target, tasks, transferred, refined, opts)
    return TransferReport(model.name, tgt, results, search_time, engine.count - baseline, e2e, check,
                          [note] if note else [])


def _candidates(store, index, anchor_index, mod, wid, desc, kind, tgt, allowed, opts, res):
    """Exact matches, else records of the nearest workloads of the same kind, else of
    the nearest with the same anchor (retargeted to ``mod``)."""
    exact = store.top_records(wid, tgt, opts.k * opts.per_source, allowed, opts.max_distance)
    if exact:  # of any target: measured here like every other candidate, never trusted
        return [_Candidate(r, 0.0, "exact", json.loads(r["trace"])) for r in exact]
    neighbors = [nb for nb in index.neighbors(desc, kind, opts.k) if nb.workload_id != wid]
    source = "neighbor"
    anchor = anchor_of(desc) if not neighbors else None
    if anchor is not None:
        neighbors = [nb for nb in anchor_index().neighbors(desc, anchor, opts.k) if nb.workload_id != wid]
        source = "anchor"
    if not neighbors:
        res.reason = _no_candidates(store, kind, anchor, tgt, opts)
        return []
    out = []
    for nb in neighbors:
        src_desc = json.loads(store.workload(nb.workload_id)["description"]) if source == "anchor" else None
        for r in store.top_records(nb.workload_id, tgt, opts.per_source, allowed, opts.max_distance):
            trace = json.loads(r["trace"])
            if source == "anchor":
                try:
                    trace = retarget(trace, mod, src_desc)
                except Exception:  # TVM's error types; the candidate just does not apply
                    res.failed += 1
                    continue
            out.append(_Candidate(r, nb.distance, source, trace))
    return out


def _no_candidates(store, kind, anchor, tgt, opts) -> str:
    """Why a task has no candidate: never blame the kind when it is tuned for another target."""
    reason = f"no tuned workload of kind {kind}" + (f" or anchor {anchor}" if anchor else "")
    tuned_for = store.target_counts(kind)
    if not tuned_for:
        return reason
    if opts.sources or opts.exclude:
        return reason + " from the models allowed (--sources / --exclude-model)"
    where = ", ".join(label(t) for t in tuned_for if t != tgt)
    if opts.same_target_only:
        return f"kind {kind} is tuned only for other targets ({where}), left out by --same-target-only"
    return f"kind {kind} is tuned only for targets of another kind ({where})"


def _refine(store, task, target, engine, starts, opts, trials, time_left, wid, sig, tgt, parent,
            source_wid, dist, model_id, res, t0):
    """Droplet search from the best transferred traces; commits and returns an improvement."""
    from schedb.droplet import refine_many
    from schedb.errors import SchedbError

    try:
        out = refine_many(starts, task.func, target, engine, trials=trials, time_budget=time_left,
                          pvalue=opts.pvalue, seed=opts.seed)
    except SchedbError as e:
        res.reason = f"droplet: {e}"
        return None
    res.droplet_trials = out.trials
    res.refined_pvalue = out.pvalue
    if out.pvalue is None or out.best_mean >= out.start_mean:
        res.refined_us = res.transferred_us  # no significant improvement: keep the transfer
        return None
    m = Measurement(out.best_samples)
    res.refined_us = m.mean * 1e6
    rid = _commit(store, wid, sig, tgt, out.best_trace, m, "droplet", parent, source_wid, dist,
                  time.perf_counter() - t0, model_id)
    res.refined_record_id = rid
    return _Winner(out.best_trace, m.samples, rid)


def _commit(store, wid, sig, tgt, trace, m: Measurement, origin, parent, source_wid, dist, search_time,
            model_id) -> int:
    with store.transaction():
        return commit_trace(store, wid, sig, tgt, trace, m.samples, origin, parent_id=parent,
                            source_workload_id=source_wid, distance=dist,
                            search_time_s=round(search_time, 3), model_id=model_id)


def _model_name(store, model_id):
    row = store.conn.execute("SELECT name FROM models WHERE id = ?", (model_id,)).fetchone()
    return row[0] if row else None


def winners_database(tasks, winners: dict, target):
    """A MetaSchedule MemoryDatabase holding exactly the chosen schedule of each task."""
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.MemoryDatabase()
    for task in tasks:
        w = winners.get(task.name)
        if w is None:
            continue
        workload = db.commit_workload(task.func)
        db.commit_tuning_record(ms.database.TuningRecord(
            w.trace, workload, w.samples, target,
            ms.arg_info.ArgInfo.from_prim_func(task.func["main"] if hasattr(task.func, "functions")
                                               else task.func)))
    return db


def _end_to_end(lowered, target, tasks, transferred, refined, opts):
    e2e, check = {}, {}
    variants = [("untuned", None), ("transferred", transferred)]
    if opts.droplet:
        variants.append(("refined", {**transferred, **refined}))
    for name, winners in variants:
        db = winners_database(tasks, winners, target) if winners is not None else None
        compiled = compile_model(lowered, target, db)
        e2e[name] = time_vm(compiled, lowered, repeat=opts.e2e_repeat).as_dict()
        check[name] = {"max_abs_err": compiled.max_abs_err, "kernels_scheduled": compiled.tuned_tasks}
    torch_lat = time_torch(lowered, repeat=opts.e2e_repeat)
    e2e["pytorch"] = torch_lat.as_dict() if torch_lat else None
    return e2e, check
