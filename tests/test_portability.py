"""A database tuned on another CPU serves this one: target distance, ranking, views and the
commands, with the fixture records relabelled to a foreign target so that the cross-target
path runs on every host, whatever its CPU."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import explain, foreign_target, relabel

from schedb_cli.main import cli
from schedb.ingest import ingest
from schedb.store import SCHEMA_VERSION, Store
from schedb.tir.target import (SAME, SAME_ARCH, SAME_CPU, SAME_KIND, SAME_VECTOR, canonical, coverage_note,
                           distance, label, parse_target)

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _t(**cfg) -> str:
    return canonical(parse_target({"kind": "llvm", **cfg}))


def test_target_distance_orders_cpus_by_what_they_share():
    emr = _t(mcpu="emeraldrapids", **{"num-cores": 2})
    assert distance(emr, emr) == SAME
    assert distance(_t(mcpu="emeraldrapids", **{"num-cores": 64}), emr) == SAME_CPU  # cores never exclude
    assert distance(_t(mcpu="znver4"), emr) == SAME_VECTOR  # both AVX-512
    assert distance(_t(mcpu="haswell"), emr) == SAME_ARCH  # AVX2 only
    assert distance(_t(mtriple="aarch64-linux-gnu", mcpu="cortex-a72"), emr) == SAME_KIND
    assert distance(canonical(parse_target("cuda")), emr) is None  # another kind: no candidate
    assert distance("not json", emr) is None
    assert label(emr) == "llvm emeraldrapids (avx512)"


def test_coverage_note_says_what_is_used_instead():
    here, other = _t(mcpu="rocketlake"), _t(mcpu="znver4")
    assert coverage_note({here: 3, other: 5}, here) is None
    note = coverage_note({other: 5}, here)
    assert "no schedules for llvm rocketlake" in note and "5 for llvm znver4 (avx512)" in note
    assert "used as candidates" in note
    assert "ignored (`same_target_only`)" in coverage_note({other: 5}, here, same_target_only=True)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """tiny_cnn's records, half of each workload's labelled for a foreign CPU and made 10x
    faster there: (path, host target, foreign target)."""
    path = tmp_path_factory.mktemp("mixed") / "m.db"
    assert not ingest(Store(path), [FIXTURES / "tiny_cnn"]).rejected
    here, foreign = canonical(parse_target(None)), foreign_target()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE records SET target = ?", (here,))
        conn.execute("UPDATE records SET target = ?, mean_s = mean_s / 10 WHERE id % 2 = 0", (foreign,))
    return path, here, foreign


def test_top_records_rank_this_target_first_then_the_closest(mixed):
    path, here, foreign = mixed
    store = Store(path, readonly=True)
    wid, n = store.conn.execute("SELECT workload_id, COUNT(*) FROM records GROUP BY workload_id"
                                " HAVING COUNT(*) > 4").fetchone()
    top = store.records.top(wid, here, n)
    # This host's records first although the foreign ones claim to be faster (another CPU's
    # times do not compare), then the foreign ones; fastest first within a target.
    targets = [r["target"] for r in top]
    assert targets == sorted(targets, key=lambda t: t != here) and set(targets) == {here, foreign}
    for t in (here, foreign):
        times = [r["mean_s"] for r in top if r["target"] == t]
        assert times == sorted(times)
    assert all(r["target"] == here for r in store.records.top(wid, here, 4, max_distance=SAME))
    # No target: the fastest of any.
    assert store.records.top(wid, None, 1)[0]["target"] == foreign


def test_metaschedule_database_serves_this_target_first(mixed):
    from tvm.s_tir.meta_schedule.database import Workload

    import schedb

    path, here, foreign = mixed
    store = Store(path, readonly=True)
    wid, ms_workload = store.conn.execute(
        "SELECT w.id, w.ms_workload FROM workloads w JOIN records r ON r.workload_id = w.id"
        " GROUP BY w.id HAVING COUNT(*) > 4").fetchone()
    workload = Workload.from_json(json.loads(ms_workload))
    ranked = schedb.Database(path, target=parse_target(None)).get_top_k(workload, 3)
    assert canonical(ranked[0].target) == here
    assert canonical(schedb.Database(path, target=parse_target(json.loads(foreign))).get_top_k(workload, 1)[0]
                     .target) == foreign


def test_model_summary_has_a_row_per_target(mixed):
    path, here, foreign = mixed
    rows = Store(path, readonly=True).db.query(
        "SELECT target, tasks, tasks_with_schedule, records FROM model_summary WHERE model = 'tiny_cnn'")
    by_target = {r["target"]: r for r in rows}
    assert set(by_target) == {here, foreign}
    n = Store(path, readonly=True).conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    assert by_target[here]["records"] + by_target[foreign]["records"] == n


def test_schema_3_file_migrates_to_per_target_views(tmp_path, monkeypatch):
    import schedb.store.schema

    path = tmp_path / "v3.db"
    with monkeypatch.context() as m:
        m.setattr(schedb.store.schema, "SCHEMA_VERSION", 3)
        ingest(Store(path), [FIXTURES / "tiny_mlp"])
    assert Store(path, readonly=True).version() == 3
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(model_summary)")]
    assert "target" not in cols
    store = Store(path)
    assert store.version() == SCHEMA_VERSION == 8
    (row,) = store.db.query("SELECT * FROM model_summary WHERE model = 'tiny_mlp'")
    assert json.loads(row["target"])["kind"] == "llvm" and row["records"] > 0
    assert row["tasks_with_schedule"] == row["tasks"]
    assert all(r["target"] for r in store.db.query("SELECT target FROM record_lineage LIMIT 5"))
    assert "choices" in store.db.table_names()  # schema 6: no choice yet, the stored times rank
    assert store.choices.get(1, row["target"]) is None


@pytest.fixture(scope="module")
def foreign_db(tmp_path_factory):
    """tiny_cnn's fixture with every record labelled for a foreign CPU."""
    path = tmp_path_factory.mktemp("foreign") / "f.db"
    assert not ingest(Store(path), [FIXTURES / "tiny_cnn"]).rejected
    relabel(path, foreign_target())
    return path


