"""Kernels of a model, one at a time: the heaviest tasks, MetaSchedule on one task in its
own work dir, a built kernel timed sample by sample, and the same layer in PyTorch eager.
Shared by the kernel-level benchmarks (prepack, ceiling, deep, warm)."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from shared import SETTLE_S

LF = "layout_free_buffers"
# A file holding the process group id of background work (a long tuning run) that is
# stopped while kernels are timed: the run writes it, the timing reads it.
PAUSE_ENV = "SCHEDB_BENCH_PAUSE"


def heaviest_tasks(tasks, top: int) -> list:
    """The ``top`` tasks by weight x FLOPs, the heaviest first: which kernels every
    kernel-level benchmark looks at."""
    from tvm.s_tir.analysis import estimate_tir_flops

    return sorted(tasks, key=lambda t: -t.weight * estimate_tir_flops(t.func))[:top]


def select(model: str, target, top: int) -> list[dict]:
    """The ``top`` heaviest kernels by weight x FLOPs, each with its plain task and the
    same kernel extracted after AttachAttrLayoutFreeBuffers (matched by structure)."""
    import tvm_ffi
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    from schedb import extract_tasks, load_model, lower

    m = load_model(model)
    lowered = lower(m, target)
    plain = extract_tasks(lowered, target)
    with target:
        marked_mod = relax.transform.AttachAttrLayoutFreeBuffers()(lowered.mod)
    marked = ms.relax_integration.extract_tasks(marked_mod, target)
    ranked = heaviest_tasks(plain, top)
    out = []
    for rank, t in enumerate(ranked):
        f = t.func["main"]
        match = []
        for x in marked:
            g = x.dispatched[0]["main"]
            lf = g.attrs.get(LF) if g.attrs is not None else None
            if lf is not None and tvm_ffi.structural_equal(g.without_attr(LF), f):
                match.append((x, [int(i) for i in lf]))
        if len(match) != 1:
            raise SystemExit(f"{model}: {t.name} has {len(match)} layout-free counterparts")
        x, lf = match[0]
        shapes = [[int(d) for d in a.shape] for a in ms.arg_info.ArgInfo.from_prim_func(f)]
        out.append({"model": model, "rank": rank, "task": t.name, "marked_task": x.task_name, "weight": t.weight,
                    "flops": float(estimate_tir_flops(t.func)), "arg_shapes": shapes, "layout_free": lf,
                    "_plain": t.extracted, "_marked": x, "_torch": m.torch_module,
                    "_input_shape": list(m.inputs[0].shape)})
    return out


BLOCK = 16  # channels per block of the blocked layout: one AVX-512 vector of float32


def blocked_tasks(model, target, chosen: list[dict]) -> None:
    """Each chosen kernel's counterpart with its convolution in the blocked layout oneDNN
    uses (``lower(..., conv_block=BLOCK)``: data NCHW16c, weights OIHW16i16o folded into
    constants, prepacked at compile time), as ``k["_blocked"]``, matched by what it computes.
    A conv whose channels do not divide into blocks stays as it was (its counterpart is itself)."""
    from schedb import extract_tasks, lower

    blocked = [t.extracted for t in extract_tasks(lower(model, target, conv_block=BLOCK), target)]
    for k in chosen:
        match = [x for x in blocked if _footprint(x.dispatched[0]) == _footprint(k["_plain"].dispatched[0])]
        if len(match) != 1:
            raise SystemExit(f"{k['model']}: {k['task']} has {len(match)} blocked counterparts")
        k["_blocked"] = match[0]


def _footprint(mod) -> tuple:
    """What a kernel computes, whatever its layout: its FLOPs and each argument's element count."""
    import math

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    return (round(float(estimate_tir_flops(mod))),
            tuple(math.prod(int(d) for d in a.shape) for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])))


def tune_one(extracted, work_dir: Path, trials: int, per_iter: int, seed: int, builder, reuse=False, more=False):
    """MetaSchedule on one task, in its own work dir: -> (best schedule, its record's
    run_secs, valid records, seconds). ``reuse``: a work dir with records is read, not tuned;
    ``more``: ``trials`` more, the search starting from the records already there."""
    from tvm.s_tir import meta_schedule as ms

    from schedb.search.measure import make_runner

    if reuse and (work_dir / "database_tuning_record.json").is_file():
        db, wall = ms.database.JSONDatabase(work_dir=str(work_dir)), None
        return _best(db, extracted, trials, per_iter) + (wall,)
    work_dir.mkdir(parents=True, exist_ok=more)
    ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts([extracted], work_dir=str(work_dir),
                                                                          seed=seed)
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    t0 = time.perf_counter()
    ms.tune_tasks(tasks=ctxs, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                  max_trials_per_task=trials, num_trials_per_iter=min(per_iter, trials), builder=builder,
                  runner=make_runner("local", number=3, repeat=1, min_repeat_ms=50), database=db)
    wall = time.perf_counter() - t0
    return _best(db, extracted, trials, per_iter) + (wall,)


