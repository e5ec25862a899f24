"""Logs written by older TVM releases (0.25, 0.26): their workloads decode here with this
TVM's signatures, their work dirs ingest whole, and their records serve this TVM.

The files in fixtures/old_tvm were written by the releases themselves
(fixtures/old_tvm/make.py); the old TVM is not needed to run these tests."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from schedb.ingest import ingest
from schedb.ingest.sandbox import decode
from schedb.ingest.workdir import export_workdir, open_workdir
from schedb.models import load_model
from schedb.store import Store
from schedb.tir import upgrade
from schedb.tir.signature import signature
from schedb.tir.target import parse_target
from schedb.tir.tasks import extract_tasks, lower

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "old_tvm"
RELEASES = {"0.25": "0.25.0.post1", "0.26": "0.26.0"}
EXPECTED = json.loads((OLD / "signatures.json").read_text())  # this TVM's, per model and task


def exported(release: str, model: str) -> dict:
    with gzip.open(OLD / f"v{release}" / f"{model}.json.gz", "rt") as f:
        return json.load(f)


def workdir(release: str) -> Path:
    return OLD / f"v{release}" / "tiny_cnn"


def record_count(folder: Path) -> int:
    with gzip.open(folder / "database_tuning_record.json.gz", "rt") as f:
        return sum(1 for line in f if line.strip())


def signatures_of(release: str, model: str) -> dict:
    """Task name -> the signature of its workload as the release wrote it, decoded here."""
    out = {}
    for task in exported(release, model)["tasks"]:
        w = decode(json.dumps(task["workload"]).encode())
        assert isinstance(w, dict), f"{release} {model} {task['name']}: {w}"
        assert w["tvm_version"] == RELEASES[release]
        out[task["name"]] = w["signature"]
    return out


@pytest.mark.parametrize("release", sorted(RELEASES))
@pytest.mark.parametrize("model", ["tiny_cnn", pytest.param("alexnet", marks=pytest.mark.slow),
                                   pytest.param("resnet50", marks=pytest.mark.slow),
                                   pytest.param("googlenet", marks=pytest.mark.slow)])
def test_old_workloads_have_this_tvms_signatures(release, model):
    assert signatures_of(release, model) == EXPECTED[model]


@pytest.mark.parametrize("model", ["tiny_cnn", pytest.param("alexnet", marks=pytest.mark.slow),
                                   pytest.param("resnet50", marks=pytest.mark.slow),
                                   pytest.param("googlenet", marks=pytest.mark.slow)])
def test_expected_signatures_are_this_tvms_tasks(model):
    """The expected signatures are what schedb extracts from the model today."""
    target = parse_target(None)
    tasks = extract_tasks(lower(load_model(model), target), target)
    assert {t.name: signature(t.func)[0] for t in tasks} == EXPECTED[model]


def test_an_old_graph_fails_without_its_translation(monkeypatch):
    """What the tables do: without them, this TVM's loader refuses both releases' graphs."""
    monkeypatch.setattr(upgrade, "STEPS", [])
    for release in RELEASES:
        task = exported(release, "tiny_cnn")["tasks"][0]
        why = decode(json.dumps(task["workload"]).encode())
        assert isinstance(why, str) and "no translation from that release" in why, why


def test_a_release_without_a_translation_is_named():
    graph = {"root_index": 0, "nodes": [{"type": "None"}], "metadata": {"tvm_version": "0.24.1"}}
    with pytest.raises(upgrade.UpgradeError, match="TVM 0.24: no translation"):
        upgrade.upgrade(graph)


def test_what_this_tvm_cannot_express_is_refused_with_the_reason():
    """A predicated buffer load (0.26 has the field, 0.27 not): the line is skipped with
    why, not loaded without its predicate."""
    task = next(t for t in exported("0.26", "tiny_cnn")["tasks"] if "conv2d" in t["name"])
    shash, b64 = task["workload"]
    graph = json.loads(base64.b64decode(b64)[8:])
    load = next(n for n in graph["nodes"] if n["type"] == "tirx.BufferLoad")
    load["data"]["predicate"] = next(i for i, n in enumerate(graph["nodes"]) if n["type"] == "ir.IntImm")
    text = json.dumps(graph).encode()
    line = json.dumps([shash, base64.b64encode(len(text).to_bytes(8, "little") + text).decode()])
    assert decode(line.encode()) == "unreadable workload (a predicated buffer load (TVM 0.27 has none))"


def test_signature_reads_old_op_names():
    """A kernel with an intrinsic call (the padded convolution's if_then_else): the op's
    0.26 name gives the same description as this TVM's."""
    from schedb.tir.signature import op_name

    assert op_name("tirx.if_then_else") == op_name("prim.if_then_else") == "prim.if_then_else"
    conv = next(json.dumps(t["workload"]) for t in exported("0.26", "tiny_cnn")["tasks"]
                if "conv2d" in t["name"])
    assert '"call", "prim.if_then_else"' in json.dumps(decode(conv.encode())["description"])


@pytest.fixture(scope="module")
def old_db(tmp_path_factory) -> Path:
    """Both releases' tiny_cnn work dirs (plain MetaSchedule work dirs, no sidecar)."""
    path = tmp_path_factory.mktemp("old") / "old.db"
    store = Store(path)
    report = ingest(store, [workdir(r) for r in sorted(RELEASES)])
    store.close()  # its WAL checkpointed: the tests copy the file alone
    assert not report.rejected and not report.warnings, report.as_dict()
    return path


def test_old_workdirs_ingest_every_record_with_its_release(old_db):
    with sqlite3.connect(old_db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT r.tvm_version AS rv, w.tvm_version AS wv, w.signature, w.ms_workload, f.path"
                            " FROM records r JOIN workloads w ON w.id = r.workload_id"
                            " JOIN files f ON f.id = r.file_id").fetchall()
    for release, version in RELEASES.items():
        mine = [r for r in rows if f"/v{release}/" in r["path"]]
        assert len(mine) == record_count(workdir(release))  # none skipped
        assert {r["rv"] for r in mine} == {version}  # from the graphs' metadata: no sidecar
    assert {r["signature"] for r in rows} <= set(EXPECTED["tiny_cnn"].values())
    # Stored in this TVM's form: the first workload's version names the release that wrote it.
    for r in rows:
        graph = json.loads(base64.b64decode(json.loads(r["ms_workload"])[1])[8:])
        assert graph["metadata"]["tvm_version"].startswith("0.27")


def test_export_writes_old_records_in_this_tvms_form(old_db, tmp_path):
    """The exported work dir opens in this TVM's own JSONDatabase, which finds the old
    records for this TVM's tasks by its structural hash."""
    from tvm.s_tir.meta_schedule.database import Workload

    target = parse_target(None)
    n_workloads, n_records, bad = export_workdir(Store(old_db), tmp_path / "out")
    assert not bad and n_records == sum(record_count(workdir(r)) for r in RELEASES)
    db = open_workdir(tmp_path / "out")
    found = [t.name for t in extract_tasks(lower(load_model("tiny_cnn"), target), target)
             if db.has_workload(t.func) and db.get_top_k(Workload(t.func), 1)]
    assert len(found) == n_workloads and len(db) == n_records


def test_database_and_neighbors_serve_old_records_as_exact(old_db):
    from tvm.s_tir.meta_schedule.database import Workload

    from schedb.pipeline.neighbors import neighbors
    from schedb.store.database import Database

    target = parse_target(None)
    store = Store(old_db)
    tuned = {s for s in EXPECTED["tiny_cnn"].values() if store.workloads.id_of(s) is not None}
    assert tuned, "the old work dirs cover some of tiny_cnn's tasks"
    database = Database(old_db)
    served = [t.name for t in extract_tasks(lower(load_model("tiny_cnn"), target), target)
              if database.get_top_k(Workload(t.func), 1)]
    assert {EXPECTED["tiny_cnn"][name] for name in served} == tuned
    _, found = neighbors(store, load_model("tiny_cnn"), target, k=1)
    exact = {t.task for t in found if t.exact and t.exact[0]}
    assert exact == set(served)


def test_a_file_skipped_before_is_read_whole_once_readable(tmp_path, monkeypatch):
    """A schedb without the translation skips every line of an old work dir and stores
    nothing; the file stays unread (files.lines NULL), so a schedb that reads it stores
    every record on the next ingest, and a third ingest adds nothing."""
    db = tmp_path / "t.db"
    folder = workdir("0.26")
    with monkeypatch.context() as m:
        m.setattr(upgrade, "STEPS", [])  # as before this release of schedb
        first = ingest(Store(db), [folder])
    assert first.new_records == 0 and first.skipped_lines > 0
    second = ingest(Store(db), [folder])
    assert not second.rejected and second.new_records == record_count(folder) and second.duplicates == 0
    third = ingest(Store(db), [folder])
    assert third.already == 1 and third.new_records == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == record_count(folder)
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 1
        assert conn.execute("SELECT lines FROM files").fetchone()[0] is not None


@pytest.mark.slow
def test_transfer_takes_old_records_as_exact_matches(old_db, tmp_path, monkeypatch):
    """Every task the old work dirs cover gets its own old records as exact candidates,
    which replay here, build and run. The untuned kernel's samples are scaled up a
    thousandfold, so a candidate that runs always wins and the test is about matching."""
    from schedb.pipeline.transfer import Options, transfer
    from schedb.search.measure import Engine, Measurement

    measure = Engine.measure

    def untuned_slowest(engine, mods):
        out = measure(engine, mods)
        if len(mods) > 1 and out[0].ok:
            out[0] = Measurement([s * 1000 for s in out[0].samples])
        return out

    monkeypatch.setattr(Engine, "measure", untuned_slowest)
    db = tmp_path / "t.db"
    shutil.copy(old_db, db)
    store = Store(db)
    rep = transfer(store, load_model("tiny_cnn"), parse_target(None), Options(search_trials=0, e2e_repeat=0))
    covered = {r.task for r in rep.tasks if store.records.top(r.workload_id, None, 1)}
    assert covered and all(r.source == "exact" and r.source_workload_id == r.workload_id
                           for r in rep.tasks if r.task in covered), [(r.task, r.source, r.reason) for r in rep.tasks]
    versions = {store.records.get(r.source_record_id)["tvm_version"] for r in rep.tasks if r.task in covered}
    assert versions <= set(RELEASES.values())


@pytest.mark.slow
def test_every_old_trace_replays_on_this_tvms_task_unchanged(old_db):
    """The schedules of 0.25 and 0.26 apply to the task this TVM extracts, with no
    decision adapted (what transfer and schedb.Database then build)."""
    from schedb.tir.replay import apply_trace

    target = parse_target(None)
    store = Store(old_db)
    tasks = {signature(t.func)[0]: t for t in extract_tasks(lower(load_model("tiny_cnn"), target), target)}
    with sqlite3.connect(old_db) as conn:
        rows = conn.execute("SELECT w.signature, r.trace FROM records r JOIN workloads w ON w.id = r.workload_id"
                            " WHERE r.valid = 1").fetchall()
    assert len(rows) > len(RELEASES) and store.records.count() == sum(record_count(workdir(r)) for r in RELEASES)
    for sig, trace in rows:
        replayed = apply_trace(json.loads(trace), tasks[sig].func, target)
        assert replayed.error is None and replayed.adapted == 0, replayed.error


def test_a_workload_skipped_without_records_still_leaves_the_file_unread(tmp_path):
    """A workload line that cannot be read costs no record line (TVM keeps workloads
    without records), yet the work dir is read again next time: a later schedb may read it."""
    folder = tmp_path / "wd"
    shutil.copytree(workdir("0.26"), folder)
    with gzip.open(folder / "database_workload.json.gz", "at") as f:
        f.write('["1", "bm90IGEgZ3JhcGg="]\n')  # base64 of "not a graph": no length prefix
    db = tmp_path / "t.db"
    first = ingest(Store(db), [folder])
    assert first.skipped_lines == 1 and first.new_records == record_count(folder)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT lines FROM files").fetchone()[0] is None
    again = ingest(Store(db), [folder])
    assert again.already == 0 and again.new_records == 0 and again.duplicates == record_count(folder)