def test_neighbors_cli_finds_foreign_records_and_says_so(foreign_db):
    res = CliRunner().invoke(cli, ["neighbors", "--model", "tiny_cnn_wide", "--db", str(foreign_db), "-k", "1"])
    assert res.exit_code == 0, explain(res)
    assert "note: the database holds no schedules for" in res.output
    assert label(foreign_target()).split(" (")[0] in res.output  # the "tuned for" column
    strict = CliRunner().invoke(cli, ["neighbors", "--model", "tiny_cnn_wide", "--db", str(foreign_db),
                                      "--same-target-only"])
    assert strict.exit_code == 0, explain(strict)
    assert "ignored (--same-target-only)" in strict.output
    table = strict.output.split("--same-target-only)")[1]
    assert "tiny_cnn" not in table and "(exact)" not in table  # no neighbour from the foreign records
    as_json = CliRunner().invoke(cli, ["neighbors", "--model", "tiny_cnn_wide", "--db", str(foreign_db), "-k", "1",
                                       "--json"])
    assert as_json.exit_code == 0, explain(as_json)
    tasks = json.loads(as_json.stdout)
    assert tasks and all(set(t) == {"task", "kind", "neighbors"} for t in tasks)
    nb = next(n for t in tasks for n in t["neighbors"])
    assert nb["rank"] == 1 and nb["models"] == ["tiny_cnn"] and nb["same_target"] is False
    assert nb["target"]["mcpu"] == json.loads(foreign_target())["mcpu"]
    assert "] lowering the model and extracting its tasks ..." in as_json.stderr  # progress, on stderr


def test_droplet_cli_refines_foreign_records_for_this_cpu(foreign_db, tmp_path):
    db = tmp_path / "d.db"
    ingest(Store(db), [foreign_db])
    store = Store(db)
    wid = store.conn.execute("SELECT w.id FROM workloads w JOIN records r ON r.workload_id = w.id"
                             " WHERE w.kind LIKE '%conv2d%' GROUP BY w.id ORDER BY w.id LIMIT 1").fetchone()[0]
    res = CliRunner().invoke(cli, ["droplet", "--workload", str(wid), "--db", str(db), "--trials", "4",
                                   "--starts", "1", "--save-path"])
    assert res.exit_code == 0, explain(res)
    here, foreign = canonical(parse_target(None)), foreign_target()
    rows = store.conn.execute("SELECT r.target, p.target FROM records r JOIN records p ON p.id = r.parent_id"
                              " WHERE r.origin = 'droplet'").fetchall()
    assert rows and all(mine == here and parent == foreign for mine, parent in rows)
    strict = CliRunner().invoke(cli, ["droplet", "--workload", str(wid), "--db", str(db), "--trials", "2",
                                      "--same-target-only"])
    # Now this CPU has droplet records of its own; with none, strict mode says why and fails.
    assert strict.exit_code == 0, explain(strict)
    store.conn.execute("DELETE FROM run_tasks")  # the droplet runs' tasks name those records
    store.conn.execute("DELETE FROM records WHERE origin = 'droplet'")
    strict = CliRunner().invoke(cli, ["droplet", "--workload", str(wid), "--db", str(db), "--trials", "2",
                                      "--same-target-only"])
    assert strict.exit_code == 1 and "nothing to refine" in strict.output, explain(strict)


def test_export_target_filter(foreign_db, tmp_path):
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "all"), "--db", str(foreign_db)])
    assert res.exit_code == 0, explain(res)
    n = int(res.output.split(" workloads, ")[1].split()[0])
    assert n > 0
    mine = CliRunner().invoke(cli, ["export", str(tmp_path / "mine"), "--db", str(foreign_db), "--target", "host"])
    # Nothing for this host: said in one line, a failure, and no empty work dir left behind.
    assert mine.exit_code == 1 and "0 records match" in mine.output, explain(mine)
    assert not (tmp_path / "mine").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".mine")]
    theirs = CliRunner().invoke(cli, ["export", str(tmp_path / "theirs"), "--db", str(foreign_db),
                                      "--target", foreign_target()])
    assert theirs.exit_code == 0 and f", {n} records" in theirs.output, explain(theirs)


def test_records_for_a_cpu_this_llvm_does_not_know_are_ingested(tmp_path):
    """Logs from a newer LLVM name CPUs this one lacks: the records are kept (labelled as
    written), only a target the user types is checked against LLVM's list."""
    from ingest_common import TINY_R, write_workdir

    from schedb.ingest import ingest
    from schedb.store import Store

    records = []
    for line in TINY_R:
        r = json.loads(line)
        r[1][2]["mcpu"] = "futurecpu9"
        records.append(json.dumps(r))
    report = ingest(Store(tmp_path / "a.db"), [write_workdir(tmp_path / "wd", records=records)])
    assert report.errors == [] and report.skipped_lines == 0 and report.new_records == len(TINY_R)
    targets = Store(tmp_path / "a.db", readonly=True).records.target_counts()
    assert [json.loads(t)["mcpu"] for t in targets] == ["futurecpu9"]
