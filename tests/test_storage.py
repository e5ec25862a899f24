"""Where the database lives: a full disk, a read-only filesystem, a new 0-byte file.

Each says what it is in one line; a WAL-mode database on a read-only filesystem can still
be queried and merged from. The filesystem tests mount a tiny tmpfs or a read-only bind
mount in a private mount namespace (``unshare -m``: the mounts vanish with the process);
they are skipped where mounting is not allowed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest_common import TINY, TINY_R, write_workdir

from schedb_cli.main import cli
from schedb.ingest import ingest
from schedb.store import Store

SCHEDB = str(Path(sys.executable).parent / "schedb")


def _can_mount(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none '{probe}'"],
                        capture_output=True).returncode == 0
    probe.rmdir()
    return ok


def _in_namespace(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """``script`` (sh) run in a private mount namespace with $SCHEDB set to the CLI."""
    if not _can_mount(tmp_path):
        pytest.skip("mounting a filesystem is not allowed here (needs unshare -m and CAP_SYS_ADMIN)")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "SCHEDB": SCHEDB, "HOME": str(tmp_path)})


# --------------------------------------------------------------------------- a full disk
def test_full_database_says_disk_full_and_stops(tmp_path):
    """SQLite rolls a transaction back itself when the disk fills: the ROLLBACK that followed
    read "cannot rollback - no transaction is active". One line says the disk is full, the
    inputs after it are not tried, and the file is as it was."""
    store = Store(tmp_path / "a.db")
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # a disk with 32 KiB left
    second = write_workdir(tmp_path / "second")
    report = ingest(store, [TINY, second])
    assert len(report.errors) == 1, report.errors
    assert "the disk is full" in report.errors[0] and "rollback" not in report.errors[0]
    assert str(tmp_path / "a.db") in report.errors[0]
    assert store.counts()["records"] == 0 and store.conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    store.conn.execute("PRAGMA max_page_count = 1073741823")  # space again: the same store goes on
    assert not ingest(store, [TINY]).errors and store.counts()["records"] == len(TINY_R)


def test_full_disk_on_a_write_query(tmp_path):
    store = Store(tmp_path / "a.db")
    ingest(store, [TINY])
    store.close()
    store = Store(tmp_path / "a.db")
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(Exception, match="the disk is full"):
        store.query("INSERT INTO records (workload_id, target, format, trace, run_secs, mean_s, valid, "
                    "origin, created_at, digest) SELECT workload_id, target, format, trace || ' ', run_secs, "
                    "mean_s, valid, origin, created_at, randomblob(16) FROM records")


@pytest.mark.slow
def test_full_filesystem_one_line(tmp_path):
    """Real small filesystems: one too small for a new database, one where an existing
    database has room for less than the records."""
    Store(tmp_path / "empty.db").close()
    room = (tmp_path / "empty.db").stat().st_size + (96 << 10)
    out = _in_namespace(tmp_path, f"""
        mkdir -p new old && mount -t tmpfs -o size=192k none new && mount -t tmpfs -o size={room} none old
        cp empty.db old/a.db
        "$SCHEDB" ingest '{TINY}' --db new/a.db 2>&1 && exit 3 || true
        "$SCHEDB" ingest '{TINY}' --db old/a.db 2>&1 && exit 4 || true
    """)
    assert out.returncode == 0, out.stdout + out.stderr
    for db in ("new/a.db", "old/a.db"):
        error = [line for line in out.stdout.splitlines() if db + ":" in line]
        assert len(error) == 1 and "the disk is full" in error[0], out.stdout
    assert "Traceback" not in out.stdout and "rollback" not in out.stdout


# --------------------------------------------------------------------------- read-only
@pytest.mark.slow
def test_read_only_filesystem(tmp_path):
    """A WAL-mode database on a read-only filesystem: queried (sql, show) and merged into
    another database; writing to it says the filesystem is read-only in one line."""
    ro = tmp_path / "ro"
    ro.mkdir()
    store = Store(ro / "a.db")
    ingest(store, [TINY])
    first = store.conn.execute("SELECT MIN(id) FROM records").fetchone()[0]
    store.close()
    assert not (ro / "a.db-wal").exists()  # closed cleanly: no -wal, no -shm beside it
    out = _in_namespace(tmp_path, f"""
        mount --bind ro ro && mount -o remount,ro,bind ro ro
        ! touch ro/x 2>/dev/null
        echo "== sql"; "$SCHEDB" sql "SELECT COUNT(*) FROM records" --db ro/a.db --csv
        echo "== show"; "$SCHEDB" show record {first} --db ro/a.db | head -3
        echo "== merge"; "$SCHEDB" ingest ro/a.db --db other.db 2>/dev/null
        echo "== write"; "$SCHEDB" ingest '{TINY}' --db ro/a.db 2>&1 && exit 3 || true
    """)
    assert out.returncode == 0, out.stdout + out.stderr
    parts = dict(p.split("\n", 1) for p in out.stdout.split("== ")[1:])
    assert parts["sql"].split() == ["COUNT(*)", str(len(TINY_R))], out.stdout + out.stderr
    assert re.match(rf"record\s+{first}\s", parts["show"]), out.stdout
    assert f"{len(TINY_R)} new records" in parts["merge"], out.stdout
    assert Store(tmp_path / "other.db", readonly=True).counts()["records"] == len(TINY_R)
    written = [line for line in parts["write"].splitlines() if "ro/a.db" in line]
    assert len(written) == 1 and "read-only" in written[0], parts["write"]


# --------------------------------------------------------------------------- a 0-byte file
def test_zero_byte_file_is_an_empty_database(tmp_path):
    """A new 0-byte file (touch, mktemp) is an empty database to read and to write."""
    empty = tmp_path / "empty.db"
    empty.touch()
    res = CliRunner().invoke(cli, ["sql", "SELECT COUNT(*) FROM records", "--db", str(empty), "--csv"])
    assert res.exit_code == 0 and res.output.split() == ["COUNT(*)", "0"], res.output
    res = CliRunner().invoke(cli, ["show", "record", "1", "--db", str(empty)])
    assert res.exit_code == 1 and "no record 1" in res.output, res.output
    assert empty.stat().st_size == 0  # reading it wrote nothing
    assert not ingest(Store(empty), [TINY]).errors
    assert Store(empty, readonly=True).counts()["records"] == len(TINY_R)
