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
    rid = store.runs.start("transfer", "tiny_mlp", '{"kind": "llvm"}', {"k": 3, "exclude": ["x"]}, "local",
                           ["a"])
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


FIXTURES = TINY.parent


@pytest.fixture(scope="module")
def transferred(tmp_path_factory):
    """The README's quick start in small: tiny_cnn's fixture ingested, tiny_cnn_wide
    transferred from it by the CLI, timed beside PyTorch: (database, report)."""
    d = tmp_path_factory.mktemp("run")
    db, report = d / "t.db", d / "report.json"
    assert not ingest(Store(db), [FIXTURES / "tiny_cnn"]).errors
    res = CliRunner().invoke(cli, ["transfer", "--model", "tiny_cnn_wide", "--db", str(db), "-k", "1", "--trials", "6",
                                   "--e2e-repeat", "3", "--report", str(report)])
    assert res.exit_code == 0, explain(res)
    return db, json.loads(report.read_text())


def test_a_transfer_keeps_its_run(transferred):
    db, rep = transferred
    store = Store(db, readonly=True)
    (run,) = store.runs.list()
    assert run.id == rep["run_id"] and (run.kind, run.model, run.status) == ("transfer", "tiny_cnn_wide", "done")
    assert run.target == rep["target"] and run.runner == "local" and run.options["k"] == 1
    assert run.sources is None  # no --sources nor --exclude-model: every model's schedules
    assert run.untuned_ms == rep["e2e"]["untuned"]["median_ms"]
    assert run.tvm_ms == rep["e2e"]["transferred"]["median_ms"]
    assert run.pytorch_ms == rep["e2e"]["pytorch"]["median_ms"] > 0
    run = store.runs.get(run.id)
    assert [(t.task, t.source, t.record_id) for t in run.tasks] == \
        [(t["task"], t["source"], t["record_id"]) for t in rep["tasks"]]
    for t in run.tasks:
        assert t.untuned_us is not None and t.chosen_us is not None
        if t.source == "untuned":
            assert t.chosen_us == t.untuned_us and t.record_id is None
        else:
            assert t.chosen_us < t.untuned_us and store.records.get(t.source_record_id)["model_id"] is not None
    # Every record the transfer committed names its run, and none other does.
    made = {r[0] for r in store.query("SELECT id FROM records WHERE run_id = ?", (run.id,))[1]}
    assert made == {t.record_id for t in run.tasks if t.record_id} and run.records == len(made) > 0
    res = CliRunner().invoke(cli, ["runs", "--db", str(db)])
    assert res.exit_code == 0 and "tiny_cnn_wide" in res.output and "done" in res.output, explain(res)
    assert f"{run.pytorch_ms:.2f}" in res.output


def test_the_readme_provenance_queries_answer(transferred):
    """The queries on runs of the README and docs/database.md, on the quick start in small: the
    model, its sources and its latency beside PyTorch's; its kernel time by source."""
    from schedb.store.schema import statements

    db, rep = transferred
    readme = (TINY.parents[1] / "README.md").read_text()
    sql = readme[readme.index("-- Models transferred"):]
    first, = list(statements(sql[:sql.index("```")]))
    guide = (TINY.parents[1] / "docs" / "database.md").read_text()
    sql = guide[guide.rindex("SELECT", 0, guide.index("GROUP BY t.source")):]
    second, = list(statements(sql[:sql.index("```")]))
    store = Store(db, readonly=True)
    cols, rows = store.query(first)
    assert cols == ["model", "cpu", "sources", "tvm_ms", "pytorch_ms"]
    assert rows == [("tiny_cnn_wide", json.loads(rep["target"])["mcpu"], "tiny_cnn",
                     round(rep["e2e"]["transferred"]["median_ms"], 2), round(rep["e2e"]["pytorch"]["median_ms"], 2))]
    _, rows = store.query(second)
    assert {r[0]: r[1] for r in rows} == {s: sum(t["source"] == s for t in rep["tasks"])
                                          for s in {t["source"] for t in rep["tasks"]}}


def test_a_failed_run_is_marked_failed(tmp_path, monkeypatch):
    from schedb.errors import SchedbError
    from schedb.models import load_model
    from schedb.pipeline import transfer as transfer_mod
    from schedb.tir.target import parse_target

    def broken(target):
        raise SchedbError("no intrinsics today")

    monkeypatch.setattr(transfer_mod, "load_intrinsics", broken)
    store = Store(tmp_path / "f.db")
    with pytest.raises(SchedbError):
        transfer_mod.transfer(store, load_model("tiny_mlp"), parse_target(None), transfer_mod.Options())
    (run,) = store.runs.list()
    assert (run.status, run.error) == ("failed", "SchedbError: no intrinsics today") and run.finished_at


def test_a_fast_runs_tasks_are_its_transfers_but_where_tuning_decided_them(tmp_path):
    from schedb.pipeline.runs import fast_tasks
    from schedb.pipeline.transfer import TaskResult

    store = Store(tmp_path / "f.db")
    assert not ingest(store, [TINY]).errors
    fast = store.runs.start("fast", "tiny_mlp", None, {})
    tune = store.runs.start("tune", "tiny_mlp", None, {}, parent_run_id=fast)
    store.runs.finish(tune, [RunTask("b", "tuned", 2, 1, "tiny_mlp", None, 1, 9.0, 3.0)])
    results = [TaskResult("a", 1, 1, "neighbor", record_id=2, untuned_us=5.0, transferred_us=4.0),
               TaskResult("b", 1, 2, "untuned", untuned_us=8.0)]
    assert fast_tasks(store, results, fast) == [RunTask("a", "neighbor", 1, 1, None, None, 2, 5.0, 4.0),
                                                 RunTask("b", "tuned", 2, 1, "tiny_mlp", None, 1, 9.0, 3.0)]
    assert [r.id for r in store.runs.list(parent=fast)] == [tune]
