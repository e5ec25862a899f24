"""Anchor: reuse a trace of another kind whose main reduction block is the same.

A fused kernel's *kind* names all its blocks (schedb.tir.signature.kind_of), so a conv2d
with a batch-norm epilogue and one with bias + ReLU are different kinds although the
schedule is almost entirely about the convolution. The **anchor** of a workload is its
main reduction block: the block with reduction iterators doing the most work
(``anchor_block``), keyed by its name and iterator kinds, e.g.
``conv2d_nchw:SSSSRRR``. Workloads without a reduction block have no anchor.

``retarget`` rewrites a trace of one workload for another with the same anchor, in
the spirit of TVM's ``schedule_using_anchor_trace`` but as a plain JSON trace, so
schedb.tir.replay still adapts its tile decisions to the new shapes:

* instructions on blocks the workload does not have (``GetSBlock`` of a missing
  name and everything using its results) are dropped;
* ``ComputeInline`` of a block that is an output here is dropped (it cannot be);
* the workload's blocks the source workload did not have are inlined first
  (``ComputeInline``, else ``ReverseComputeInline``), as TVM's version does.
"""

from __future__ import annotations

import math

from schedb.tir.signature import iter_blocks, prim_func, strip_name


def anchor_block(desc: dict) -> dict | None:
    """The block doing the most work: the one a schedule is mostly about."""
    def work(b):
        return math.prod(e for _, e in b["iters"] if isinstance(e, int)) if b["iters"] else 0
    blocks = [b for b in desc["blocks"] if b["iters"]]
    return max(blocks, key=lambda b: (any(k == "R" for k, _ in b["iters"]), work(b)), default=None)


def anchor_of(desc: dict) -> str | None:
    """``name:iterator kinds`` of the main reduction block, or None if there is none."""
    block = anchor_block(desc)
    if block is None or not any(k == "R" for k, _ in block["iters"]):
        return None
    return f"{block['name']}:{''.join(k for k, _ in block['iters'])}"


def retarget(trace: list, mod, source_desc: dict) -> list:
    """The JSON ``trace`` of a workload described by ``source_desc``, rewritten for ``mod``
    (see the module doc). Decisions follow their instructions to their new indices."""
    from tvm import s_tir

    from schedb.tir.replay import schedule_part

    insts, decisions = schedule_part(trace), dict((i, d) for i, d in trace[1])
    func_name = next((i[2][1] for i in insts if i[0] == "GetSBlock"), "main")
    source_names = {b["name"] for b in source_desc["blocks"]}

    # Inline this workload's extra blocks on a probe schedule, recording what worked.
    sch = s_tir.Schedule(mod, error_render_level="fast")
    prelude: list = []
    for block in list(iter_blocks(prim_func(sch.mod).body)):
        name = str(block.name_hint)
        if name == "root" or strip_name(name) in source_names:
            continue
        for prim in ("ComputeInline", "ReverseComputeInline"):
            try:
                getattr(sch, "compute_inline" if prim == "ComputeInline" else "reverse_compute_inline")(
                    sch.get_sblock(name))
            except Exception:  # TVM's own error types: not inlinable this way
                continue
            rv = f"anchor_b{len(prelude)}"
            prelude += [["GetSBlock", [], [name, func_name], [rv]], [prim, [rv], [], []]]
            break

    func = prim_func(sch.mod)
    params = {p.__chandle__() for p in func.params if hasattr(p, "shape")}
    params |= {b.__chandle__() for b in func.buffer_map.values()} if hasattr(func, "buffer_map") else set()
    present, outputs = set(), set()
    for block in iter_blocks(func.body):
        present.add(str(block.name_hint))
        if any(w.source.__chandle__() in params for w in block.writes):
            outputs.add(str(block.name_hint))

    out, new_decisions = list(prelude), []
    missing: set[str] = set()  # random variables of dropped instructions
    named: dict[str, str] = {}  # block random variable -> block name
    for i, inst in enumerate(insts):
        kind, inputs, attrs, results = inst
        uses = [x for x in inputs if isinstance(x, str)]
        drop = any(x in missing for x in uses)
        if kind == "GetSBlock":
            named[results[0]] = attrs[0]
            drop = drop or attrs[0] not in present
        if kind == "ComputeInline" and named.get(inputs[0]) in outputs:
            drop = True
        if drop:
            missing.update(results)
            continue
        if i in decisions:
            new_decisions.append([len(out), decisions[i]])
        out.append(inst)
    return [out, new_decisions]
