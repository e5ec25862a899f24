"""Workload graphs written by older TVM releases, brought to this TVM's form.

A MetaSchedule workload is an IRModule serialized as a JSON object graph
(``{"root_index", "nodes": [{"type", "data"}], "metadata": {"tvm_version"}}``), and
the graph is tied to the release that wrote it: between releases TVM renamed type
keys, moved fields and changed how some values are stored, so this TVM's loader
refuses an older graph. What the kernel computes did not change (its TVMScript prints
the same), so the graph is translated, one release step at a time, by the tables
below; the result is loaded by TVM as usual, and a graph with anything the tables do
not cover still fails to load, with the loader's reason.

Each step is a table of type keys renamed, op names renamed, and node rewrites (a
function per type key) for the nodes whose fields changed. Tested on workloads that
the releases themselves wrote (fixtures/old_tvm).
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------- 0.25 -> 0.26
# Types became nodes: an expression's dtype string became a "ty" (an ir.PrimType node),
# Relax's struct info became types, and a TIR buffer became a Var whose type is a
# BufferType (the PrimFunc's parameters are its buffers; no buffer_map, no data var).
TYPES_0_25 = {
    "tirx.Var": "ir.Var",
    "tirx.Buffer": "ir.Var",
    "tirx.Call": "ir.Call",
    "relax.ShapeStructInfo": "relax.ShapeType",
    "relax.TensorStructInfo": "relax.TensorType",
    "relax.TupleStructInfo": "ir.TupleType",
    "relax.FuncStructInfo": "relax.FuncType",
}
OPS_0_25: dict = {}
# Nodes whose "dtype" string is a field of their own, not the type of an expression.
_DTYPE_FIELDS = {"ir.PrimType", "relax.TensorStructInfo", "tirx.Buffer"}


def _types_as_nodes(g: "_Graph", key: str, data: dict):
    """Every node: struct_info_ -> ty; an expression's dtype -> ty (a PrimType node)."""
    if "struct_info_" in data:
        info = data.pop("struct_info_")
        data["ty"] = g.add({"type": "ir.Type", "data": {"span": g.none}}) if g.is_none(info) else info
    if isinstance(data.get("dtype"), str) and key not in _DTYPE_FIELDS and key != "tirx.Var":
        data["ty"] = g.prim_type(data.pop("dtype"))


def _var(g: "_Graph", data: dict):
    dtype, note = data.pop("dtype"), data.pop("type_annotation", None)
    data["ty"] = g.prim_type(dtype) if note is None or g.is_none(note) else note


def _tensor_type(g: "_Graph", data: dict):
    data["dtype"] = g.prim_type(data["dtype"])


def _buffer(g: "_Graph", data: dict):
    if g.nodes[data["axis_separators"]].get("data") or data["buffer_type"] != 1:
        raise UpgradeError("a buffer with axis separators or auto-broadcast (not translated)")
    var = g.nodes[data["data"]]["data"]  # its data pointer: rewritten already or not
    pointer = g.nodes[var["ty"] if "ty" in var else var["type_annotation"]]
    ty = {"span": g.none, "dtype": g.prim_type(data["dtype"]), "storage_scope": pointer["data"]["storage_scope"]}
    ty.update({k: data[k] for k in ("shape", "strides", "elem_offset", "data_alignment", "offset_factor",
                                    "layout", "allocated_addr")})
    span, name = data["span"], data["name"]
    data.clear()
    data.update(span=span, ty=g.add({"type": "tirx.BufferType", "data": ty}), name=name)


def _call(g: "_Graph", data: dict):
    data.setdefault("ty_args", g.add({"type": "ffi.Array", "data": []}))


def _prim_func(g: "_Graph", data: dict):
    """Parameters: the buffers bound to them (buffer_map), in their place."""
    pairs = g.nodes[data.pop("buffer_map")]["data"]
    bound = dict(zip(pairs[::2], pairs[1::2]))
    params = g.nodes[data["params"]]["data"]
    data["params"] = g.add({"type": "ffi.Array", "data": [bound.get(p, p) for p in params]})


NODES_0_25 = {
    "tirx.Var": _var,
    "tirx.Buffer": _buffer,
    "tirx.Call": _call,
    "relax.TensorStructInfo": _tensor_type,
    "tirx.PrimFunc": _prim_func,
}


# ---------------------------------------------------------------- 0.26 -> 0.27
# Arithmetic and comparison nodes moved from tirx to prim.
_PRIM_NODES = ("Add", "Sub", "Mul", "Div", "Mod", "FloorDiv", "FloorMod", "Min", "Max", "EQ", "NE",
               "LT", "LE", "GT", "GE", "And", "Or", "Not", "Select", "Cast", "Ramp", "Broadcast",
               "Shuffle", "Let")
TYPES_0_26 = {
    **{f"tirx.{n}": f"prim.{n}" for n in _PRIM_NODES},
    "tirx.SBlock": "s_tir.SBlock",
    "tirx.SBlockRealize": "s_tir.SBlockRealize",
    "tirx.MatchBufferRegion": "s_tir.MatchBufferRegion",
    "tirx.StringImm": "ir.StringImm",
    "tirx.CommReducer": "te.CommReducer",
    "tirx.Reduce": "te.Reduce",
    "tirx.BufferLoad": "ir.TensorLoad",
    "tirx.BufferRegion": "ir.TensorRegion",
}
# Intrinsics registered under prim (ir.Op nodes hold the name as their data).
OPS_0_26 = {f"tirx.{n}": f"prim.{n}" for n in ("ceil", "clz", "if_then_else", "likely", "log2", "vscale")}


