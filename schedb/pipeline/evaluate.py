"""Evaluate: a whole model compiled with the schedules of a database, checked and timed.

The last stage of the pipeline: take the chosen schedules (any MetaSchedule
``Database``: a JSON work dir, or a schedb database), build the Relax module,
compare its output with the framework's, and time it end to end next to PyTorch.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from schedb.errors import SchedbError
from schedb.pipeline.phases import phase
from schedb.tir.target import host_cores
from schedb.tir.tasks import LoweredModel

# The report's timing: the untuned model, when over SLOW_X times every other variant (70x
# for a transferred googlenet), is timed in the first SLOW_ROUNDS rounds only.
SLOW_X, SLOW_ROUNDS = 10.0, 3


@dataclass
class Latency:
    """End-to-end latency in milliseconds over ``len(samples)`` repeats."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        """Interquartile range (25th, 75th percentile)."""
        q = np.percentile(self.samples, [25, 75])
        return float(q[0]), float(q[1])

    def as_dict(self) -> dict:
        lo, hi = self.spread
        return {"median_ms": self.median, "p25_ms": lo, "p75_ms": hi, "samples_ms": self.samples}


@dataclass
class Compiled:
    vm: object
    max_abs_err: float
    max_rel_err: float
    tuned_tasks: int  # how many kernels came from the database

    def as_dict(self):
        # Not dataclasses.asdict: it would deep-copy (serialize) the VM.
        return {"max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "tuned_tasks": self.tuned_tasks}

    def check(self) -> dict:
        """The output check as a transfer report gives it."""
        return {"max_abs_err": self.max_abs_err, "kernels_scheduled": self.tuned_tasks}


def apply_database(mod, target, database):
    """Replace every kernel that ``database`` has a schedule for (count_scheduled counts them)."""
    from tvm import relax

    with target, database:
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)


def count_scheduled(mod) -> int:
    from tvm import tirx

    return sum(
        1 for _, f in mod.functions.items()
        if isinstance(f, tirx.PrimFunc) and f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)
    )


def compile_model(lowered: LoweredModel, target, database=None, rtol=1e-3, atol=1e-3) -> Compiled:
    """Build ``lowered`` (with ``database``'s schedules, if given) and check it against
    the framework's own output on the same inputs."""
    import tvm
    from tvm import relax

    mod = lowered.mod
    if database is not None:
        mod = apply_database(mod, target, database)
    tuned = count_scheduled(mod)
    ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(x) for x in lowered.vm_inputs()]
    out = vm["main"](*args)
    got = _first(out).numpy()
    want = lowered.model.reference(lowered.model.inputs)
    if got.shape != want.shape:
        raise SchedbError(f"compiled model returns shape {got.shape}, framework {want.shape}")
    abs_err = float(np.max(np.abs(got - want))) if got.size else 0.0
    rel_err = abs_err / max(float(np.max(np.abs(want))), 1e-12)
    if not np.allclose(got, want, rtol=rtol, atol=atol * max(1.0, float(np.max(np.abs(want))))):
        raise SchedbError(
            f"compiled model does not match the framework: max abs error {abs_err:.3g} "
            f"(relative {rel_err:.3g})"
        )
    return Compiled(vm, abs_err, rel_err, tuned)


def _first(out):
    import tvm

    while not isinstance(out, tvm.runtime.Tensor):
        out = out[0]
    return out


def time_vm(compiled: Compiled, lowered: LoweredModel, repeat: int = 10, number: int = 1) -> Latency:
    import tvm

    args = [tvm.runtime.tensor(x) for x in lowered.vm_inputs()]
    f = compiled.vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat, min_repeat_ms=0)
    return Latency([s * 1e3 for s in f(*args).results])


def time_torch(lowered: LoweredModel, repeat: int = 10, threads: int | None = None) -> Latency | None:
    """PyTorch eager on the same machine and input (zoo and .py models only)."""
    import torch

    module = lowered.model.torch_module
    if module is None:
        return None
    torch.set_num_threads(threads or host_cores())
    xs = [torch.from_numpy(x) for x in lowered.model.inputs]
    samples = []
    with torch.no_grad():
        module(*xs)  # warm-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            module(*xs)
            samples.append((time.perf_counter() - t0) * 1e3)
    return Latency(samples)


