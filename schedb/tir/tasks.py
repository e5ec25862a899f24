"""Tasks: a model's Relax module lowered to the TIR kernels that MetaSchedule tunes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type hint only: importing models imports torch
    from schedb.models import Model


@dataclass
class Task:
    name: str
    weight: int  # how often the kernel occurs in the model
    func: object  # the TIR PrimFunc (as an IRModule with one "main")
    extracted: object  # ms.ExtractedTask, for TVM APIs that want it


@dataclass
class LoweredModel:
    model: Model
    mod: object  # Relax IRModule after the "zero" pipeline
    params: list  # numpy arrays main takes after the data inputs ([] when bound as constants)

    def vm_inputs(self):
        return [*self.model.inputs, *self.params]


def lower(model: Model, target, bind_params: bool = True, conv_block: int | None = None) -> LoweredModel:
    """torch / ONNX -> Relax, legalized to TIR, ready for task extraction or compile.

    ``bind_params`` (the default, an inference build): the weights become constants and
    whatever is computed from constants alone is folded at compile time (weight
    transposes and reshapes, batch-norm scales), so it never runs per inference.
    Otherwise the weights stay runtime inputs of ``main``, for a model whose weights
    change after it is compiled.

    ``conv_block``: convolutions in the blocked layout oneDNN uses (data NCHW{b}c, weights
    OIHW{b}i{b}o, repacked at compile time when the weights are bound), legalized by TOPI's conv2d_NCHWc; a conv whose
    channels do not divide into blocks keeps its layout. Their workloads differ from the
    plain layout's, so records of the one do not serve the other."""
    import tvm
    from tvm import relax

    mod, params = model.to_relax()
    if bind_params and params:
        weights = mod["main"].params[len(model.inputs):]
        mod = relax.transform.BindParams("main", {v: tvm.runtime.tensor(a) for v, a in zip(weights, params)})(mod)
        params = []
    fold = [relax.transform.FoldConstant()] if bind_params else []
    blocked = [] if conv_block is None else [
        relax.transform.ConvertLayout({"relax.nn.conv2d": [f"NCHW{conv_block}c", f"OIHW{conv_block}i{conv_block}o"]}),
        relax.transform.LegalizeOps({"relax.nn.conv2d": _conv2d_nchwc}), *fold]
    with target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                *fold,
                *blocked,
                relax.get_pipeline("zero"),
                *fold,  # again: legalized constant subgraphs fold only now
            ]
        )(mod)
    return LoweredModel(model, mod, params)


def _conv2d_nchwc(bb, call):
    """A conv2d that ConvertLayout blocked, legalized by TOPI's conv2d_NCHWc (the default
    legalization knows only NCHW/NHWC); one it left as it was, by the default."""
    import re

    from tvm import topi

    a = call.attrs
    if not re.fullmatch(r"NCHW\d+c", a.data_layout):
        return call
    out_dtype = str(a.out_dtype) if str(a.out_dtype) not in ("", "void") else call.struct_info.dtype
    return bb.call_te(topi.nn.conv2d_NCHWc, call.args[0], call.args[1], a.strides, a.padding, a.dilation,
                      a.data_layout, a.out_layout, out_dtype, primfunc_name_hint="conv2d_NCHWc")


def extract_tasks(lowered: LoweredModel, target) -> list[Task]:
    from tvm.s_tir import meta_schedule as ms

    out = []
    for t in ms.relax_integration.extract_tasks(lowered.mod, target):
        out.append(Task(t.task_name, int(t.weight), t.dispatched[0], t))
    return out


def task_cost(task: Task) -> float:
    """A task's share of the model's latency, estimated without measuring: its weight x
    TVM's FLOP estimate of the kernel (at least 1, so a data-movement kernel counts too).
    The same on every machine for the same model, so n machines can split the tasks alike."""
    from tvm.s_tir.analysis import estimate_tir_flops

    return task.weight * max(float(estimate_tir_flops(task.func)), 1.0)


def shards(tasks: list[Task], n: int, cost=task_cost) -> list[list[Task]]:
    """The tasks in ``n`` disjoint shards of equal task counts (to one) and about equal
    estimated cost: the costliest first, each into the shard with the least cost so far
    among those not yet holding their share of the tasks (ties: the lower shard, the
    earlier task). The counts matter as much as the cost: with a per-task trial budget a
    task takes about the same tuning time whatever its kernel, and one heavy task would
    otherwise get a machine to itself while others tune many. The split depends only on
    the tasks (the same on every machine); each shard keeps the model's task order."""
    costs = [cost(t) for t in tasks]
    load, size, owner = [0.0] * n, [0] * n, [0] * len(tasks)
    cap = -(-len(tasks) // n)  # the largest share; ``big`` shards get it, the others one less
    big = len(tasks) - n * (cap - 1)
    for i in sorted(range(len(tasks)), key=lambda i: (-costs[i], i)):
        limit = cap - (sum(s == cap for s in size) == big)
        owner[i] = min((b for b in range(n) if size[b] < limit), key=lambda b: (load[b], b))
        load[owner[i]] += costs[i]
        size[owner[i]] += 1
    return [[t for i, t in enumerate(tasks) if owner[i] == b] for b in range(n)]


def select_tasks(tasks: list[Task], spec: str | None, cost=task_cost) -> list[Task]:
    """The tasks ``spec`` names: ``i/n`` is shard i (1 to n) of :func:`shards`; anything
    else is comma-separated fnmatch patterns of task names (``fused_conv2d*,*dense*``).
    None: all of them."""
    import fnmatch
    import re

    from schedb.errors import SchedbError

    if spec is None:
        return list(tasks)
    if m := re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec):
        i, n = int(m[1]), int(m[2])
        if not 1 <= i <= n:
            raise SchedbError(f"`tasks` {spec!r}: a shard i/n needs 1 <= i <= n")
        return shards(tasks, n, cost)[i - 1]
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [t for t in tasks if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(t.name for t in tasks[:6]) + (", ..." if len(tasks) > 6 else "")
        raise SchedbError(f"`tasks` {spec!r} matches none of the model's {len(tasks)} tasks ({names})")
    return chosen
