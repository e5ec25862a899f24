"""Merging schedb databases: everything kept, idempotent, old schemas and live files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


import schedb.ingest.ansor as ansor
import schedb.ingest.metaschedule as metaschedule
from ingest_common import RECORDS, TINY, TINY_R, ansor_line, logical, snapshot, write_ansor, write_workdir

from schedb.ingest import ingest
from schedb.store import Store
from schedb.store.tables import Workloads


# --------------------------------------------------------------------------- merge
def test_merge_preserves_everything_and_is_idempotent(tmp_path):
    a_path = tmp_path / "A.db"
    a = Store(a_path)
    ingest(a, [TINY, write_ansor(tmp_path / "ansor" / "legacy.json",
                                 [ansor_line(i) for i in range(4)] + [ansor_line(9, error_no=2)])])
    # A derived record (as transfer would write): lineage must survive the merge.
    parent = a.records.best(a.conn.execute("SELECT id FROM workloads WHERE shash IS NOT NULL").fetchone()[0])
    other_wid = a.conn.execute(
        "SELECT id FROM workloads WHERE id != ? AND shash IS NOT NULL", (parent["workload_id"],)).fetchone()[0]
    with a.transaction():
        child = a.records.add(
            workload_id=other_wid, target=parent["target"], format="ms-trace", trace=parent["trace"],
            run_secs="[2e-06]", mean_s=2e-6, valid=1, origin="transferred", parent_id=parent["id"],
            source_workload_id=parent["workload_id"], distance=0.25, digest="d" * 64)
    a.close()
    want = logical(sqlite3.connect(a_path))
    n_records, n_workloads = len(want["records"]), len(want["workloads"])

    b = Store(tmp_path / "B.db")
    report = ingest(b, [a_path])
    assert report.errors == [] and report.files == 1
    assert report.new_records == n_records and report.new_workloads == n_workloads
    got = logical(b.conn)
    for k in ("workloads", "records", "models", "tasks"):
        assert got[k] == want[k], k
    assert got["files"] - want["files"] == {
        (str(a_path.resolve()), hashlib.sha256(a_path.read_bytes()).hexdigest(), "schedb",
         a_path.stat().st_size, n_records)}  # merged whole: its record count
    # Provenance still leads to the original log lines, through the parent.
    new_child = b.conn.execute("SELECT id FROM records WHERE digest = ?", ("d" * 64,)).fetchone()[0]
    chain = b.records.lineage(new_child)
    assert [r["origin"] for r in chain] == ["transferred", "tuned"]
    assert chain[1]["file"] == str((TINY / (RECORDS + ".gz")).resolve()) and chain[1]["line"] == parent["line"]
    assert chain[0]["distance"] == 0.25
    a2 = Store(a_path, readonly=True)
    assert [(r["origin"], r["file"], r["line"], r["kind"]) for r in a2.records.lineage(child)] == \
        [(r["origin"], r["file"], r["line"], r["kind"]) for r in chain]
    a2.close()

    # Twice: nothing new; also nothing new when the same logs come directly.
    before = snapshot(b.conn)
    again = ingest(b, [a_path])
    assert again.already == 1 and again.new_records == 0 and again.new_workloads == 0
    direct = ingest(b, [TINY])
    assert direct.already == 1 and direct.new_records == 0
    assert snapshot(b.conn) == before


def _schema_2_db(path: Path, monkeypatch, sources) -> Path:
    """A database as schema 2's schedb wrote it: two migrations, digests as 64 hex
    characters of the full sha256 (the ingest code of schema 2)."""
    import schedb.store.schema

    def hex_digest(signature, target, trace, run_secs_text):
        return hashlib.sha256("\x1f".join((signature, target, trace, run_secs_text)).encode()).hexdigest()

    with monkeypatch.context() as m:
        m.setattr(schedb.store.schema, "SCHEMA_VERSION", 2)
        for parser in (metaschedule, ansor):  # where each format computes its digests
            m.setattr(parser, "digest_of_text", hex_digest)
        store = Store(path)
        report = ingest(store, sources)
        assert report.errors == [] and report.new_records > 0
        # A derived record whose lineage must survive the rebuild of the records table.
        parent = store.records.best(store.conn.execute(
            "SELECT id FROM workloads WHERE shash IS NOT NULL").fetchone()[0])
        with store.transaction():
            store.records.add(workload_id=parent["workload_id"], target=parent["target"], format="ms-trace",
                             trace=parent["trace"], run_secs="[3e-06]", mean_s=3e-6, valid=1,
                             origin="transferred", parent_id=parent["id"], digest="e" * 64)
        assert store.version() == 2
        store.close()
    return path


def test_schema_2_file_migrates_to_16_byte_digests(tmp_path, monkeypatch):
    """Schema 3 stores records.digest as 16 bytes. A schema 2 file is read as it is, and
    migrated in place on the first write: every record kept with its id and content, its
    digest the first 16 bytes of the old one (= what ingest computes now), so ingesting the
    same records again adds nothing."""
    from schedb.store.records import record_digest
    from schedb.store import SCHEMA_VERSION

    path = _schema_2_db(tmp_path / "v2.db", monkeypatch,
                        [TINY, write_ansor(tmp_path / "ansor" / "legacy.json",
                                           [ansor_line(i) for i in range(4)] + [ansor_line(9, error_no=2)])])
    cols = "id, workload_id, target, format, trace, run_secs, mean_s, valid, error, args_info, origin," \
           " parent_id, model_id, file_id, line, measured_at, tvm_version, created_at"
    conn = sqlite3.connect(path)
    old_rows = conn.execute(f"SELECT {cols} FROM records ORDER BY id").fetchall()
    old_digests = dict(conn.execute("SELECT id, digest FROM records"))
    old_best = conn.execute("SELECT id FROM best_records ORDER BY id").fetchall()
    conn.close()
    assert all(isinstance(d, str) and len(d) == 64 for d in old_digests.values())

    ro = Store(path, readonly=True)  # read as it is
    assert ro.version() == 2 and ro.counts()["records"] == len(old_rows)
    ro.close()
    # ... and merged as it is into a new database, digests converted as the migration does.
    merged = Store(tmp_path / "merged.db")
    report = ingest(merged, [path])
    assert report.errors == [] and report.new_records == len(old_rows)

    store = Store(path)  # opening for writing migrates
    assert store.version() == SCHEMA_VERSION == 8
    assert store.conn.execute(f"SELECT {cols} FROM records ORDER BY id").fetchall() == old_rows
    assert store.conn.execute("SELECT id FROM best_records ORDER BY id").fetchall() == old_best
    assert store.conn.execute("SELECT type FROM pragma_table_info('records') WHERE name = 'digest'"
                              ).fetchone() == ("BLOB",)
    for rid, digest, typ in store.conn.execute("SELECT id, digest, typeof(digest) FROM records"):
        assert typ == "blob" and digest == bytes.fromhex(old_digests[rid])[:16]
    for sig, target, trace, run_secs, digest in store.conn.execute(
            "SELECT w.signature, r.target, r.trace, r.run_secs, r.digest FROM records r"
            " JOIN workloads w ON w.id = r.workload_id WHERE r.origin != 'transferred'"):
        assert digest == record_digest(sig, target, trace, json.loads(run_secs))
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    child = store.conn.execute("SELECT id FROM records WHERE origin = 'transferred'").fetchone()[0]
    assert [r["origin"] for r in store.records.lineage(child)] == ["transferred", "tuned"]
    assert {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")} == \
        {"best_records", "record_lineage", "model_summary"}
    store.conn.execute("SELECT * FROM model_summary").fetchall()
    assert store.conn.execute("SELECT * FROM record_lineage WHERE depth = 1").fetchall()

    # The same records again (another file, so not skipped by its hash) add nothing.
    before = snapshot(store.conn)
    again = ingest(store, [write_workdir(tmp_path / "plain")])
    assert again.files == 1 and again.new_records == 0 and again.duplicates == len(TINY_R)
    assert snapshot(store.conn)["records"] == before["records"]
    # Nor does the merged copy of the old file, or that file itself (already ingested there).
    assert ingest(merged, [write_workdir(tmp_path / "plain2")]).new_records == 0
    assert logical(merged.conn)["records"] == logical(store.conn)["records"]
    assert ingest(merged, [path]).new_records == 0


def test_merge_of_a_database_that_is_still_open(tmp_path):
    """A database being written to (WAL not yet checkpointed, e.g. a tuning run using
    schedb.Database) can be merged repeatedly; each merge brings what is new."""
    a = Store(tmp_path / "A.db")
    ingest(a, [write_ansor(tmp_path / "one.json", [ansor_line(i) for i in range(5)])])
    b = Store(tmp_path / "B.db")
    assert ingest(b, [a.path]).new_records == 5
    ingest(a, [write_ansor(tmp_path / "two.json", [ansor_line(i) for i in range(5, 12)])])
    report = ingest(b, [a.path])
    assert report.errors == [] and report.new_records == 7
    assert b.counts()["records"] == a.counts()["records"] == 12


def test_merge_reads_one_consistent_snapshot(tmp_path, monkeypatch):
    """Rows added to the source while it is being merged are not half-seen."""
    a = Store(tmp_path / "A.db")
    ingest(a, [write_ansor(tmp_path / "one.json", [ansor_line(i) for i in range(3)])])
    b = Store(tmp_path / "B.db")
    real = Workloads.upsert
    late = write_ansor(tmp_path / "late.json", [ansor_line(i, key_hash="late") for i in range(2)])
    state = {"done": False}

    def upsert_workload(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.store is b and not state["done"]:
            state["done"] = True
            ingest(a, [late])  # a concurrent writer adds a workload and its records
        return out

    monkeypatch.setattr(Workloads, "upsert", upsert_workload)
    report = ingest(b, [a.path])
    assert state["done"]
    assert report.errors == [] and report.new_records in (3, 5)
    monkeypatch.undo()
    ingest(b, [a.path])
    assert b.counts()["records"] == 5


def test_a_lineage_that_loops_ends(tmp_path):
    """A parent_id cycle (a damaged or forged database) ends the walk instead of hanging
    provenance and show record; the CLI says where it loops."""
    from click.testing import CliRunner

    from schedb_cli.main import cli

    db = tmp_path / "a.db"
    ingest(Store(db), [TINY])
    with sqlite3.connect(db) as conn:
        a, b = [r[0] for r in conn.execute("SELECT id FROM records ORDER BY id LIMIT 2")]
        conn.execute("UPDATE records SET parent_id = ? WHERE id = ?", (b, a))
        conn.execute("UPDATE records SET parent_id = ? WHERE id = ?", (a, b))
        conn.execute("UPDATE records SET parent_id = id WHERE id = ?", (b + 1,))
    store = Store(db, readonly=True)
    assert [r["id"] for r in store.records.lineage(a)] == [a, b]
    assert [r["id"] for r in store.records.lineage(b + 1)] == [b + 1]
    res = CliRunner().invoke(cli, ["provenance", str(a), "--db", str(db)])
    assert res.exit_code == 0 and f"parent {a} is already in the chain" in res.output
    shown = CliRunner().invoke(cli, ["show", "record", str(b + 1), "--db", str(db)])
    assert shown.exit_code == 0, shown.output


def test_one_bad_row_does_not_reject_the_good_ones(tmp_path):
    """A merged database with a workload whose shapes are not JSON and a task naming a
    workload that is not there: those rows (and the broken workload's records) are skipped
    and named; every other record comes in."""
    src = tmp_path / "src.db"
    ingest(Store(src), [TINY])
    with sqlite3.connect(src) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        bad = conn.execute("SELECT id FROM workloads ORDER BY id LIMIT 1").fetchone()[0]
        lost = conn.execute("SELECT COUNT(*) FROM records WHERE workload_id = ?", (bad,)).fetchone()[0]
        conn.execute("UPDATE workloads SET shapes = '[[1,' WHERE id = ?", (bad,))
        model = conn.execute("SELECT id FROM models LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO model_tasks (model_id, workload_id, task_name, weight) VALUES (?, 9999, 'x', 1)",
                     (model,))
    report = ingest(Store(tmp_path / "b.db"), [src])
    assert report.errors == [] and report.new_records == len(TINY_R) - lost > 0
    assert any(f"workload {bad}: skipped: malformed (JSONDecodeError)" in w for w in report.warnings), report.warnings
    assert any("workload 9999" in w and "not there" in w for w in report.warnings)