def winners_database(tasks, winners: dict, target):
    """A MetaSchedule MemoryDatabase holding exactly the chosen schedule of each task
    (``winners``: task name -> an object with ``trace`` and ``samples``)."""
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


def compile_variants(lowered: LoweredModel, target, tasks, variants: dict, on_phase=None) -> dict:
    """Compile the model once per variant (name -> winners, None: untuned) -> {name: Compiled};
    compile_model checks each against the framework's output. ``on_phase``: schedb.pipeline.phases."""
    compiled = {}
    for name, winners in variants.items():
        db = winners_database(tasks, winners, target) if winners is not None else None
        with phase(on_phase, f"compiling {name}"):
            compiled[name] = compile_model(lowered, target, db)
    return compiled


def interleaved_samples(lowered: LoweredModel, compiled: dict, rounds: int, with_torch: bool = False,
                        on_round=None, baseline: str | None = None) -> dict[str, list[float]]:
    """{name: samples in ms}: one run of every compiled variant (and of PyTorch eager as
    "pytorch") per round, round after round, so that load on the machine falls on all
    alike. ``on_round(i)`` after each round. ``baseline``: a variant (the untuned model) that
    stops after SLOW_ROUNDS rounds when its median is over SLOW_X times every other's (its
    second per run was most of a transfer's timing, and its ratio is not in question)."""
    samples: dict = {name: [] for name in [*compiled, *(["pytorch"] if with_torch else [])]}
    timed = list(compiled)
    for i in range(rounds):
        if i == SLOW_ROUNDS and baseline in timed and _far_slower(samples, baseline, compiled):
            timed.remove(baseline)
        for name in timed:
            samples[name] += time_vm(compiled[name], lowered, repeat=1).samples
        if with_torch:
            samples["pytorch"] += time_torch(lowered, repeat=1).samples
        if on_round:
            on_round(i)
    return samples


def _far_slower(samples: dict, baseline: str, compiled: dict) -> bool:
    others = [statistics.median(samples[name]) for name in compiled if name != baseline]
    return bool(others) and statistics.median(samples[baseline]) > SLOW_X * max(others)


def time_interleaved(lowered: LoweredModel, compiled: dict, repeat: int = 10, on_phase=None) -> tuple[dict, dict]:
    """Time every compiled variant and PyTorch eager interleaved, one run of each per round, so
    that load on the machine falls on all alike. (Timed one after the other, PyTorch came last,
    alone in whatever load the end of the run had; with another job on a core of 2, googlenet
    took 1.9 s with PyTorch's 2 OpenMP threads against 0.15 s with one.)
    The untuned model, when over SLOW_X times every other variant, runs in SLOW_ROUNDS rounds only.
    -> ({name: Latency dict}, {"before", "after": the load average (1, 5, 15 min) around the
    timing}). ``on_phase``: schedb.pipeline.phases."""
    with_torch = lowered.model.torch_module is not None
    names = [*compiled, *(["pytorch"] if with_torch else [])]
    load = {"before": list(os.getloadavg())}
    with phase(on_phase, f"timing {', '.join(names)} interleaved, {repeat} rounds"):
        samples = interleaved_samples(lowered, compiled, repeat, with_torch, baseline="untuned")
    load["after"] = list(os.getloadavg())
    e2e = {name: Latency(s).as_dict() for name, s in samples.items()}
    e2e.setdefault("pytorch", None)
    return e2e, load


def end_to_end(lowered: LoweredModel, target, tasks, variants: dict, repeat: int = 10,
               on_phase=None) -> tuple[dict, dict, dict]:
    """compile_variants, then time_interleaved: -> ({name: Latency dict}, {name: output check},
    the load average around the timing)."""
    compiled = compile_variants(lowered, target, tasks, variants, on_phase)
    e2e, load = time_interleaved(lowered, compiled, repeat, on_phase)
    return e2e, {name: c.check() for name, c in compiled.items()}, load


def open_schedules(path, target=None):
    """A MetaSchedule database for a work dir or a schedb database file (whose records of
    ``target`` come first, then those of the closest targets)."""
    from pathlib import Path

    from schedb.ingest.workdir import open_workdir

    p = Path(path)
    if p.is_dir():
        return open_workdir(p)
    from schedb.store.database import Database

    return Database(p, target=target)
