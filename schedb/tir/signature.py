"""Workload signatures: what a kernel computes, independent of the TVM version.

TVM's structural hash changes whenever TVM's IR or hashing changes, so it is only a
secondary key. The signature hashes a canonical description built from the TIR:
argument shapes and dtypes, and for every block its iterators (spatial or
reduction, extent), what it reads and writes (which buffer, index expressions in
terms of the block's own iterators) and the expression it stores. Variable,
buffer and block names are left out: they are what differs between versions; so are
the names TVM gave its node fields and intrinsics in each release (``BufferLoad.buffer``
/ ``TensorLoad.source``, ``tirx.if_then_else`` / ``prim.if_then_else``), which are read
either way, so a workload written by TVM 0.25, 0.26 or 0.27 has one signature.
"""

from __future__ import annotations

import hashlib
import json
import re

_ITER_KIND = {0: "S", 2: "R"}  # IterVar.DataPar, IterVar.CommReduce; anything else: "O"


def prim_func(mod_or_func):
    """The PrimFunc of a one-function IRModule (what a task / workload holds)."""
    if hasattr(mod_or_func, "functions"):
        funcs = [f for _, f in mod_or_func.functions.items()]
        if len(funcs) != 1:
            names = [str(gv.name_hint) for gv, _ in mod_or_func.functions.items()]
            return mod_or_func["main"] if "main" in names else funcs[0]
        return funcs[0]
    return mod_or_func


def describe(mod_or_func) -> dict:
    """The canonical, name-free description of a workload."""
    func = prim_func(mod_or_func)
    buffers: dict = {}
    params = []
    for i, p in enumerate(func.params):
        buf = p if hasattr(p, "shape") else None  # tirx params are buffers themselves
        if buf is None:
            params.append({"scalar": str(p.ty)})
            continue
        buffers[_key(buf)] = f"p{i}"
        params.append({"shape": [_int(d) for d in buf.shape], "dtype": str(buf.dtype)})
    blocks = []
    allocs = []
    for block in iter_blocks(func.body):
        for buf in block.alloc_buffers:
            buffers[_key(buf)] = f"a{len(allocs)}"
            allocs.append({"shape": [_int(d) for d in buf.shape], "dtype": str(buf.dtype)})
        if not block.iter_vars and block.name_hint == "root":
            continue
        env = {_key(iv.var): f"v{k}" for k, iv in enumerate(block.iter_vars)}
        ctx = (env, buffers)
        blocks.append(
            {
                "name": strip_name(block.name_hint),
                "iters": [[_ITER_KIND.get(int(iv.iter_type), "O"), _int(iv.dom.extent)]
                          for iv in block.iter_vars],
                "reads": [_region(r, ctx) for r in block.reads],
                "writes": [_region(w, ctx) for w in block.writes],
                "body": _stmt(block.body, ctx),
                "init": _stmt(block.init, ctx) if block.init is not None else None,
            }
        )
    desc = {"params": params, "allocs": allocs, "blocks": blocks}
    attrs = func.attrs
    if attrs is not None and "layout_free_buffers" in attrs:
        # Weights MetaSchedule may prepack (AttachAttrLayoutFreeBuffers): another workload to
        # tune. Only when present, so a plain workload's signature (and digests) stay as they were.
        desc["layout_free"] = sorted(int(i) for i in attrs["layout_free_buffers"])
    return desc


def signature_of(desc: dict) -> str:
    """sha256 over the description without block names."""
    hashed = {**desc, "blocks": [{k: v for k, v in b.items() if k != "name"} for b in desc["blocks"]]}
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def kind_of(desc: dict) -> str:
    """A readable computation kind, e.g. ``pad_temp+conv2d_nchw+T_add+T_relu``."""
    names = []
    for b in desc["blocks"]:
        if b["name"] not in names:
            names.append(b["name"])
    return "+".join(names) or "empty"


def signature(mod_or_func) -> tuple[str, str, dict]:
    """(signature, kind, description) of a workload."""
    desc = describe(mod_or_func)
    return signature_of(desc), kind_of(desc), desc


# --------------------------------------------------------------------------- internals
def _key(obj):
    # Python wrappers of one TVM object differ; the handle address identifies it.
    return obj.__chandle__()


def _int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return str(x)


def strip_name(name: str) -> str:
    # "conv2d_nchw_1" / "T_add3" -> "conv2d_nchw" / "T_add": numbering is per module.
    return re.sub(r"(_?\d+)+$", "", str(name)) or str(name)


def iter_blocks(stmt):
    """Every SBlock under ``stmt`` in program order."""
    name = type(stmt).__name__
    if name == "SBlockRealize":
        yield from iter_blocks(stmt.block)
    elif name == "SBlock":
        yield stmt
        yield from iter_blocks(stmt.body)
    elif name == "SeqStmt":
        for s in stmt.seq:
            yield from iter_blocks(s)
    elif name == "IfThenElse":
        yield from iter_blocks(stmt.then_case)
        if stmt.else_case is not None:
            yield from iter_blocks(stmt.else_case)
    elif hasattr(stmt, "body"):
        yield from iter_blocks(stmt.body)


def op_name(op) -> str:
    """An intrinsic's name as this TVM registers it: ``tirx.if_then_else`` (TVM 0.25, 0.26)
    is ``prim.if_then_else`` (0.27), so a workload described under either has one signature."""
    from schedb.tir.upgrade import OPS_0_26

    name = str(op.name) if hasattr(op, "name") else str(op)
    return OPS_0_26.get(name, name)


def _region(region, ctx):
    env, buffers = ctx
    buf = region.source if hasattr(region, "source") else region.buffer  # TVM 0.27 renamed it
    return [buffers.get(_key(buf), "?"),
            [[_expr(r.min, ctx), _expr(r.extent, ctx)] for r in region.region]]


def _stmt(stmt, ctx):
    name = type(stmt).__name__
    if name == "BufferStore":
        return ["store", ctx[1].get(_key(stmt.buffer), "?"),
                [_expr(i, ctx) for i in stmt.indices], _expr(stmt.value, ctx)]
    if name == "SeqStmt":
        return ["seq", [_stmt(s, ctx) for s in stmt.seq]]
    if name == "SBlockRealize":
        return ["block"]  # nested blocks are described on their own
    return [name]


def _expr(e, ctx):
    env, buffers = ctx
    name = type(e).__name__
    if name in ("IntImm", "FloatImm"):
        return [name, str(e.ty), e.value]
    if name in ("Var", "SizeVar"):
        return env.get(_key(e), "var")
    if name in ("BufferLoad", "TensorLoad"):
        buf = e.source if hasattr(e, "source") else e.buffer  # TVM 0.27 renamed it
        return ["load", buffers.get(_key(buf), "?"), [_expr(i, ctx) for i in e.indices]]
    if name == "Call":
        return ["call", op_name(e.op), [_expr(a, ctx) for a in e.args]]
    if name == "Cast":
        return ["cast", str(e.ty), _expr(e.value, ctx)]
    if name == "StringImm":
        return ["str", str(e.value)]
    parts = [name]
    for field in ("a", "b", "condition", "true_value", "false_value", "value"):
        if hasattr(e, field):
            parts.append(_expr(getattr(e, field), ctx))
    return parts
