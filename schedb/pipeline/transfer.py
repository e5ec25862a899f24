"""Transfer: make a new model fast with schedules other models were tuned with.

Transfer-tuning (Gibson & Cano, PACT'22) on MetaSchedule traces. For every task of
the model: an exact signature match reuses the stored best records; otherwise the
top records of the k nearest workloads of the same kind (schedb.search.index) are replayed
on the task (schedb.tir.replay adapts decisions that do not fit); when no workload of the
kind is tuned, those of the nearest workloads with the same anchor, the main reduction
block, are retargeted (schedb.tir.anchor: another epilogue, e.g. bias + ReLU instead of a
batch norm) and replayed the same way, and the task's source is "anchor". Every candidate **and the task's
untuned kernel** are measured for real and the fastest is kept, so no task ends up
slower than untuned. Under a time budget a task measures only as many of its candidates,
best first, as its share of the time left pays for, so the budget reaches every task. A
task that nothing beats untuned on gets a few schedules sampled from MetaSchedule's own
design space (source "searched"), so no kernel ships naive.
Winners can be refined by droplet search, within one budget spent where weight x kernel
time is largest (schedb.search.allocate), and a refinement is kept only if it is
significantly faster than the transferred kernel measured beside it. Winners are committed
as records with their provenance, and each task's verdict as its choice (store.choices.record:
the winner, or the untuned kernel), so the database builds the model transfer measured;
then the whole model is compiled and timed.

Records of another vector ISA (say AVX-512 records on an AVX2 host) are replayed twice: as
tuned and adapted to this CPU's lanes and registers (schedb.tir.isa), both measured side by
side; a task whose exact matches are all of another ISA also gets its neighbours' records;
the tasks whose winner is of another ISA then get a short native search, MetaSchedule
warm-started from the winners (schedb.pipeline.native), and the report says what each gained
(schedb.pipeline.other_isa).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from schedb.errors import SchedbError
from schedb.models import Model
from schedb.pipeline.choose import contender
from schedb.pipeline.evaluate import compile_variants, time_interleaved
from schedb.pipeline import other_isa
from schedb.pipeline.native import NativeOptions, native_search
from schedb.pipeline.phases import phase
from schedb.pipeline.runs import failing, transfer_tasks
from schedb.search.allocate import Allocator
from schedb.search.droplet import Droplet, DropletParams, spend
from schedb.search.index import Index
from schedb.search.measure import Engine, Measurement
from schedb.search.sample import sample_schedules
from schedb.store import Store
from schedb.store.records import commit_mod, commit_trace
from schedb.tir.anchor import anchor_of, retarget
from schedb.tir.signature import kind_of
from schedb.tir.replay import apply_trace
from schedb.tir.target import canonical, label, load_intrinsics, max_distance, vector_unit
from schedb.tir.tasks import LoweredModel, Task, extract_tasks, lower


@dataclass
class Options:
    k: int = 3  # neighbour workloads per task
    per_source: int = 2  # top records taken from each neighbour
    sources: list[str] | None = None  # only schedules of these models
    exclude: list[str] = field(default_factory=list)  # never schedules of these models
    droplet: bool = False
    droplet_trials: int = 16  # per task on average: the droplet budget is this x the tasks with a winner
    droplet_share: float | None = 0.5  # droplet's seconds at most this x the search's before it (None: no cap)
    trials: int | None = None  # global cap on measured candidates
    budget_s: float | None = None  # global wall-clock cap on the search
    repeat: int = 5  # samples per measured candidate
    e2e_repeat: int = 10  # rounds of the end-to-end timing (0: compile and check the model, time nothing)
    pvalue: float = 0.05
    seed: int = 0
    runner: str = "local"
    same_target_only: bool = False  # only records tuned for this very target
    bind_params: bool = True  # weights as constants, folded (schedb.tir.tasks.lower)
    search_trials: int = 8  # per task no candidate beats untuned on: MetaSchedule samples (0: none)
    adapt_isa: bool = True  # also replay records of another vector ISA adapted to this one (schedb.tir.isa)
    native: NativeOptions = field(default_factory=NativeOptions)  # the search where the ISA differs

    @property
    def max_distance(self) -> int | None:
        """How far a candidate's target may be from this one (schedb.tir.target.distance)."""
        return max_distance(self.same_target_only)


