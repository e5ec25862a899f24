"""schedb.Database as TVM's MetaSchedule database, and export to a standard work dir."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from helpers import explain
from ingest_common import RECORDS, TINY, TINY_SIDECAR, WORKLOADS, cli_ok, text_lines

from schedb_cli.main import cli
from schedb.errors import SchedbError
from schedb.ingest import ingest
from schedb.store import Store


# --------------------------------------------------------------------------- TVM: schedb.Database
def test_database_feeds_compile(tiny_db, target, lowered):
    from schedb.pipeline.evaluate import compile_model
    from schedb.store.database import Database

    store = Store(tiny_db, readonly=True)
    want = store.conn.execute(
        "SELECT COUNT(DISTINCT workload_id) FROM records WHERE valid = 1 AND format = 'ms-trace'").fetchone()[0]
    n_ms = store.conn.execute("SELECT COUNT(*) FROM records WHERE format = 'ms-trace'").fetchone()[0]
    n_valid = store.conn.execute(
        "SELECT COUNT(*) FROM records WHERE format = 'ms-trace' AND valid = 1").fetchone()[0]
    db = Database(tiny_db)
    assert len(db) == n_ms
    assert len(db.get_all_tuning_records()) == n_valid
    compiled = compile_model(lowered, target, db)  # raises if the output does not match
    assert compiled.tuned_tasks == want == len(TINY_SIDECAR["tasks"])
    assert compiled.max_abs_err < 1e-3
    untuned = compile_model(lowered, target, None)
    assert untuned.tuned_tasks == 0


def test_tvm_tuning_writes_into_database(tmp_path, target, lowered):
    """MetaSchedule's own tune_relax commits into schedb.Database; the SQLite file then
    holds 'tuned' records that MetaScheduleApplyDatabase applies. (A small search: a
    16-schedule population and a random cost model keep it to ~20 s.)"""
    from tvm.s_tir import meta_schedule as ms

    from schedb.pipeline.evaluate import compile_model
    from schedb.store.database import Database
    from schedb.search.measure import WarmBuilder, make_runner

    path = tmp_path / "tuned.db"
    builder = WarmBuilder(max_workers=2)
    try:
        ms.relax_integration.tune_relax(
            lowered.mod, params={}, target=target, work_dir=str(tmp_path / "wd"),
            max_trials_global=8, num_trials_per_iter=8, database=Database(path),
            builder=builder, runner=make_runner("local", number=1, repeat=2, min_repeat_ms=0),
            cost_model="random", seed=0,
            strategy=ms.search_strategy.EvolutionarySearch(
                population_size=16, init_min_unmeasured=8, genetic_num_iters=1),
        )
    finally:
        builder.pool.shutdown()

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT origin, valid, mean_s, run_secs, format, target FROM records").fetchall()
        tuned_wl = conn.execute(
            "SELECT COUNT(DISTINCT workload_id) FROM records WHERE valid = 1").fetchone()[0]
        n_workloads = conn.execute("SELECT COUNT(*) FROM workloads").fetchone()[0]
    conn.close()
    assert len(rows) >= 8
    assert {r[0] for r in rows} == {"tuned"} and {r[4] for r in rows} == {"ms-trace"}
    for origin, valid, mean_s, run_secs, fmt, tgt in rows:
        samples = json.loads(run_secs)
        if valid:
            assert len(samples) == 2 and mean_s == pytest.approx(sum(samples) / 2)
        assert json.loads(tgt)["kind"] == "llvm"
    assert tuned_wl > 0 and n_workloads == len(TINY_SIDECAR["tasks"])

    compiled = compile_model(lowered, target, Database(path))
    assert compiled.tuned_tasks == tuned_wl

    # The same kernels, ingested from the fixture, land on the same workloads (signatures).
    store = Store(path)
    report = ingest(store, [TINY])
    assert report.errors == [] and report.new_workloads == 0
    assert store.counts()["workloads"] == n_workloads


# --------------------------------------------------------------------------- export
def test_export_opens_in_tvm_and_compiles(mixed_db, tmp_path, target, lowered):
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    from schedb.pipeline.evaluate import compile_model
    from schedb.ingest.workdir import export_workdir

    store = Store(mixed_db, readonly=True)
    n_ms = store.conn.execute("SELECT COUNT(*) FROM records WHERE format = 'ms-trace'").fetchone()[0]
    n_ms_wl = store.conn.execute(
        "SELECT COUNT(DISTINCT workload_id) FROM records WHERE format = 'ms-trace'").fetchone()[0]
    out = tmp_path / "export"
    assert export_workdir(store, out) == (n_ms_wl, n_ms, [])  # Ansor records left out
    assert len(text_lines(out / RECORDS)) == n_ms and len(text_lines(out / WORKLOADS)) == n_ms_wl
    jdb = JSONDatabase(path_workload=str(out / WORKLOADS), path_tuning_record=str(out / RECORDS),
                       allow_missing=False)
    assert len(jdb) == n_ms > 0
    compiled = compile_model(lowered, target, jdb)
    assert compiled.tuned_tasks == len(TINY_SIDECAR["tasks"])

    # Round trip: the export ingested again is the same records.
    again = Store(tmp_path / "again.db")
    report = ingest(again, [out])
    assert report.errors == [] and report.skipped_lines == 0
    assert report.new_records == n_ms
    assert {d for d, in again.conn.execute("SELECT digest FROM records")} == \
        {d for d, in store.conn.execute("SELECT digest FROM records WHERE format = 'ms-trace'")}

    # Per model; an unknown model is a clean error.
    assert export_workdir(store, tmp_path / "m", model="tiny_mlp") == (n_ms_wl, n_ms, [])
    with pytest.raises(SchedbError, match=r"0 MetaSchedule records match model legacy.*legacy Ansor records"):
        export_workdir(store, tmp_path / "l", model="legacy")  # only Ansor records: nothing to export
    assert not (tmp_path / "l").exists()
    with pytest.raises(SchedbError, match="no model"):
        export_workdir(store, tmp_path / "x", model="nope")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "c"), "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0 and f"wrote {n_ms_wl} workloads, {n_ms} records" in result.output, explain(result)
