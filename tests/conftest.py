"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Cluster
from ingest_common import SEED, TINY, ansor_line, write_ansor

from schedb.ingest import ingest
from schedb.store import Store


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory) -> Path:
    """fixtures/tiny_mlp ingested into a fresh database (read-only use: clone to modify)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.db"
    store = Store(path)
    report = ingest(store, [TINY])
    assert not report.errors and not report.warnings
    store.close()
    return path


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory) -> Path:
    """tiny_mlp plus a small synthetic Ansor log with one failed measurement."""
    d = tmp_path_factory.mktemp("mixed")
    log = write_ansor(d / "logs" / "legacy.json",
                      [ansor_line(i) for i in range(6)] + [ansor_line(99, error_no=1, costs=[1e-9])])
    store = Store(d / "mixed.db")
    report = ingest(store, [TINY, log])
    assert not report.errors and not report.warnings
    store.close()
    return d / "mixed.db"


@pytest.fixture(scope="module")
def seed_ingest(tmp_path_factory):
    if not SEED.is_dir():
        pytest.skip(f"seed Ansor logs not found at {SEED}")
    path = tmp_path_factory.mktemp("seed") / "seed.db"
    store = Store(path)
    report = ingest(store, [SEED])
    return store, report


@pytest.fixture(scope="module")
def target():
    from schedb.tir.target import load_intrinsics, parse_target

    tgt = parse_target(None)
    load_intrinsics(tgt)  # before anything imports tvm.s_tir.tensor_intrin in full (~45 s)
    return tgt


@pytest.fixture(scope="module")
def lowered(target):
    from schedb.models import load_model
    from schedb.tir.tasks import lower

    return lower(load_model("tiny_mlp"), target)


@pytest.fixture
def cluster():
    """A TVM RPC tracker on loopback (add servers with ``cluster.server(key)``), stopped
    with all its processes after the test."""
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()