def _best(db, extracted, trials, per_iter):
    func = extracted.dispatched[0]
    top = db.get_top_k(db.commit_workload(func), trials + per_iter)
    if not top:
        raise RuntimeError(f"{extracted.task_name}: no valid schedule in {trials} trials")
    sch = db.query_schedule(func, extracted.target, workload_name="main")
    return sch, [float(s) for s in top[0].run_secs], len(top)


class Kernel:
    """A built kernel with its arguments, timed one sample at a time."""

    def __init__(self, mod, target, args_info, min_ms: float):
        import tvm
        from tvm.driver import build as tvm_build

        self.mod = mod
        self.lib = tvm_build(mod, target=target)
        rng = np.random.default_rng(0)
        self.args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in a.shape]).astype(str(a.dtype)))
                     for a in args_info]
        self.f = self.lib.time_evaluator("main", tvm.cpu(), number=1, repeat=1, min_repeat_ms=int(min_ms))

    def run(self):
        self.lib["main"](*self.args)
        return self.args[-1].numpy()

    def sample_us(self) -> float:
        return float(self.f(*self.args).mean) * 1e6


def plain_kernel(mod, target, min_ms: float) -> Kernel:
    from tvm.s_tir import meta_schedule as ms

    return Kernel(mod, target, ms.arg_info.ArgInfo.from_prim_func(mod["main"]), min_ms)


def prepacked_kernel(mod, target, min_ms: float) -> Kernel:
    """A kernel tuned with layout-free weights, without its weight-rewrite block, called
    on the weight already in the new layout: its per-inference cost once the rewrite runs
    at load (what ``SplitLayoutRewritePreproc`` leaves in the model)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    compute = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return Kernel(compute, target, ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True), min_ms)


class TorchLayer:
    """The same layer in PyTorch eager: conv2d (shape, stride, padding of the model's own
    Conv2d with these shapes) + eval batch norm, or the conv's bias where no batch norm
    follows it (+ residual add) + ReLU, as the kernel fuses; or a Linear layer (+ ReLU)."""

    def __init__(self, k: dict, min_ms: float):
        import torch
        import torch.nn.functional as F

        self.torch, self.F, self.min_ms = torch, F, min_ms
        shapes = k["arg_shapes"]
        self.conv = k["_conv"]
        data, out = shapes[0], shapes[-1]
        weight = self.conv["weight"]  # PyTorch's own layout (a kernel may hold it transposed)
        self.residual = any(s == out for s in shapes[2:-1])
        self.relu = "relu" in k["task"]
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(data, generator=g)
        self.w = torch.randn(weight, generator=g)
        c = weight[0]
        self.bn = [torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g),
                   torch.randn(c, generator=g)] if self.conv.get("bn", True) else None
        self.bias = None if self.bn is not None else torch.randn(c, generator=g)
        self.r = torch.randn(out, generator=g) if self.residual else None
        self.number = 1
        while self._time(self.number) * 1e3 < min_ms:
            self.number *= 2

    def __call__(self):
        c, F = self.conv, self.F
        if c.get("kind") == "linear":
            y = F.linear(self.x, self.w, self.bias)
            return F.relu(y) if self.relu else y
        y = F.conv2d(self.x, self.w, self.bias, c["stride"], c["padding"], c["dilation"], c["groups"])
        if self.bn is not None:
            y = F.batch_norm(y, self.bn[0], self.bn[1], self.bn[2], self.bn[3], False, 0.0, c["eps"])
        if self.r is not None:
            y = y + self.r
        return F.relu(y) if self.relu else y

    def _time(self, n: int) -> float:
        with self.torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(n):
                self()
            return time.perf_counter() - t0

    def sample_us(self) -> float:
        self._time(1)  # warm-up, as TVM's time_evaluator runs one call before it times
        return self._time(self.number) / self.number * 1e6


TORCH = "pytorch eager"


def sample_each(pairs) -> None:
    """One sample of every (samples list, timer) pair, in order. A runtime's thread pool
    keeps spinning on the cores for a while after its run: SETTLE_S first, and again
    wherever the timer is of another runtime than the one before it. (Timed straight after
    70 TVM kernels, PyTorch ran ResNet-50's 3x3 256-channel layer at 1.0 ms a call,
    against 0.6-0.7 ms alone in a fresh process.)"""
    before = None
    for out, timer in pairs:
        if before is None or type(timer) is not type(before):
            time.sleep(SETTLE_S)
        out.append(timer.sample_us())
        before = timer


def heaviest_kernels(model, tasks, dbs: dict, target, top: int, min_ms: float) -> list[dict]:
    """The ``top`` heaviest kernels (weight x FLOPs), each built from every database's
    schedule as the model runs it (weights prepacked where the schedule rewrites their
    layout: that runs once at load) and with its PyTorch layer (None: PyTorch has no layer
    of its shapes); ``untuned_in``: the databases without a schedule for it."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    convs = torch_convs(model.torch_module, list(model.inputs[0].shape))
    out = []
    for t in heaviest_tasks(tasks, top):
        k = {"task": t.name, "weight": t.weight, "flops": float(estimate_tir_flops(t.func)),
             "arg_shapes": [[int(d) for d in a.shape] for a in ms.arg_info.ArgInfo.from_prim_func(t.func["main"])]}
        k["_conv"] = match_conv(k, convs)
        k["_built"] = {}
        for name, db in dbs.items():
            sch = db.query_schedule(t.func, target, workload_name="main")
            if sch is not None:
                k["_built"][name] = prepacked_kernel(sch.mod, target, min_ms)
        k["_built"][TORCH] = TorchLayer(k, min_ms) if k["_conv"] is not None else None
        k["untuned_in"] = [n for n in dbs if n not in k["_built"]]
        out.append(k)
    return out