@dataclass
class TaskResult:
    task: str
    weight: int
    workload_id: int
    source: str  # exact | neighbor | anchor (same main reduction, other kind) | searched | untuned
    reason: str | None = None  # why a task stayed untuned
    source_model: str | None = None
    source_workload_id: int | None = None
    source_record_id: int | None = None
    source_target: str | None = None  # the target the source record was tuned for
    distance: float | None = None
    untuned_us: float | None = None
    transferred_us: float | None = None
    refined_us: float | None = None
    refined_pvalue: float | None = None  # droplet's final head-to-head; None: it never moved
    refined_accepted: bool | None = None  # None: no droplet search on this task
    droplet_speedup: float | None = None  # start / best in that head-to-head (1.0 unless accepted)
    candidates: int = 0
    failed: int = 0
    droplet_trials: int = 0  # spent on this task by the shared budget, the head-to-head included
    searched: int = 0  # schedules sampled from MetaSchedule's design space (source "searched")
    record_id: int | None = None
    refined_record_id: int | None = None
    search_time_s: float = 0.0
    source_isa: str | None = None  # the winner's vector ISA when it is not this target's
    isa_adapted: bool | None = None  # the winner is a record adapted to this ISA (None: none was tried)
    unadapted_us: float | None = None  # the fastest record of another ISA as tuned, measured beside
    adapted_us: float | None = None  # the fastest of them adapted to this ISA, in the same batch
    native_us: float | None = None  # the task's choice after the native search (None: not searched)
    native_from_us: float | None = None  # the kernel it had before, measured in the same batch
    native_record_id: int | None = None


@dataclass
class TransferReport:
    model: str
    target: str
    tasks: list[TaskResult]
    search_time_s: float  # the task search, droplet and the native search only (not lowering nor compiling)
    search_wall_s: float  # from lowering to the final model compiled and checked: lowering, task extraction, the
    # index, the search, droplet, the native search and that compile (loading the model and the intrinsics not)
    e2e_wall_s: float | None  # the end-to-end timing after it (the other variants compiled, all timed); None: skipped
    droplet_wall_s: float | None  # the droplet phase's wall time (part of both search times); None: no droplet
    measured: int  # candidates measured (transfer + droplet), not counting untuned baselines
    e2e: dict  # untuned / transferred / refined / pytorch -> Latency dicts; {} when e2e_repeat is 0
    check: dict  # max abs errors against the framework, per variant compiled
    notes: list[str] = field(default_factory=list)  # what the user should know, e.g. foreign targets
    load_average: dict = field(default_factory=dict)  # before / after the end-to-end timing (1, 5, 15 min)
    run_id: int | None = None  # its row in store.runs
    isa: dict = field(default_factory=dict)  # records of another vector ISA: what adapting and searching gained

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    row: dict  # the stored record
    distance: float
    source: str  # exact | neighbor | anchor
    trace: list  # JSON trace to replay on the task
    adapted: bool = False  # adapted from another vector ISA to this one


@dataclass
class Winner:
    trace: object  # tvm Trace as applied to the task
    samples: list[float]
    record_id: int | None


@dataclass
class TaskContext:
    """One task's search: the task, its stored workload and its result so far
    (what TVM's TuneContext is to a tuning task)."""

    task: Task
    workload_id: int
    signature: str
    kind: str
    desc: dict
    result: TaskResult
    starts: list = field(default_factory=list)  # droplet's multi-start: the best replayed traces
    contenders: list = field(default_factory=list)  # the batch that decided its schedule (a choice's)
    unadapted: Winner | None = None  # the fastest as-tuned candidate, when an adapted one won
    started: float = field(default_factory=time.perf_counter)


def transfer(store: Store, model: Model, target, opts: Options | None = None, progress=None,
             on_phase=None, parent_run: int | None = None, lowered: LoweredModel | None = None) -> TransferReport:
    """Transfer schedules to every task of ``model``; see the module doc.

    ``progress(done, total, task_result)`` is called after every task; ``on_phase`` at the
    start and end of every phase (schedb.pipeline.phases). The run is kept in
    ``store.runs`` (its id: the report's ``run_id``), within run ``parent_run`` if given.
    ``lowered``: the model already lowered for ``target`` the way ``opts`` asks (a caller
    that goes on to tune and compile it lowers it once)."""
    search = Transfer(store, model, target, opts or Options(), on_phase, parent_run, lowered)
    return search.run(progress)