class UpgradeError(ValueError):
    """The graph has something the translation does not cover."""


class _Graph:
    """The node list being rewritten; new nodes are appended (indices stay valid)."""

    def __init__(self, graph: dict):
        self.nodes = graph["nodes"]
        self.none = next((i for i, n in enumerate(self.nodes) if n.get("type") == "None"), None)
        if self.none is None:
            self.none = self.add({"type": "None"})

    def add(self, node: dict) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def prim_type(self, dtype: str) -> int:
        """An ir.PrimType node of ``dtype``, one per dtype."""
        cache = self.__dict__.setdefault("_prim_types", {})
        if dtype not in cache:
            cache[dtype] = self.add({"type": "ir.PrimType", "data": {"span": self.none, "dtype": dtype}})
        return cache[dtype]

    def is_none(self, index) -> bool:
        return index == self.none or self.nodes[index].get("type") == "None"


def _int_node(g: _Graph, data: dict):
    # IntImm's value is an "int" node now, not an inline number.
    if isinstance(data.get("value"), int):
        data["value"] = g.add({"type": "int", "data": data["value"]})


def _no_predicate(g: _Graph, data: dict, what: str):
    pred = data.pop("predicate", None)
    if pred is not None and not g.is_none(pred):
        raise UpgradeError(f"a predicated {what} (TVM 0.27 has none)")


def _tensor_load(g: _Graph, data: dict):
    _no_predicate(g, data, "buffer load")
    data["source"] = data.pop("buffer")


def _tensor_region(g: _Graph, data: dict):
    data["source"] = data.pop("buffer")
    data.setdefault("span", g.none)
    data["ty"] = g.add({"type": "tirx.BufferRegionType", "data": {"span": g.none}})


def _buffer_store(g: _Graph, data: dict):
    _no_predicate(g, data, "buffer store")


def _with_span(g: _Graph, data: dict):
    data.setdefault("span", g.none)


# Rewrites by the node's type key before renaming.
NODES_0_26 = {
    "ir.IntImm": _int_node,
    "tirx.BufferLoad": _tensor_load,
    "tirx.BufferRegion": _tensor_region,
    "tirx.BufferStore": _buffer_store,
    "tirx.IterVar": _with_span,
}

# Release -> (type keys renamed, op names renamed, node rewrites by type key, a rewrite of
# every node or None), each taking a graph of that release to the next one's form.
STEPS = [
    ((0, 25), (TYPES_0_25, OPS_0_25, NODES_0_25, _types_as_nodes)),
    ((0, 26), (TYPES_0_26, OPS_0_26, NODES_0_26, None)),
]
CURRENT = (0, 27)


def release(graph: dict) -> tuple[int, int] | None:
    """(major, minor) of the TVM that wrote ``graph``, from its metadata; None when it does not say."""
    meta = graph.get("metadata")
    version = meta.get("tvm_version") if isinstance(meta, dict) else None
    m = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return (int(m[1]), int(m[2])) if m else None


def upgrade(graph: dict) -> dict:
    """``graph`` (parsed JSON, rewritten in place and returned) in this TVM's form.
    Raises UpgradeError for a release without a translation."""
    have = release(graph)
    if have is None or have >= CURRENT:
        return graph
    steps = [s for v, s in STEPS if v >= have]
    if not steps or STEPS[0][0] > have:
        raise UpgradeError(f"written by TVM {'.'.join(map(str, have))}: no translation from that release")
    for step in steps:
        _step(graph, *step)
    return graph


def _step(graph: dict, types: dict, ops: dict, rewrites: dict, every):
    g = _Graph(graph)
    for node in list(g.nodes):  # the nodes a step appends are already in the new form
        key, data = node.get("type"), node.get("data")
        if key == "ir.Op" and data in ops:
            node["data"] = ops[data]
        if key in rewrites:
            if not isinstance(data, dict):
                raise UpgradeError(f"a {key} node without fields")
            rewrites[key](g, data)
        if every is not None and isinstance(data, dict):
            every(g, key, data)
        if key in types:
            node["type"] = types[key]


def upgrade_blob(blob: bytes) -> tuple[str | None, bytes | None]:
    """A workload's serialized graph (an 8-byte little-endian length, then the JSON):
    (the TVM version its metadata names, the graph in this TVM's form when it had to be
    translated, else None)."""
    import struct

    import orjson

    graph = orjson.loads(blob[8:])
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise UpgradeError("not a JSON object graph")
    meta = graph.get("metadata")
    version = meta.get("tvm_version") if isinstance(meta, dict) else None
    version = version if isinstance(version, str) else None
    have = release(graph)
    if have is None or have >= CURRENT:
        return version, None
    text = orjson.dumps(upgrade(graph))
    return version, struct.pack("<Q", len(text)) + text
