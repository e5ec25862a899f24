"""Runs in the database: the schema migration, store.runs, and the run rows that transfer,
droplet, tune and fast write (on the tiny fixtures)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner
from helpers import explain
from ingest_common import TINY

from schedb.ingest import ingest
from schedb.store import SCHEMA_VERSION, Store
from schedb.store.tables import Run, RunTask
from schedb_cli.main import cli

RUNS_SCHEMA = 8  # the migration that added runs


def _file_of_schema(path, version, monkeypatch):
    """tiny_mlp ingested by the schedb of schema ``version``."""
    import schedb.store.schema

    with monkeypatch.context() as m:
        m.setattr(schedb.store.schema, "SCHEMA_VERSION", version)
        store = Store(path)
        assert not ingest(store, [TINY]).errors
        store.close()
    return path


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7])
def test_older_files_migrate_to_runs(tmp_path, monkeypatch, version):
    path = _file_of_schema(tmp_path / f"v{version}.db", version, monkeypatch)
    before = sqlite3.connect(path).execute("SELECT id, digest FROM records ORDER BY id").fetchall()
    ro = Store(path, readonly=True)
    assert ro.version() == version and ro.runs.list() == [] and ro.runs.get(1) is None  # read as it is
    ro.close()
    store = Store(path)
    assert store.version() == SCHEMA_VERSION >= RUNS_SCHEMA
    assert {"runs", "run_tasks"} <= set(store.db.table_names())
    assert store.conn.execute("SELECT id, digest FROM records ORDER BY id").fetchall() == before
    assert store.conn.execute("SELECT COUNT(*) FROM records WHERE run_id IS NOT NULL").fetchone() == (0,)
    # The views still answer, best_records with the new column.
    assert "run_id" in [r[1] for r in store.conn.execute("PRAGMA table_info(best_records)")]
    assert store.conn.execute("SELECT COUNT(*) FROM record_lineage").fetchone()[0] >= len(before)
    assert not store.conn.execute("PRAGMA foreign_key_check").fetchall()


def test_a_run_row_from_start_to_finish(tmp_path):
    store = Store(tmp_path / "r.db")
    assert not ingest(store, [TINY]).errors
    rid = store.runs.start("transfer", "tiny_mlp", '{"kind": "llvm"}', {"k": 3, "exclude": ["x"]}, "local", ["a"])
    run = store.runs.get(rid)
    assert run.status == "running" and run.finished_at is None and run.options == {"k": 3, "exclude": ["x"]}
    assert run.tvm_version and run.schedb_version and run.sources == ["a"]
    record = {k: v for k, v in store.records.best(1).items() if k in store.records.COLUMNS}
    with store.transaction():
        new = store.records.add(**{**record, "digest": b"n" * 16}, run_id=rid)
        again = store.records.add(**{**record, "digest": b"n" * 16}, run_id=rid + 1)
    assert new == again and store.records.get(new)["run_id"] == rid  # a duplicate keeps its first run
    tasks = [RunTask("t0", "exact", 1, 2, "m", store.records.best(1)["id"], new, 20.0, 5.0), RunTask("t1", "untuned", 2, 1)]
    e2e = {"untuned": {"median_ms": 3.0}, "transferred": {"median_ms": 1.0}, "pytorch": {"median_ms": 2.0}}
    store.runs.finish(rid, tasks, e2e)
    run = store.runs.get(rid)
    assert run.status == "done" and run.finished_at >= run.started_at
    assert (run.untuned_ms, run.tvm_ms, run.pytorch_ms) == (3.0, 1.0, 2.0)
    assert run.tasks == tasks and run.n_tasks == 2 and run.records == 1
    assert Run.from_json(json.loads(json.dumps(run.as_json()))) == run
    failed = store.runs.start("droplet", None, None, {})
    store.runs.fail(failed, "SchedbError: no luck")
    assert [(r.id, r.status, r.error) for r in store.runs.list()] == [(failed, "failed", "SchedbError: no luck"),
                                                                        (rid, "done", None)]
    assert [r.id for r in store.runs.list(kind="transfer")] == [rid]


def test_runs_cli_lists_and_shows_runs(tmp_path):
    path = tmp_path / "r.db"
    store = Store(path)
    assert not ingest(store, [TINY]).errors
    rid = store.runs.start("transfer", "tiny_mlp", None, {"k": 1})
    store.runs.finish(rid, [RunTask("fused_dense", "neighbor", 1, 1, "tiny_cnn", 1, 2, 12.345, 3.21)],
                      {"transferred": {"median_ms": 1.234}, "pytorch": {"median_ms": 2.5}})
    store.close()
    res = CliRunner().invoke(cli, ["runs", "--db", str(path)])
    assert res.exit_code == 0, explain(res)
    assert "transfer" in res.output and "tiny_mlp" in res.output and "1.23" in res.output
    res = CliRunner().invoke(cli, ["runs", "--db", str(path), "--json"])
    (run,) = json.loads(res.output)
    assert run["id"] == rid and run["tvm_ms"] == 1.234 and run["pytorch_ms"] == 2.5 and run["n_tasks"] == 1
    res = CliRunner().invoke(cli, ["runs", str(rid), "--db", str(path)])
    assert res.exit_code == 0 and "fused_dense" in res.output and "12.3" in res.output, explain(res)
    res = CliRunner().invoke(cli, ["runs", str(rid), "--db", str(path), "--json"])
    assert json.loads(res.output)["tasks"][0]["source"] == "neighbor"
    res = CliRunner().invoke(cli, ["runs", "99", "--db", str(path)])
    assert res.exit_code == 1 and res.output == f"Error: no run 99 in {path}\n"