def time_kernels(kernels: list[dict], rounds: int) -> None:
    """Round by round, every kernel's builds and its PyTorch layer back to back; then per
    build its GFLOP/s (FLOPs / median time) and ``of_pytorch``: the share of PyTorch's
    GFLOP/s it reaches (PyTorch's time over its own, round by round, as median_ci)."""
    import report

    for k in kernels:
        k["samples_us"] = {n: [] for n, b in k["_built"].items() if b is not None}
    for _ in range(rounds):
        sample_each((k["samples_us"][n], k["_built"][n]) for k in kernels for n in k["samples_us"])
    for k in kernels:
        s = k["samples_us"]
        k["cells_us"] = {n: report.median_ci(x) for n, x in s.items()}
        k["gflops"] = {n: k["flops"] / c["median"] / 1e3 for n, c in k["cells_us"].items()}
        if TORCH in s:
            k["of_pytorch"] = {n: report.median_ci([t / x for t, x in zip(s[TORCH], xs)])
                               for n, xs in s.items() if n != TORCH}


def torch_convs(module, example_shape) -> list[dict]:
    """Every Conv2d of the model with its input/weight/output shapes, stride and padding,
    and whether a BatchNorm2d follows it (with its eps); every Linear with its shapes."""
    import torch

    found, hooks, mods = [], [], list(module.modules())
    for i, m in enumerate(mods):
        if isinstance(m, torch.nn.Conv2d):
            bn = next((b for b in mods[i + 1:i + 2] if isinstance(b, torch.nn.BatchNorm2d)), None)

            def hook(mod, inp, out, bn=bn):
                found.append({"in": list(inp[0].shape), "weight": list(mod.weight.shape), "out": list(out.shape),
                              "stride": list(mod.stride), "padding": list(mod.padding),
                              "dilation": list(mod.dilation), "groups": mod.groups,
                              "bn": bn is not None, "eps": bn.eps if bn is not None else 1e-5})
            hooks.append(m.register_forward_hook(hook))
        elif isinstance(m, torch.nn.Linear):
            def hook(mod, inp, out):
                found.append({"kind": "linear", "in": list(inp[0].shape), "weight": list(mod.weight.shape),
                              "out": list(out.shape), "bn": False})
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        module.eval()(torch.zeros(example_shape))
    for h in hooks:
        h.remove()
    return found


def match_conv(k: dict, convs: list[dict]) -> dict | None:
    """The model's layer that computes this kernel: a conv2d of the same shapes (None if
    layers of these shapes differ in stride or padding), or a Linear whose weight is the
    kernel's, transposed or not."""
    s = k["arg_shapes"]
    if "matmul" in k["task"] or "dense" in k["task"]:
        lin = [c for c in convs if c.get("kind") == "linear" and c["in"] == s[0] and c["out"] == s[-1]
               and s[1] in (c["weight"], c["weight"][::-1])]
        return lin[0] if lin else None
    if "conv2d" not in k["task"]:
        return None
    convs = [c for c in convs if c.get("kind") != "linear"]
    same = [c for c in convs if c["in"] == s[0] and c["weight"] == s[1] and c["out"] == s[-1]]
    distinct = {json.dumps({x: c[x] for x in ("stride", "padding", "dilation", "groups")}) for c in same}
    return same[0] if len(distinct) == 1 else None


@contextmanager
def fixture_tuning_paused(pause: bool = True):
    """Stop the background tuning named by $SCHEDB_BENCH_PAUSE (SIGSTOP to its process group) while timing;
    SIGCONT it on the way out, whatever happens. ``pause=False``: leave it running."""
    pause_file = Path(os.environ.get(PAUSE_ENV, "")) if os.environ.get(PAUSE_ENV) else None
    pgid = int(pause_file.read_text().strip()) if pause and pause_file and pause_file.is_file() else None
    if pgid == os.getpgid(0):  # the tuning ran in this process group (one script: run, then time): it is over
        pgid = None
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGSTOP)
        except ProcessLookupError:
            pgid = None
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def resume_and_exit(signum, frame):
        if pgid is not None:
            os.killpg(pgid, signal.SIGCONT)
        raise SystemExit(128 + signum)

    for s in old:
        signal.signal(s, resume_and_exit)
    try:
        yield pgid
    finally:
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for s, h in old.items():
            signal.signal(s, h)
