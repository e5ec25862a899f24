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


def lower(model: Model, target, bind_params: bool = True) -> LoweredModel:
    """torch / ONNX -> Relax, legalized to TIR, ready for task extraction or compile.

    ``bind_params`` (the default, an inference build): the weights become constants and
    whatever is computed from constants alone is folded at compile time (weight
    transposes and reshapes, batch-norm scales), so it never runs per inference.
    Otherwise the weights stay runtime inputs of ``main``, for a model whose weights
    change after it is compiled."""
    import tvm
    from tvm import relax

    mod, params = model.to_relax()
    if bind_params and params:
        weights = mod["main"].params[len(model.inputs):]
        mod = relax.transform.BindParams("main", {v: tvm.runtime.tensor(a) for v, a in zip(weights, params)})(mod)
        params = []
    fold = [relax.transform.FoldConstant()] if bind_params else []
    with target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                *fold,
                relax.get_pipeline("zero"),
                *fold,  # again: legalized constant subgraphs fold only now
            ]
        )(mod)
    return LoweredModel(model, mod, params)


def extract_tasks(lowered: LoweredModel, target) -> list[Task]:
    from tvm.s_tir import meta_schedule as ms

    out = []
    for t in ms.relax_integration.extract_tasks(lowered.mod, target):
        out.append(Task(t.task_name, int(t.weight), t.dispatched[0], t))
    return out
