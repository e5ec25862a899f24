"""Schema versioning: old files are read as they are and migrated forward on write."""

import sqlite3

import pytest

from schedb.errors import SchedbError
from schedb.store import SCHEMA_VERSION, Store
from schedb.store.tables import Records


def _as_version_1(path, monkeypatch):
    """A file as schema 1's schedb wrote it: only the first migration applied."""
    import schedb.store.schema

    with monkeypatch.context() as m:
        m.setattr(schedb.store.schema, "SCHEMA_VERSION", 1)
        Store(path).close()


def _indexes(path):
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    return names


def test_old_schema_is_read_and_migrated_on_write(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    _as_version_1(path, monkeypatch)
    assert Store(path, readonly=True).version() == 1  # readable as is
    assert "records_best_any" not in _indexes(path)
    store = Store(path)  # opening for writing migrates
    assert store.version() == SCHEMA_VERSION == 8
    assert {"records_best_any", "records_best", "records_parent", "records_model"} <= _indexes(path)
    assert store.conn.execute("SELECT type FROM pragma_table_info('records') WHERE name = 'digest'"
                              ).fetchone() == ("BLOB",)
    # Identity is unique per workload (a digest covers the signature): inserts stay local.
    unique = [name for _, name, is_unique, *_ in store.conn.execute("PRAGMA index_list(records)") if is_unique]
    assert [[c for _, _, c in store.conn.execute(f"PRAGMA index_info('{u}')")] for u in unique] == \
        [["workload_id", "digest"]]


def test_newer_or_foreign_files_are_refused(tmp_path):
    newer = tmp_path / "newer.db"
    Store(newer).conn.execute(f"UPDATE schema_info SET value = '{SCHEMA_VERSION + 1}'")
    with pytest.raises(SchedbError, match="newer schedb"):
        Store(newer)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    with pytest.raises(SchedbError, match="not a schedb database"):
        Store(foreign)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SchedbError):
        Store(junk)


def test_read_only_refuses_writes(tmp_path):
    path = tmp_path / "a.db"
    Store(path).close()
    ro = Store(path, readonly=True)
    with pytest.raises(sqlite3.DatabaseError):
        ro.conn.execute(f"VACUUM INTO '{tmp_path / 'copy.db'}'")
    assert not (tmp_path / "copy.db").exists()  # refused before SQLite creates the file


def test_package_root_exports_the_metaschedule_database():
    import schedb
    from schedb.store.database import Database

    assert schedb.Database is Database
    with pytest.raises(AttributeError):
        schedb.NoSuchThing


def test_insert_records_takes_dicts_or_tuples(tmp_path):
    store = Store(tmp_path / "a.db")
    with store.transaction():
        wid, _ = store.workloads.upsert("sig", "kind", [[1]], ["float32"])
        row = {"workload_id": wid, "target": "t", "format": "ms-trace", "trace": "[]", "valid": 1,
               "mean_s": 1e-3, "origin": "tuned", "created_at": "2026-01-01T00:00:00+00:00", "digest": "a"}
        as_tuple = tuple({**row, "digest": "b"}.get(c) for c in Records.COLUMNS)
        assert store.records.insert([row]) == 1
        assert store.records.insert([as_tuple]) == 1
        assert store.records.insert([row, as_tuple]) == 0  # duplicates by digest
    cols = ", ".join(c for c in Records.COLUMNS if c != "digest")
    a, b = store.conn.execute(f"SELECT {cols} FROM records ORDER BY digest").fetchall()
    assert a == b


def test_model_summary_counts_legacy_ansor_tasks_apart(tmp_path, monkeypatch):
    """A model with Relax tasks and legacy Ansor workloads (the seed logs' googlenet): the
    two are separate columns, also in a schema-4 file once migrated."""
    import schedb.store.schema
    from ingest_common import TINY, ansor_line, write_ansor

    from schedb.ingest import ingest

    log = write_ansor(tmp_path / "ansor" / "tiny_mlp.json", [ansor_line(i) for i in range(3)])
    path = tmp_path / "v4.db"
    with monkeypatch.context() as m:
        m.setattr(schedb.store.schema, "SCHEMA_VERSION", 4)
        store = Store(path)
        assert not ingest(store, [TINY]).errors and not ingest(store, [log], model="tiny_mlp").errors
        store.close()
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(model_summary)")]
    assert "legacy_tasks" not in cols
    store = Store(path)
    assert store.version() == SCHEMA_VERSION == 8
    rows = {r["target"]: r for r in store.db.query("SELECT * FROM model_summary WHERE model = 'tiny_mlp'")}
    assert len(rows) == 2  # this fixture's target and the Ansor log's
    legacy = next(r for t, r in rows.items() if '"core-avx2"' in t)
    relax = next(r for t, r in rows.items() if '"core-avx2"' not in t)
    assert relax["tasks"] == legacy["tasks"] == 2 and relax["legacy_tasks"] == legacy["legacy_tasks"] == 1
    assert relax["tasks_with_schedule"] == 2 and relax["legacy_tasks_with_schedule"] == 0
    assert legacy["tasks_with_schedule"] == 0 and legacy["records"] == 3


def _records_with_cycles(store) -> tuple[int, int, int, int]:
    """Four records: a its own parent, b and c each other's, d a child of b."""
    with store.transaction():
        wid, _ = store.workloads.upsert("sig", "kind", [[1]], ["float32"])
        row = {"workload_id": wid, "target": "t", "format": "ms-trace", "trace": "[]", "valid": 1,
               "mean_s": 1e-3, "origin": "tuned", "created_at": "2026-01-01T00:00:00+00:00"}
        store.records.insert([{**row, "digest": d} for d in "abcd"])
    a, b, c, d = [r for r, in store.conn.execute("SELECT id FROM records ORDER BY id")]
    with store.transaction():
        for child, parent in ((a, a), (b, c), (c, b), (d, b)):
            store.conn.execute("UPDATE records SET parent_id = ? WHERE id = ?", (parent, child))
    return a, b, c, d


@pytest.mark.parametrize("version", [3, 4, 5, 6])
def test_record_lineage_view_stops_at_a_cycle_once_migrated(tmp_path, monkeypatch, version):
    """A parent_id cycle made `SELECT * FROM record_lineage` run forever; a file of any
    earlier schema migrates to the view that stops at a parent already in the chain."""
    import schedb.store.schema

    path = tmp_path / f"v{version}.db"
    with monkeypatch.context() as m:
        m.setattr(schedb.store.schema, "SCHEMA_VERSION", version)
        store = Store(path)
        a, b, c, d = _records_with_cycles(store)
        store.close()
    store = Store(path)
    assert store.version() == SCHEMA_VERSION == 8
    cols, rows = store.query("SELECT record_id, depth, ancestor_id, cycle FROM record_lineage "
                             "ORDER BY record_id, depth", timeout=10)
    assert rows == [(a, 0, a, 1),
                    (b, 0, b, 0), (b, 1, c, 1),
                    (c, 0, c, 0), (c, 1, b, 1),
                    (d, 0, d, 0), (d, 1, b, 0), (d, 2, c, 1)]
    # The views of the other migrations are still there and answer.
    assert store.query("SELECT COUNT(*) FROM best_records", timeout=10)[1] == [(1,)]  # one workload, one target
    assert store.query("SELECT COUNT(*) FROM model_summary", timeout=10)[1] == [(0,)]