class Transfer:
    """The search over one model's tasks: shared state (indexes, engine, budgets)."""

    def __init__(self, store: Store, model: Model, target, opts: Options, on_phase=None,
                 parent_run: int | None = None, lowered: LoweredModel | None = None):
        self.store, self.model, self.target, self.opts = store, model, target, opts
        self.lowered = lowered
        self.target_key = canonical(target)
        self.allowed = allowed_models(store, opts)
        self.run_id = store.runs.start("transfer", model.name, self.target_key, asdict(opts), opts.runner,
                                       _names(store, self.allowed), parent_run)
        with failing(store, self.run_id):
            self._prepare(on_phase)

    def _prepare(self, on_phase):
        import tvm

        store, model, target, opts = self.store, self.model, self.target, self.opts
        self.on_phase = on_phase
        with phase(on_phase, "loading tensor intrinsics"):
            load_intrinsics(target)
        self.t_begin = time.perf_counter()  # search_wall_s: once per process, the intrinsics are not the search's
        self.unit = vector_unit(self.target_key)  # lanes and registers, for records of another ISA
        # The engine's runner starts a worker that imports TVM (~3 s): it does so while the model lowers.
        with ThreadPoolExecutor(1, thread_name_prefix="schedb-engine") as starting:
            engine = starting.submit(Engine, target, runner=opts.runner, repeat=opts.repeat)
            if self.lowered is None:
                with phase(on_phase, "lowering"):
                    self.lowered = lower(model, target, opts.bind_params)
            with phase(on_phase, "extracting tasks"):
                self.tasks = extract_tasks(self.lowered, target)
            self.note = store.records.coverage_note(self.target_key, opts.same_target_only)
            with phase(on_phase, "building the index"):
                self.index = self._index()
            self._anchor_index: Index | None = None  # built when a task first needs it
            with phase(on_phase, "starting the measurement engine"):
                self.engine = engine.result()
        with store.transaction():
            self.model_id = store.models.upsert(model.name, model.source, model.input_shapes, self.target_key,
                                               tvm.__version__)
        self.baseline = 0  # untuned measurements: always made, not charged to the budget
        self.contexts: list[TaskContext] = []  # every task searched, in order
        self.native = None  # schedb.pipeline.native's outcome, when it ran
        self.t_start = time.perf_counter()

    def _index(self, partition=None) -> Index:
        rows = self.store.workloads.tuned(self.target_key, self.opts.max_distance)
        return Index(partition or kind_of, self.opts.sources, self.opts.exclude).fit(rows)

    def anchor_index(self) -> Index:
        if self._anchor_index is None:
            self._anchor_index = self._index(anchor_of)
        return self._anchor_index

    def trials_left(self) -> int | None:
        return None if self.opts.trials is None else max(self.opts.trials - (self.engine.count - self.baseline), 0)

    def time_left(self) -> float | None:
        if self.opts.budget_s is None:
            return None
        return max(self.opts.budget_s - (time.perf_counter() - self.t_start), 0)

    def run(self, progress=None) -> TransferReport:
        with failing(self.store, self.run_id):
            rep = self._run(progress)
            self.store.runs.finish(self.run_id, transfer_tasks(rep.tasks), rep.e2e)
        return rep

    def _run(self, progress) -> TransferReport:
        results, transferred, found = self._search(progress)
        refined, droplet_wall = {}, None
        if self.opts.droplet:
            t0 = time.perf_counter()
            if found:
                with phase(self.on_phase, f"droplet search on {len(found)} tasks"):
                    refined = self._refine(found, t0 - self.t_start)
            droplet_wall = time.perf_counter() - t0
        self._record_choices()
        best = {**transferred, **refined}
        native = self._native(best)
        search_time = time.perf_counter() - self.t_start
        variants = {"untuned": None}
        if any(r.isa_adapted for r in results):  # what the model would be without adapting
            variants["unadapted"] = _unadapted(self.contexts, best)
        variants["transferred"] = transferred
        if self.opts.droplet:
            variants["refined"] = best
        if native is not None:
            variants["native"] = native
        return TransferReport(self.model.name, self.target_key, results, search_time_s=search_time,
                              droplet_wall_s=droplet_wall, measured=self.engine.count - self.baseline,
                              notes=[self.note] if self.note else [], run_id=self.run_id,
                              isa=other_isa.summary(results, self.unit, self.native), **self._evaluate(variants))

    def _native(self, best: dict[str, Winner]) -> dict[str, Winner] | None:
        """The native search (schedb.pipeline.native) on the tasks whose winner is of another
        vector ISA -> ``best`` with the choices it made (None: it did not run or changed nothing)."""
        self.native = native_search(self.store, self.model, self.target, [c.result for c in self.contexts],
                                    self.opts.native, self.opts.bind_params, self.time_left(), self.on_phase)
        if self.native is None:
            return None
        out, changed, by_name = dict(best), False, {c.task.name: c for c in self.contexts}
        for name, chosen in self.native.chosen.items():
            ctx, rid = by_name.get(name), chosen["record_id"]
            if ctx is None:
                continue
            had = ctx.result.refined_record_id or ctx.result.record_id
            ctx.result.native_us, ctx.result.native_record_id = chosen["chosen_us"], rid
            before = self.store.choices.measured(ctx.workload_id, self.target_key).get(had)
            ctx.result.native_from_us = None if before is None else before * 1e6
            if rid == had:
                continue
            if rid is None:  # the untuned kernel beat them all
                out.pop(name, None)
                changed = True
                continue
            r = apply_trace(json.loads(self.store.records.get(rid)["trace"]), ctx.task.func, self.target)
            if r.ok:
                out[name], changed = Winner(r.trace, [chosen["chosen_us"] * 1e-6], rid), True
        return out if changed else None

    def _evaluate(self, variants: dict) -> dict:
        """Compile the model the user gets (the last variant), which ends the search's wall time;
        then, unless e2e_repeat is 0, compile the others and time them all interleaved with
        PyTorch. -> the TransferReport fields of both phases."""
        final = list(variants)[-1]
        compiled = compile_variants(self.lowered, self.target, self.tasks, {final: variants[final]}, self.on_phase)
        out = {"search_wall_s": time.perf_counter() - self.t_begin, "e2e_wall_s": None, "e2e": {},
               "load_average": {}}
        if self.opts.e2e_repeat > 0:
            t0 = time.perf_counter()
            compiled |= compile_variants(self.lowered, self.target, self.tasks,
                                         {n: w for n, w in variants.items() if n != final}, self.on_phase)
            out["e2e"], out["load_average"] = time_interleaved(self.lowered, {n: compiled[n] for n in variants},
                                                               self.opts.e2e_repeat, self.on_phase)
            out["e2e_wall_s"] = time.perf_counter() - t0
        out["check"] = {n: compiled[n].check() for n in variants if n in compiled}
        return out

    def _search(self, progress) -> tuple[list[TaskResult], dict[str, Winner], list[tuple[TaskContext, Winner]]]:
        """Every task in turn: (results, winners by task name, (context, winner) of the tasks with one)."""
        results: list[TaskResult] = []
        transferred: dict[str, Winner] = {}
        found: list[tuple[TaskContext, Winner]] = []
        with phase(self.on_phase, f"searching {len(self.tasks)} tasks"):
            for n, task in enumerate(self.tasks):
                ctx = self._context(task)
                self.contexts.append(ctx)
                win = self._search_task(ctx, len(self.tasks) - n) or self._sample(ctx)
                if win is not None:
                    transferred[task.name] = win
                    found.append((ctx, win))
                ctx.result.search_time_s = round(time.perf_counter() - ctx.started, 3)
                results.append(ctx.result)
                if progress:
                    progress(n + 1, len(self.tasks), ctx.result)
        return results, transferred, found

    def _context(self, task: Task) -> TaskContext:
        with self.store.transaction():
            wid, sig, kind, desc = commit_mod(self.store, task.func)
            self.store.models.add_task(self.model_id, wid, task.name, task.weight)
        return TaskContext(task, wid, sig, kind, desc, TaskResult(task.name, task.weight, wid, "untuned"))

    def _search_task(self, ctx: TaskContext, tasks_left: int) -> Winner | None:
        """Replay and measure the candidates the task's share of the time left pays for (all
        without a budget) and the untuned kernel; commit and return the fastest candidate if
        it beats untuned."""
        res = ctx.result
        candidates = self._candidates(ctx)
        elapsed, measured = time.perf_counter() - self.t_start, self.engine.count
        replayed = []
        for cand in candidates[:paced(len(candidates), self.time_left(), tasks_left,
                                      elapsed / measured if measured else None)]:
            left = self.trials_left()
            if left is not None and len(replayed) >= left or self.time_left() == 0:
                res.reason = "search budget spent"
                break
            r = apply_trace(cand.trace, ctx.task.func, self.target)
            if r.ok:
                replayed.append((cand, r))
                replayed += self._adapted(ctx, cand, r)
            else:
                res.failed += 1
                if cand.source == "exact":  # its own workload: the record itself is broken
                    self.store.records.mark_invalid([cand.row["id"]], f"does not replay: {r.error}")
        res.candidates = len(candidates)
        untuned, ranked = self._beside_untuned(ctx, [r.mod for _, r in replayed])
        res.untuned_us = _us(untuned)
        ranked = [(m, *replayed[i]) for m, i in ranked]
        # The task's own records that ran (exact matches), beside its untuned kernel.
        ctx.contenders = [contender(None, untuned)] + [contender(c.row["id"], m) for m, c, _ in ranked
                                                         if c.source == "exact"]
        if not ranked:
            res.reason = res.reason or (f"all {res.candidates} candidates failed" if res.candidates
                                        else "no candidates")
            return None
        if untuned.ok and untuned.mean <= ranked[0][0].mean:
            res.reason = f"untuned kernel fastest ({res.untuned_us:.1f} us vs {ranked[0][0].mean * 1e6:.1f} us)"
            return None
        plain = other_isa.task_fields(res, ranked, untuned, self.unit)
        if plain is not None:
            ctx.unadapted = Winner(plain[1].trace, plain[0].samples, None)
        m, cand, r = ranked[0]
        res.source, res.reason = cand.source, None
        res.source_record_id, res.source_workload_id = cand.row["id"], cand.row["workload_id"]
        res.distance, res.source_target = cand.distance, cand.row["target"]
        res.source_model = self.store.models.name_of(cand.row["model_id"])
        res.transferred_us = m.mean * 1e6
        res.record_id = self._commit(ctx, r.trace, m, "transferred", cand.row["id"])
        ctx.contenders.append(contender(res.record_id, m))
        ctx.starts = [x[2].trace for x in ranked[:3]]
        return Winner(r.trace, m.samples, res.record_id)

    def _adapted(self, ctx: TaskContext, cand: Candidate, r) -> list:
        """[(candidate, replayed)] of ``cand``, as ``r`` replayed it, adapted to this target's
        vector unit: nothing when it is of this ISA, nothing changes, or adapting is off."""
        if not self.opts.adapt_isa or other_isa.other_isa(cand.row["target"], self.unit) is None:
            return []
        twin = other_isa.adapted_twin(r, cand.row["target"], self.unit, ctx.task.func, self.target)
        if twin is None:
            return []
        if not twin[1].ok:
            ctx.result.failed += 1
            return []
        return [(Candidate(cand.row, cand.distance, cand.source, twin[0], adapted=True), twin[1])]

    def _sample(self, ctx: TaskContext) -> Winner | None:
        """Nothing transferred beats the untuned kernel: a few schedules from MetaSchedule's
        own design space, measured beside it (charged to the trial and time budgets)."""
        res, left = ctx.result, self.trials_left()
        n = self.opts.search_trials if left is None else min(self.opts.search_trials, left)
        if n <= 0 or self.time_left() == 0:
            return None
        try:
            schedules = sample_schedules(ctx.task.func, self.target, n, self.opts.seed)
        except SchedbError as e:
            res.reason = f"{res.reason}; {e}"
            return None
        res.searched = len(schedules)
        untuned, ranked = self._beside_untuned(ctx, [s.mod for s in schedules])
        ranked = [(m, schedules[i]) for m, i in ranked]
        if not ranked or untuned.ok and untuned.mean <= ranked[0][0].mean:
            res.reason = f"{res.reason}; {len(schedules)} sampled schedules no faster"
            return None
        m, sch = ranked[0]
        res.source, res.reason = "searched", None
        res.untuned_us = _us(untuned)  # measured beside the winner
        res.transferred_us = m.mean * 1e6
        res.record_id = self._commit(ctx, sch.trace, m, "tuned", None)
        ctx.contenders = [contender(None, untuned), contender(res.record_id, m)]
        ctx.starts = [s.trace for _, s in ranked[:3]]
        return Winner(sch.trace, m.samples, res.record_id)

    def _beside_untuned(self, ctx: TaskContext, mods: list) -> tuple[Measurement, list]:
        """Measure ``mods`` and the task's untuned kernel in one call, so the same load falls
        on both: (untuned, [(measurement, index into mods)] of those that ran, fastest first).
        Failures are counted in the task's result."""
        measured = self.engine.measure([ctx.task.func] + mods)
        self.baseline += 1
        untuned = measured[0]
        ctx.result.failed += sum(not m.ok for m in measured[1:])
        return untuned, sorted(((m, i) for i, m in enumerate(measured[1:]) if m.ok), key=lambda x: x[0].mean)

    def _candidates(self, ctx: TaskContext) -> list[Candidate]:
        """Exact matches (of any target: measured here like every other candidate, never
        trusted); where there are none, or all are of another vector ISA, also records of
        the nearest workloads of the same kind, else of the nearest with the same anchor
        (retargeted to the task). One run's records of a workload tend to share a tiling, so
        adapting them alone to another ISA explores little; other workloads' records bring
        other tilings to adapt."""
        opts = self.opts
        exact = [Candidate(r, 0.0, "exact", json.loads(r["trace"]))
                 for r in self.store.records.top(ctx.workload_id, self.target_key, opts.k * opts.per_source,
                                                 self.allowed, opts.max_distance)]
        if exact and not (opts.adapt_isa and all(other_isa.other_isa(c.row["target"], self.unit) for c in exact)):
            return exact
        res = ctx.result
        neighbors = [nb for nb in self.index.neighbors(ctx.desc, ctx.kind, opts.k) if nb.workload_id != ctx.workload_id]
        source = "neighbor"
        anchor = anchor_of(ctx.desc) if not neighbors else None
        if anchor is not None:
            neighbors = [nb for nb in self.anchor_index().neighbors(ctx.desc, anchor, opts.k)
                         if nb.workload_id != ctx.workload_id]
            source = "anchor"
        if not neighbors:
            if not exact:
                res.reason = no_candidates(self.store, self.opts, self.target_key, ctx.kind, anchor)
            return exact
        out = exact
        for nb in neighbors:
            src = self.store.workloads.get(nb.workload_id) if source == "anchor" else None
            src_desc = json.loads(src["description"]) if src else None
            for r in self.store.records.top(nb.workload_id, self.target_key, opts.per_source, self.allowed,
                                            opts.max_distance):
                trace = json.loads(r["trace"])
                if source == "anchor":
                    try:
                        trace = retarget(trace, ctx.task.func, src_desc)
                    except Exception:  # TVM's error types; the candidate just does not apply
                        res.failed += 1
                        continue
                out.append(Candidate(r, nb.distance, source, trace))
        return out

    def _refine(self, found: list[tuple[TaskContext, Winner]], searched_s: float) -> dict[str, Winner]:
        """Droplet search from each task's best transferred traces, within one budget
        (``droplet_trials`` per task on average, capped by the trials and time left and by
        ``droplet_share`` x ``searched_s``, the search so far) that schedb.search.allocate
        spends where weight x kernel time is largest; commits and returns the accepted
        improvements by task name."""
        left, trials = self.trials_left(), self.opts.droplet_trials * len(found)
        share = self.opts.droplet_share
        caps = [s for s in (self.time_left(), None if share is None else share * searched_s) if s is not None]
        alloc = Allocator(trials if left is None else min(trials, left), min(caps) if caps else None)
        searches, params = {}, DropletParams(pvalue=self.opts.pvalue, seed=self.opts.seed)
        for ctx, win in found:
            searches[ctx.task.name] = Droplet(ctx.starts, ctx.task.func, self.target, self.engine, params,
                                              start_samples=win.samples)
            alloc.add(ctx.task.name, ctx.task.weight, sum(win.samples) / len(win.samples))
        outcome = spend(searches, alloc)
        refined = {}
        for ctx, win in found:
            out, res = outcome.get(ctx.task.name), ctx.result
            if out is None:
                continue
            res.droplet_trials, res.refined_pvalue, res.refined_accepted = out.trials, out.pvalue, out.accepted
            res.droplet_speedup = out.speedup
            res.search_time_s = round(res.search_time_s + out.elapsed, 3)
            if not out.accepted:
                res.refined_us = res.transferred_us  # keep the transfer
                continue
            m = Measurement(out.best_samples)
            res.refined_us = m.mean * 1e6
            res.refined_record_id = self._commit(ctx, out.best_trace, m, "droplet", win.record_id, out.elapsed)
            # Decided by droplet's head-to-head: the transferred kernel against the refined one.
            ctx.contenders = [contender(win.record_id, Measurement(out.start_samples)),
                              contender(res.refined_record_id, m)]
            refined[ctx.task.name] = Winner(out.best_trace, m.samples, res.refined_record_id)
        return refined

    def _record_choices(self) -> None:
        """Each task's verdict as its standing choice for this target: the refined record, else
        the transferred one, else the untuned kernel (schedb.Database serves it). Only where
        something ran beside the untuned kernel: a task the budget ran out on has no verdict."""
        with self.store.transaction():
            for ctx in self.contexts:
                if len(ctx.contenders) > 1:
                    res = ctx.result
                    self.store.choices.record(ctx.workload_id, self.target_key, res.refined_record_id or res.record_id,
                                             ctx.contenders)

    def _commit(self, ctx: TaskContext, trace, m: Measurement, origin: str, parent: int,
                search_time: float | None = None) -> int:
        """Commit a winner of this task; its search time is the task's so far unless given."""
        res = ctx.result
        spent = time.perf_counter() - ctx.started if search_time is None else search_time
        with self.store.transaction():
            return commit_trace(self.store, ctx.workload_id, ctx.signature, self.target_key, trace, m.samples, origin,
                                parent_id=parent, source_workload_id=res.source_workload_id,
                                distance=res.distance, search_time_s=round(spent, 3), model_id=self.model_id,
                                run_id=self.run_id)


