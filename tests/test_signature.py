"""Workload signatures: stable for what exists, distinct for layout-free (prepackable) weights."""

from __future__ import annotations

import json

from ingest_common import TINY_W

from schedb.search.index import Index, features
from schedb.tir.signature import signature


def _mod(line: str):
    from tvm.s_tir.meta_schedule.database import Workload

    return Workload.from_json(json.loads(line)).mod


def test_signature_of_a_plain_workload_is_pinned():
    """Stored digests hash the signature: it must not move for workloads that exist."""
    assert signature(_mod(TINY_W[0]))[0] == "5f6e25238288036d623935a242a4fcdc0c249765abe7aedc2ca48ecdfe39585e"


def test_layout_free_workload_is_another_workload_that_finds_its_plain_twin():
    mod = _mod(TINY_W[0])
    func = mod["main"]
    plain = signature(func)
    marked = signature(func.with_attr("layout_free_buffers", [1]))
    assert marked[0] != plain[0] and marked[1] == plain[1]
    assert marked[2]["layout_free"] == [1] and "layout_free" not in plain[2]
    # Transfer's index sees the same computation: the plain twin is a neighbour at distance 0.
    assert (features(marked[2]) == features(plain[2])).all()
    row = {"id": 7, "kind": plain[1], "description": json.dumps(plain[2]), "models": "m", "target": "t",
           "target_distance": 0}
    index = Index().fit([row])
    (nb,) = index.neighbors(marked[2], marked[1], k=1)
    assert nb.workload_id == 7 and nb.distance == 0
