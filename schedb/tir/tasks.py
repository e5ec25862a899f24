"""Tasks: a model's Relax module lowered to the TIR kernels that MetaSchedule tunes."""

from __future__ import annotations

from dataclasses import dataclass

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
    mod: object  # Relax IRModule after the "zero" pipeline: params are inputs
    params: list  # numpy arrays, in the order main takes them after the data inputs

    def vm_inputs(self):
        return [*self.model.inputs, *self.params]


def lower(model: Model, target) -> LoweredModel:
    """torch / ONNX -> Relax, legalized to TIR, ready for task extraction or compile."""
    import tvm
    from tvm import relax

    mod, params = model.to_relax()
    with target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.get_pipeline("zero"),
            ]
        )(mod)
    return LoweredModel(model, mod, params)


def extract_tasks(lowered: LoweredModel, target) -> list[Task]:
    from tvm.s_tir import meta_schedule as ms

    out = []
    for t in ms.relax_integration.extract_tasks(lowered.mod, target):
        out.append(Task(t.task_name, int(t.weight), t.dispatched[0], t))
    return out