def allowed_models(store: Store, opts: Options) -> list[int] | None:
    """Ids of the models ``sources`` and ``exclude`` leave (None: every model)."""
    if not opts.sources and not opts.exclude:
        return None
    keep = [n for n in store.models.names() if (not opts.sources or n in opts.sources) and n not in opts.exclude]
    return [store.models.id_of(n) for n in keep]


def no_candidates(store: Store, opts: Options, target_key: str, kind: str, anchor: str | None) -> str:
    """Why a task has no candidate: never blame the kind when it is tuned for another target."""
    reason = f"no tuned workload of kind {kind}" + (f" or anchor {anchor}" if anchor else "")
    tuned_for = store.records.target_counts(kind)
    if not tuned_for:
        return reason
    if opts.sources or opts.exclude:
        return reason + " from the models allowed (`sources` / `exclude`)"
    where = ", ".join(label(t) for t in tuned_for if t != target_key)
    if opts.same_target_only:
        return f"kind {kind} is tuned only for other targets ({where}), left out by `same_target_only`"
    return f"kind {kind} is tuned only for targets of another kind ({where})"


def _names(store: Store, model_ids: list[int] | None) -> list[str] | None:
    """The names of models given by id (None: every model), for a run row's ``sources``."""
    return None if model_ids is None else [store.models.name_of(i) for i in model_ids]


def _unadapted(contexts: list[TaskContext], best: dict[str, Winner]) -> dict[str, Winner]:
    """``best`` with each adapted winner replaced by the fastest record as tuned measured beside
    it (none: the untuned kernel)."""
    out = dict(best)
    for ctx in contexts:
        if ctx.result.isa_adapted:
            out.pop(ctx.task.name, None)
            if ctx.unadapted is not None:
                out[ctx.task.name] = ctx.unadapted
    return out


def paced(wanted: int, left_s: float | None, tasks_left: int, module_s: float | None) -> int:
    """How many of a task's ``wanted`` candidates its share of the time left (``left_s`` over
    ``tasks_left`` tasks, this one included) pays for, when a measured module (a candidate or
    the untuned kernel) has cost ``module_s`` seconds so far: at least one, so that a tight
    budget is spread over every task rather than spent on the first ones (None: no budget
    or no cost known yet, all of them)."""
    if left_s is None or module_s is None or wanted == 0:
        return wanted
    return max(1, min(wanted, int(left_s / tasks_left / module_s) - 1))


def _us(m: Measurement) -> float | None:
    return m.mean * 1e6 if m.ok else None
