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
    legacy = store.conn.execute("SELECT COUNT(*) FROM records WHERE format != 'ms-trace'").fetchone()[0]
    with pytest.raises(SchedbError, match=rf"^0 records match model legacy: nothing exported \({legacy} legacy Ansor "
                                          r"records cannot be exported\)$"):
        export_workdir(store, tmp_path / "l", model="legacy")  # only Ansor records: nothing to export
    assert not (tmp_path / "l").exists()
    with pytest.raises(SchedbError, match="no model"):
        export_workdir(store, tmp_path / "x", model="nope")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "c"), "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0 and f"wrote {n_ms_wl} workloads, {n_ms} records" in result.output, explain(result)


# --------------------------------------------------------------------------- TVM's database contract
# The generic tests of TVM's own database suite (apache/tvm,
# tests/python/s_tir/meta_schedule/test_meta_schedule_database.py), run against schedb.Database:
# only the creation of the database differs (a schedb file instead of a JSON work dir or memory).

def _contract_mods():
    import tvm
    from tvm.script import tirx as T

    @tvm.script.ir_module
    class Dense:
        @T.prim_func(s_tir=True)
        def main(a: T.handle, b: T.handle, c: T.handle) -> None:
            T.func_attr({"global_symbol": "main"})
            A = T.match_buffer(a, (64, 64), "float32")
            B = T.match_buffer(b, (64, 64), "float32")
            C = T.match_buffer(c, (64, 64), "float32")
            for i, j, k in T.grid(64, 64, 64):
                with T.sblock("matmul"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        C[vi, vj] = 0.0
                    C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]

    @tvm.script.ir_module
    class DenseRelu:
        @T.prim_func(s_tir=True)
        def main(a: T.handle, b: T.handle, d: T.handle) -> None:
            T.func_attr({"global_symbol": "main", "tirx.noalias": True})
            A = T.match_buffer(a, (16, 16), "float32")
            B = T.match_buffer(b, (16, 16), "float32")
            D = T.match_buffer(d, (16, 16), "float32")
            C = T.sblock_alloc_buffer((16, 16), "float32")
            for i, j, k in T.grid(16, 16, 16):
                with T.sblock("matmul"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        C[vi, vj] = 0.0
                    C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]
            for i, j in T.grid(16, 16):
                with T.sblock("relu"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    D[vi, vj] = T.max(C[vi, vj], 0.0)

    return Dense, DenseRelu


@pytest.fixture(scope="module")
def contract():
    """(ms, mods, scheduled): MetaSchedule, the two modules, a tiled schedule of the first."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    dense, dense_relu = _contract_mods()
    sch = tvm.s_tir.Schedule(dense, debug_mask="all")
    i, j, k = sch.get_loops(sch.get_sblock("matmul"))
    i0, i1 = sch.split(i, [8, 8])
    j0, j1 = sch.split(j, [4, 16])
    k0, k1 = sch.split(k, [16, 4])
    sch.reorder(i0, j0, k0, i1, j1, k1)
    return ms, (dense, dense_relu), sch


def _record(ms, trace, workload, run_secs, mod):
    import tvm

    return ms.database.TuningRecord(trace, workload, run_secs, tvm.target.Target("llvm"),
                                    ms.arg_info.ArgInfo.from_prim_func(func=mod["main"]))


def _same_record(a, b):
    import tvm

    assert str(a.trace) == str(b.trace)
    assert str(a.run_secs) == str(b.run_secs)
    assert str(a.target) == str(b.target)
    tvm.ir.assert_structural_equal(a.workload.mod, b.workload.mod)
    assert [str(x.as_json()) for x in a.args_info] == [str(x.as_json()) for x in b.args_info]


def test_contract_commit_and_read_back(contract, tmp_path):
    from schedb.store.database import Database

    ms, (mod, missing), sch = contract
    db = Database(tmp_path / "c.db")
    workload = db.commit_workload(mod)
    record = _record(ms, sch.trace, workload, [1.5, 2.5, 1.8], mod)
    db.commit_tuning_record(record)
    assert len(db) == 1
    assert db.has_workload(mod) and not db.has_workload(missing)
    (back,) = db.get_top_k(workload, 3)
    _same_record(back, record)
    assert db.get_top_k(db.commit_workload(missing), 3) == []  # a workload without records


def _ranked_records(contract, db):
    ms, (mod, _), sch = contract
    workload = db.commit_workload(mod)
    times = [[7.0, 8.0, 9.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [1.1, 1.2, 600.0], [1.0, 100.0, 6.0],
             [4.0, 9.0, 8.0]]
    records = [_record(ms, sch.trace, workload, t, mod) for t in times]  # one trace, six measurements
    for r in records:
        db.commit_tuning_record(r)
    return workload, records


def test_contract_top_k_is_every_record_by_mean(contract, tmp_path):
    from schedb.store.database import Database

    db = Database(tmp_path / "c.db")
    workload, records = _ranked_records(contract, db)
    first, second = db.get_top_k(workload, 2)
    _same_record(first, records[1])
    _same_record(second, records[2])
    # Reopened from its file: the same answer.
    again = Database(tmp_path / "c.db")
    first, second = again.get_top_k(again.commit_workload(contract[1][0]), 2)
    _same_record(first, records[1])
    _same_record(second, records[2])
    # The deliberate difference, asked for: one record per distinct trace (tune --db seeds with it).
    distinct = Database(tmp_path / "c.db", distinct_traces=True)
    (only,) = distinct.get_top_k(workload, 2)
    _same_record(only, records[1])


@pytest.mark.parametrize("k,want", [
    (0, []),
    (1, [[0.0, 2.0]]),
    (4, [[0.0, 2.0], [2.0], [1.5, 4.5], [3.0, 1e10]]),
    (5, [[0.0, 2.0], [2.0], [1.5, 4.5], [3.0, 1e10]]),
])
def test_contract_top_k_with_invalid_and_empty_measurements(contract, tmp_path, k, want):
    from schedb.store.database import Database

    ms, (mod, _), sch = contract
    db = Database(tmp_path / "c.db")
    workload = db.commit_workload(mod)
    for run_secs in [[1.5, 4.5], [], [0.0, 2.0], None, [2.0], [3.0, 1e10], [1e10]]:
        db.commit_tuning_record(_record(ms, sch.trace, workload, run_secs, mod))
    assert [[v.value for v in r.run_secs] for r in db.get_top_k(workload, k)] == want


def test_contract_union_and_ordered_union(contract, tmp_path):
    import tvm
    from schedb.store.database import Database

    ms, (mod, _), sch = contract
    target = tvm.target.Target("llvm")

    def commit(db, run_sec):
        db.commit_tuning_record(_record(ms, sch.trace, db.commit_workload(mod), [run_sec], mod))

    def best(db):
        (run_sec,) = db.query_tuning_record(mod=mod, target=target, workload_name="main").run_secs
        return run_sec.value

    one, two = Database(tmp_path / "1.db"), Database(tmp_path / "2.db")
    commit(one, 1.0)
    commit(two, 0.5)
    assert best(one) == 1.0 and best(two) == 0.5
    assert best(ms.database.UnionDatabase(one, two)) == 0.5
    assert best(ms.database.OrderedUnionDatabase(one, two)) == 1.0


def test_contract_query_record_schedule_and_ir_module(contract, tmp_path):
    import tvm
    import tvm_ffi
    from tvm.s_tir import Schedule
    from schedb.store.database import Database

    ms, (mod, _), sch = contract
    target = tvm.target.Target("llvm")
    db = Database(tmp_path / "c.db")

    def commit(trace, run_sec):
        db.commit_tuning_record(_record(ms, trace, db.commit_workload(mod), [run_sec], mod))

    def query(kind):
        return db.query(mod=mod, target=target, workload_name="main", kind=kind)

    commit(sch.trace, 1.0)
    assert query("record").run_secs[0].value == 1.0
    assert tvm_ffi.structural_equal(query("schedule").mod, sch.mod)
    assert tvm_ffi.structural_equal(query("ir_module"), sch.mod)
    commit(Schedule(mod).trace, 0.2)  # an empty trace, faster
    assert query("record").run_secs[0].value == 0.2
    assert tvm_ffi.structural_equal(query("schedule").mod, mod)
    assert tvm_ffi.structural_equal(query("ir_module"), mod)


def test_contract_with_db_is_current(tmp_path):
    from tvm.s_tir import meta_schedule as ms
    from schedb.store.database import Database

    db = Database(tmp_path / "c.db")
    with db:
        assert ms.database.Database.current() == db


def test_tune_into_a_database_seeds_from_distinct_traces(tmp_path, target):
    """`tune --db` is the one caller that asks for one record per trace (a search seeded with
    k different schedules); TVM's default, every record, is everyone else's."""
    from schedb.pipeline.tune import trials_database
    from schedb.store.database import Database

    assert trials_database(tmp_path, tmp_path / "t.db", target, "m").distinct_traces is True
    assert Database(tmp_path / "t.db").distinct_traces is False
