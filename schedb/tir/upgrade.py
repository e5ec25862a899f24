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

# Release -> (type keys renamed, op names renamed, node rewrites), each taking a graph
# of that release to the next one's form.
STEPS = [
    ((0, 26), (TYPES_0_26, OPS_0_26, NODES_0_26)),
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
    for types, ops, rewrites in steps:
        _step(graph, types, ops, rewrites)
    return graph


def _step(graph: dict, types: dict, ops: dict, rewrites: dict):
    g = _Graph(graph)
    for node in list(g.nodes):  # the nodes a step appends are already in the new form
        key = node.get("type")
        if key == "ir.Op" and node.get("data") in ops:
            node["data"] = ops[node["data"]]
        if key in rewrites:
            if not isinstance(node.get("data"), dict):
                raise UpgradeError(f"a {key} node without fields")
            rewrites[key](g, node["data"])
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
