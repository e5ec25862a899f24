"""Hostile input: every example of the reliability issue as a named regression test.

Each test feeds one crafted input beside good data and asserts what a user relies on:
no traceback and no crash, every good record stored, nothing bad stored as valid."""

from __future__ import annotations

import base64
import gzip
import json
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_common import (
    RECORDS, TINY, TINY_R, TINY_W, WORKLOADS, ansor_line, cli_ok, run_secs_valid, write_ansor, write_workdir,
)

from schedb_cli.main import cli
from schedb.ingest import ingest
from schedb.store import Store
from schedb.store.schema import SCHEMA_VERSION


# --------------------------------------------------------------------------- helpers
def graph_of(line: str) -> tuple[str, dict]:
    """(structural hash, TVM's JSON graph) of a workload line."""
    shash, b64 = json.loads(line)
    return shash, json.loads(base64.b64decode(b64)[8:])


def workload_line(shash: str, graph: dict, prefix: int | None = None) -> str:
    text = json.dumps(graph).encode()
    blob = struct.pack("<Q", len(text) if prefix is None else prefix) + text
    return json.dumps([shash, base64.b64encode(blob).decode()])


def self_referencing(line: str) -> str:
    """The workload with an array node that contains itself (segfaults TVM's loader)."""
    shash, g = graph_of(line)
    i = next(i for i, n in enumerate(g["nodes"]) if n["type"] == "ffi.Array" and n["data"])
    g["nodes"][i]["data"][0] = i
    return workload_line(shash, g)


def string_body(line: str) -> str:
    """The workload with its PrimFunc's body replaced by a string."""
    shash, g = graph_of(line)
    s = next(i for i, n in enumerate(g["nodes"]) if n["type"] == "ffi.String")
    func = next(n for n in g["nodes"] if n["type"] == "tirx.PrimFunc")
    func["data"]["body"] = s
    return workload_line(shash, g)


def records_of(store, index: int) -> int:
    """How many of TINY_R's lines name workload ``index``."""
    return sum(json.loads(r)[0] == index for r in TINY_R)


def bad_valid(store) -> int:
    """Records stored as valid whose run times are not real times."""
    rows = store.conn.execute("SELECT run_secs, mean_s FROM records WHERE valid = 1").fetchall()
    return sum(not run_secs_valid(json.loads(s)) or not m or m <= 0 for s, m in rows)


def with_run_secs(line: str, run_secs) -> str:
    r = json.loads(line)
    r[1][1] = run_secs
    return json.dumps(r)


# --------------------------------------------------------------------------- 1. crafted workloads
@pytest.mark.parametrize("craft, why", [
    (self_referencing, "crashed TVM's workload loader (SIGSEGV)"),
    (lambda line: workload_line(*graph_of(line), prefix=2 ** 31), "length prefix"),
    (string_body, ""),
])
def test_crafted_workload_line_is_skipped_and_the_rest_stored(tmp_path, craft, why):
    bad = 0
    wd = write_workdir(tmp_path / "wd", workloads=[craft(TINY_W[bad])] + TINY_W[1:])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.errors == []
    assert any(f"{wd / WORKLOADS}:1: skipped" in w and why in w for w in report.warnings), report.warnings
    assert report.new_records == len(TINY_R) - records_of(store, bad)
    assert store.counts()["workloads"] == len(TINY_W) - 1


# --------------------------------------------------------------------------- 2. bad bytes and lines
def test_non_utf8_byte_loses_only_its_line(tmp_path):
    wd = write_workdir(tmp_path / "wd")
    lines = (wd / RECORDS).read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"', b'"\xff', 1)
    (wd / RECORDS).write_bytes(b"".join(lines))
    report = ingest(Store(tmp_path / "a.db"), [wd])
    assert report.new_records == len(TINY_R) - 1 and report.skipped_lines == 1
    assert f"{wd / RECORDS}:3: skipped: not JSON" in report.warnings[0]


@pytest.mark.parametrize("first, kept_first", [
    ('{"i": [], "r": [[1e-5], 0, 0.1, 1700000000]}', False),  # malformed record
    (ansor_line(0)[:40], False),  # truncated first line
    (ansor_line(0).replace('"llvm -keys=cpu -mcpu', '"llvm\\ud800 -keys=cpu -mcpu', 1), False),  # lone surrogate
    (ansor_line(0).replace('"v0.6"', '"\\ud800"'), True),  # ... in the version: the record is kept
    ("\ufeff" + ansor_line(0), True),  # UTF-8 BOM on a good first line
])
def test_ansor_log_with_a_bad_first_line_keeps_the_others(tmp_path, first, kept_first):
    log = write_ansor(tmp_path / "legacy.json", [first] + [ansor_line(i) for i in range(1, 6)])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [log])
    assert report.errors == []
    assert report.new_records == 5 + kept_first and report.skipped_lines == (not kept_first)
    if not kept_first:
        assert f"{log}:1: skipped" in report.warnings[0]


# --------------------------------------------------------------------------- 3. bad data stored as valid
@pytest.mark.parametrize("run_secs", [["6.1e-06"], [True], [5e-324], [-1e-5], [0], "6.1e-06", {"a": 1}])
def test_junk_run_times_are_skipped_not_stored_valid(tmp_path, run_secs):
    wd = write_workdir(tmp_path / "wd", records=[with_run_secs(TINY_R[0], run_secs)] + TINY_R[1:])
    log = write_ansor(tmp_path / "legacy.json", [ansor_line(0, costs=run_secs if isinstance(run_secs, list) else [])]
                      + [ansor_line(i) for i in range(1, 4)])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd, log])
    assert report.new_records == len(TINY_R) - 1 + 3 + (not isinstance(run_secs, list))
    assert bad_valid(store) == 0


def test_workload_index_true_is_not_index_1(tmp_path):
    r = json.loads(TINY_R[0])
    r[0] = True
    wd = write_workdir(tmp_path / "wd", records=[json.dumps(r)] + TINY_R[1:])
    report = ingest(Store(tmp_path / "a.db"), [wd])
    assert report.new_records == len(TINY_R) - 1
    assert "workload_index" in report.warnings[0]


@pytest.mark.parametrize("key", ['"x"', "[]", "[1, [2]]", "{}"])
def test_ansor_workload_key_must_be_a_list_named_by_a_string(tmp_path, key):
    bad = json.loads(ansor_line(0))
    bad["i"][0][0] = key
    log = write_ansor(tmp_path / "legacy.json", [json.dumps(bad)] + [ansor_line(i) for i in range(1, 4)])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [log])
    assert report.new_records == 3 and store.counts()["workloads"] == 1
    assert "workload key" in report.warnings[0]


def test_trace_with_an_unregistered_instruction_is_not_stored(tmp_path):
    r = json.loads(TINY_R[0])
    r[1][0][0][0][0] = "NotAnInstruction"
    wd = write_workdir(tmp_path / "wd", records=[json.dumps(r)] + TINY_R[1:])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.new_records == len(TINY_R) - 1
    assert "'NotAnInstruction' is not registered" in report.warnings[0]
    out = tmp_path / "out"
    assert CliRunner().invoke(cli, ["export", str(out), "--db", str(tmp_path / "a.db")]).exit_code == 0
    assert b"NotAnInstruction" not in (out / RECORDS).read_bytes()


def test_an_unregistered_instruction_after_a_checked_list_is_not_stored(tmp_path):
    """Lines as TVM writes them (compact) whose instructions are an earlier valid line's plus
    one: the checked list is remembered by its text, and a longer one is checked anew."""
    compact = [json.dumps(json.loads(line), separators=(",", ":")) for line in TINY_R]
    r = json.loads(compact[0])
    r[1][0][0].append(["NotAnInstruction", [], [], []])
    wd = write_workdir(tmp_path / "wd", records=compact + [json.dumps(r, separators=(",", ":"))])
    report = ingest(Store(tmp_path / "a.db"), [wd])
    assert report.new_records == len(TINY_R)
    assert report.warnings == [f"{wd / RECORDS}:{len(TINY_R) + 1}: skipped: trace instruction "
                               "'NotAnInstruction' is not registered in this TVM"]


def test_merge_revalidates_records(tmp_path):
    """A schedb file whose rows carry junk run times or a negative mean with valid = 1."""
    src = Store(tmp_path / "src.db")
    ingest(src, [TINY])
    ids = [r[0] for r in src.conn.execute("SELECT id FROM records WHERE valid = 1 ORDER BY id LIMIT 3")]
    src.conn.execute("UPDATE records SET run_secs = '\"junk\"' WHERE id = ?", (ids[0],))
    src.conn.execute("UPDATE records SET mean_s = -1 WHERE id = ?", (ids[1],))
    src.conn.execute("UPDATE records SET trace = '[[[\"Nope\",[],[],[]]],[]]' WHERE id = ?", (ids[2],))
    src.close()
    store = Store(tmp_path / "a.db")
    report = ingest(store, [tmp_path / "src.db"])
    assert report.new_records == len(TINY_R) - 2 and report.skipped_lines == 2
    assert {w.split(": skipped")[0] for w in report.warnings} == {
        f"{tmp_path / 'src.db'}:record {ids[0]}", f"{tmp_path / 'src.db'}:record {ids[2]}"}
    assert bad_valid(store) == 0
    assert store.conn.execute("SELECT MIN(mean_s) FROM records").fetchone()[0] > 0


def test_merge_stores_an_empty_trace_invalid(tmp_path):
    """A merged record whose trace has no instructions, valid and fastest in its own file,
    is stored invalid with the reason, as from a work dir."""
    src = Store(tmp_path / "src.db")
    ingest(src, [TINY])
    rid, line = src.conn.execute("SELECT id, line FROM records WHERE valid = 1 ORDER BY id LIMIT 1").fetchone()
    src.conn.execute("UPDATE records SET trace = '[[],[]]', mean_s = 1e-9 WHERE id = ?", (rid,))
    src.close()
    store = Store(tmp_path / "a.db")
    report = ingest(store, [tmp_path / "src.db"])
    assert report.new_records == len(TINY_R) and report.errors == []
    valid, error = store.conn.execute("SELECT valid, error FROM records WHERE line = ?", (line,)).fetchone()
    assert valid == 0 and error.startswith("empty trace"), error


# --------------------------------------------------------------------------- 4. concurrent writers
_WRITER = """
import sys
from schedb.ingest import ingest
from schedb.store import Store
report = ingest(Store(sys.argv[1]), sys.argv[2:])
sys.exit(1 if report.errors or report.skipped_lines else 0)
"""


def test_concurrent_ingests_into_a_fresh_file_all_succeed(tmp_path):
    """Real processes, started together on a file that does not exist yet."""
    dirs = []
    for i in range(4):
        # Another tuning run each: distinct records (run times shifted), so every one counts.
        recs = [with_run_secs(r, [t * (1 + i / 100) for t in json.loads(r)[1][1]]) for r in TINY_R]
        dirs.append(write_workdir(tmp_path / f"wd{i}", records=recs))
    db = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(d)], env=env,
                              stderr=subprocess.PIPE, text=True) for d in dirs]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    store = Store(db, readonly=True)
    assert store.counts()["records"] == 4 * len(TINY_R)
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_opening_a_new_file_waits_for_another_writer(tmp_path):
    """A new file another connection holds a write lock on: opening it waits for the lock (as
    any write does) instead of failing at once, as SQLite does when switching to WAL."""
    db = tmp_path / "new.db"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: other.execute("ROLLBACK"))
    release.start()
    start = time.monotonic()
    store = Store(db)
    release.join()
    assert time.monotonic() - start >= 0.5 and store.version() == SCHEMA_VERSION


# --------------------------------------------------------------------------- 5. tracebacks and wrong files
def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    cli_ok(result)
    return result


def test_db_in_a_missing_folder_is_one_line(tmp_path):
    result = run("ingest", TINY, "--db", tmp_path / "nope" / "a.db")
    assert result.exit_code == 1 and "no such folder" in result.output
    assert not (tmp_path / "nope").exists()


def test_sql_results_that_are_not_utf8_or_overflow(tmp_path):
    ingest(Store(tmp_path / "a.db"), [TINY])
    result = run("sql", "SELECT CAST(x'41ff42' AS TEXT) AS t", "--db", tmp_path / "a.db", "--json")
    assert result.exit_code == 0 and json.loads(result.output) == [{"t": "A\ufffdB"}]
    result = run("sql", "SELECT abs(-9223372036854775807 - 1)", "--db", tmp_path / "a.db")
    assert result.exit_code == 1 and "integer overflow" in result.output


def test_schema_version_that_is_not_a_number(tmp_path):
    ingest(Store(tmp_path / "a.db"), [TINY])
    with sqlite3.connect(tmp_path / "a.db") as c:
        c.execute("UPDATE schema_info SET value = 'four' WHERE key = 'version'")
    result = run("sql", "SELECT 1", "--db", tmp_path / "a.db")
    assert result.exit_code == 1 and "schema version 'four' is not a number" in result.output


def test_record_id_beyond_64_bits(tmp_path):
    ingest(Store(tmp_path / "a.db"), [TINY])
    result = run("show", "record", 2 ** 64, "--db", tmp_path / "a.db")
    assert result.exit_code == 2 and "record_id" in result.output.lower()


def test_unreadable_subfolder_is_an_error_for_it_alone(tmp_path, monkeypatch):
    write_workdir(tmp_path / "logs" / "good")
    locked = tmp_path / "logs" / "locked"
    locked.mkdir()
    real = Path.iterdir

    def iterdir(self):  # (chmod cannot lock root out: refuse the listing instead)
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    report = ingest(Store(tmp_path / "a.db"), [tmp_path / "logs"])
    assert report.new_records == len(TINY_R)
    assert report.errors == [f"{locked}: cannot read folder (Permission denied)"]


@pytest.mark.parametrize("name", ["a#b.db", "a?mode=memory.db", "a%20b.db"])
def test_db_path_with_uri_characters_opens_that_file(tmp_path, name):
    ingest(Store(tmp_path / name), [TINY])
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [name]
    result = run("sql", "SELECT COUNT(*) AS n FROM records", "--db", tmp_path / name, "--json")
    assert json.loads(result.output) == [{"n": len(TINY_R)}]


# --------------------------------------------------------------------------- 6. export
@pytest.fixture
def tiny_db(tmp_path):
    ingest(Store(tmp_path / "a.db"), [TINY])
    return tmp_path / "a.db"


def test_export_refuses_a_work_dir_without_force_and_replaces_it_whole(tmp_path, tiny_db):
    old = write_workdir(tmp_path / "out", workloads=TINY_W[:1], records=TINY_R[:1])  # with a sidecar
    result = run("export", old, "--db", tiny_db)
    assert result.exit_code == 1 and "not empty" in result.output
    assert (old / RECORDS).read_text().count("\n") == 1
    assert run("export", old, "--db", tiny_db, "--force").exit_code == 0
    assert sorted(p.name for p in old.iterdir()) == [RECORDS, WORKLOADS]  # the old sidecar is gone
    assert (old / RECORDS).read_text().count("\n") == len(TINY_R)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_export_never_writes_through_a_symlink(tmp_path, tiny_db):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / RECORDS).symlink_to(outside)
    assert run("export", out, "--db", tiny_db, "--force").exit_code == 0
    assert outside.read_text() == "precious" and not (out / RECORDS).is_symlink()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert run("export", link, "--db", tiny_db).exit_code == 1
    assert not (tmp_path / "elsewhere").exists()


def test_failed_export_leaves_nothing(tmp_path, tiny_db, monkeypatch):
    result = run("export", "/proc/nope/out", "--db", tiny_db)
    assert result.exit_code == 1 and "/proc/nope/out" in result.output
    import schedb.ingest.workdir as workdir

    def fail(folder, rows):
        (folder / RECORDS).write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(workdir, "_write_workdir", fail)
    result = run("export", tmp_path / "out", "--db", tiny_db)
    assert result.exit_code == 1 and "No space left" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "a.db-shm", "a.db-wal"]


def test_export_leaves_out_records_whose_trace_does_not_parse(tmp_path, tiny_db):
    with sqlite3.connect(tiny_db) as c:
        c.execute("UPDATE records SET trace = '[[' WHERE id = 1")
    result = run("export", tmp_path / "out", "--db", tiny_db)
    assert result.exit_code == 0 and "left out 1 records" in result.output
    assert (tmp_path / "out" / RECORDS).read_text().count("\n") == len(TINY_R) - 1


# --------------------------------------------------------------------------- 7. unbounded work
def test_symlink_loops_visit_each_folder_once(tmp_path):
    logs = tmp_path / "logs"
    write_workdir(logs / "a" / "wd")
    (logs / "a" / "up").symlink_to(logs, target_is_directory=True)
    (logs / "a" / "self").symlink_to(logs / "a", target_is_directory=True)
    (logs / "b").symlink_to(logs / "a", target_is_directory=True)
    report = ingest(Store(tmp_path / "a.db"), [logs])
    assert report.errors == [] and report.files == 1 and report.new_records == len(TINY_R)


def test_a_file_of_junk_names_its_first_lines_then_counts(tmp_path):
    log = tmp_path / "junk.json.gz"
    with gzip.open(log, "wt") as f:
        f.write(ansor_line(0) + "\n")
        f.writelines("{junk\n" for _ in range(5000))
        f.write(ansor_line(1) + "\n")
    report = ingest(Store(tmp_path / "a.db"), [log])
    assert report.new_records == 2 and report.skipped_lines == 5000
    assert len(report.warnings) == 21 and report.warnings[-1] == f"{log}: 4980 more bad lines skipped"


def test_a_line_longer_than_the_cap_is_skipped_unread(tmp_path, monkeypatch):
    import schedb.ingest.lines as lines

    monkeypatch.setattr(lines, "MAX_LINE", 1 << 16)
    wd = write_workdir(tmp_path / "wd")
    with open(wd / RECORDS, "a") as f:
        f.write("[" + "1," * (1 << 17) + "1]\n")
        f.write(with_run_secs(TINY_R[0], [1.2345e-5]) + "\n")  # after it, reading goes on
    report = ingest(Store(tmp_path / "a.db"), [wd])
    assert report.new_records == len(TINY_R) + 1
    assert report.warnings == [f"{wd / RECORDS}:{len(TINY_R) + 1}: skipped: line longer than 0 MiB"]


# --------------------------------------------------------------------------- generated line damage
def _damage(line: bytes, data) -> bytes:
    how = data.draw(st.sampled_from(["byte", "bom", "cut", "surrogate", "type"]))
    if how == "byte":
        k = data.draw(st.integers(0, len(line)))
        return line[:k] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80"])) + line[k:]
    if how == "bom":
        return b"\xef\xbb\xbf" + line
    if how == "cut":
        return line[: data.draw(st.integers(0, len(line) - 1))]
    if how == "surrogate":
        return line.replace(b'"', b'"\\ud800', 1)
    # a value of another type where run times go
    r = json.loads(line)
    r[1][1] = data.draw(st.sampled_from([["1e-5"], [True], [5e-324], [None], "x", [[1e-5]]]))
    return json.dumps(r).encode()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_lines_lose_only_themselves(tmp_path_factory, data):
    """Any set of damaged record lines: every other line is stored, none of them valid-but-bad."""
    tmp = tmp_path_factory.mktemp("damage")
    lines = [r.encode() for r in TINY_R]
    hit = data.draw(st.sets(st.integers(0, len(lines) - 1), min_size=1, max_size=6))
    damaged = [_damage(line, data) if i in hit else line for i, line in enumerate(lines)]
    wd = write_workdir(tmp / "wd")
    (wd / RECORDS).write_bytes(b"\n".join(damaged) + b"\n")
    store = Store(tmp / "a.db")
    ingest(store, [wd])
    stored = {n for (n,) in store.conn.execute("SELECT line FROM records")}
    assert {i + 1 for i in range(len(lines)) if i not in hit} <= stored
    assert bad_valid(store) == 0
    store.close()


# --------------------------------------------------------------------------- replay where used
def test_a_record_that_does_not_replay_on_its_own_workload_is_marked_invalid(tmp_path):
    """A trace that passes ingest's checks (registered kinds, JSON shape) but cannot be
    replayed: transfer, the first to replay it, marks it invalid with the reason."""
    from schedb.models import load_model
    from schedb.pipeline.transfer import Options, transfer
    from schedb.tir.target import load_intrinsics, parse_target

    store = Store(tmp_path / "a.db")
    ingest(store, [TINY])
    best = store.conn.execute("SELECT id, trace FROM best_records ORDER BY mean_s DESC LIMIT 1").fetchone()
    trace = json.loads(best[1])
    trace[0][0][2] = ["no_such_block", "main"]  # GetSBlock of a block the workload lacks
    store.conn.execute("UPDATE records SET trace = ? WHERE id = ?", (json.dumps(trace), best[0]))
    target = parse_target(None)
    load_intrinsics(target)
    transfer(store, load_model("tiny_mlp"), target, Options(search_trials=0, e2e_repeat=1, k=1, per_source=1))
    valid, error = store.conn.execute("SELECT valid, error FROM records WHERE id = ?", (best[0],)).fetchone()
    assert valid == 0 and error.startswith("does not replay")


def test_sigkill_during_ingest_loses_nothing_committed_and_a_rerun_completes(tmp_path):
    """A real process killed while it writes: the file stays intact, a re-run is exact."""
    recs = [with_run_secs(r, [t * (1 + i / 1e4) for t in json.loads(r)[1][1]])
            for i in range(600) for r in TINY_R]  # 19200 distinct records
    wd = write_workdir(tmp_path / "wd", records=recs)
    db = tmp_path / "a.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(wd)], env=env)
    wal = tmp_path / "a.db-wal"
    while p.poll() is None and not (wal.exists() and wal.stat().st_size > 1 << 20):
        time.sleep(0.01)  # until the first records are being written
    p.kill()
    assert p.wait() == -9, "the ingest ended before it could be killed"
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    report = ingest(Store(db), [wd])
    assert report.errors == []
    assert Store(db, readonly=True).counts()["records"] == len(recs)


def test_export_force_replaces_only_a_work_dir_and_never_the_database(tmp_path, tiny_db):
    import os

    home = tmp_path / "home"
    home.mkdir()
    db = home / "mine.db"
    with sqlite3.connect(tiny_db) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    res = run("export", home, "--db", db, "--force")
    assert res.exit_code == 1 and "holds the database being exported" in res.output
    assert db.is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    res = run("export", other, "--db", tiny_db, "--force")
    assert res.exit_code == 1 and "holds more than a MetaSchedule work dir (thesis.tex)" in res.output
    assert (other / "thesis.tex").read_text() == "years of work"
    old = write_workdir(tmp_path / "out", workloads=TINY_W[:1], records=TINY_R[:1])
    os.chmod(old, 0o750)
    assert run("export", old, "--db", tiny_db, "--force").exit_code == 0
    assert (old.stat().st_mode & 0o777) == 0o750


def test_a_fifo_among_the_logs_is_skipped_not_read(tmp_path):
    """A FIFO with a log's suffix would block ingest forever once opened: it is passed over
    with a warning naming it, the logs beside it go in, and named explicitly it is refused."""
    import os
    import threading

    folder = tmp_path / "logs"
    write_workdir(folder / "run")
    os.mkfifo(folder / "pipe.json")
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("report", ingest(Store(tmp_path / "a.db"), [folder])),
                              daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "ingest blocked on the FIFO"
    report = box["report"]
    assert report.new_records == len(TINY_R)
    assert any("pipe.json: skipped: not a regular file" in w for w in report.warnings)
    named = ingest(Store(tmp_path / "b.db"), [folder / "pipe.json"])
    assert any("not a regular file" in e for e in named.errors)


def test_the_decoding_child_dies_with_a_killed_ingest(tmp_path):
    """SIGKILL to ingest while its workload-decoding child runs: the child goes too (it was
    left blocked on its pipe, holding the database open, for minutes)."""
    import psutil

    wd = write_workdir(tmp_path / "wd")
    script = (
        "import sys, time\n"
        "from schedb.ingest import sandbox\n"
        "real = sandbox._child\n"
        "def slow(*args):\n"
        "    time.sleep(120)  # a decode that takes long\n"
        "    real(*args)\n"
        "sandbox._child = slow\n"
        "from schedb.ingest import ingest\n"
        "from schedb.store import Store\n"
        f"ingest(Store({str(tmp_path / 'a.db')!r}), [{str(wd)!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    kids = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not kids:
            kids = psutil.Process(proc.pid).children()
            time.sleep(0.2)
        assert kids, "ingest never started its decoding child"
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, f"decoding child {[p.pid for p in alive]} outlived its parent"
    finally:
        proc.kill()
        for kid in kids:  # whatever the outcome, no process is left behind
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass


def test_a_record_for_an_impossible_target_is_not_stored_as_valid(tmp_path):
    """num-cores = -5 parses in TVM; no machine has it: the record is skipped with the reason."""
    records = []
    for i, line in enumerate(TINY_R):
        r = json.loads(line)
        if i == 0:
            r[1][2]["num-cores"] = -5
        records.append(json.dumps(r))
    report = ingest(Store(tmp_path / "a.db"), [write_workdir(tmp_path / "wd", records=records)])
    assert report.new_records == len(TINY_R) - 1 and report.skipped_lines == 1
    assert any("num-cores -5 is not a positive count" in w for w in report.warnings), report.warnings


def test_an_empty_trace_is_stored_invalid_with_the_reason(tmp_path):
    """A trace with no instructions, measured fast, became its workload's best record: it
    schedules nothing (the untuned kernel). Stored invalid, named; the others stay valid."""
    r = json.loads(TINY_R[0])
    r[1][0] = [[], []]
    r[1][1] = [1e-9]  # faster than anything: it would be the best record
    store = Store(tmp_path / "a.db")
    report = ingest(store, [write_workdir(tmp_path / "wd", records=[json.dumps(r)] + TINY_R[1:])])
    assert report.new_records == len(TINY_R) and report.errors == []
    valid, error = store.conn.execute("SELECT valid, error FROM records WHERE line = 1").fetchone()
    assert valid == 0 and error.startswith("empty trace"), error
    assert store.conn.execute("SELECT COUNT(*) FROM best_records WHERE line = 1").fetchone() == (0,)
    assert store.conn.execute("SELECT COUNT(*) FROM records WHERE valid = 1 AND line > 1").fetchone()[0] == \
        sum(run_secs_valid(json.loads(line)[1][1]) for line in TINY_R[1:])


def test_records_of_a_work_dir_with_workload_lines_out_of_order_are_invalid(tmp_path):
    """tiny_cnn's workload lines reversed: every record names a workload it was not tuned
    for. Those whose trace gets a block the workload has not are stored invalid with the
    reason, and one warning names the file; the work dir in order stores them valid."""
    from ingest_common import text_lines

    cnn = TINY.parent / "tiny_cnn"
    workloads, records = text_lines(cnn / (WORKLOADS + ".gz")), text_lines(cnn / (RECORDS + ".gz"))
    store = Store(tmp_path / "a.db")
    report = ingest(store, [write_workdir(tmp_path / "swapped", workloads=workloads[::-1], records=records)])
    assert report.new_records == len(records) and report.invalid >= len(records) - 1, report
    misfit = store.conn.execute("SELECT COUNT(*) FROM records WHERE error LIKE 'trace gets block %'").fetchone()[0]
    assert misfit >= len(records) - 2
    warned = [w for w in report.warnings if "not a schedule of the workload they name" in w]
    assert len(warned) == 1 and str(tmp_path / "swapped" / RECORDS) in warned[0], report.warnings
    good = ingest(Store(tmp_path / "b.db"), [write_workdir(tmp_path / "ordered", workloads=workloads, records=records)])
    assert good.invalid == sum(not run_secs_valid(json.loads(line)[1][1]) for line in records) and not good.warnings


def test_records_under_a_workload_of_the_same_block_names_are_invalid(tmp_path):
    """tiny_cnn's two convolutions have the same block names and other shapes: with their
    workload lines swapped, the block-name check passes every record. Their traces do not
    apply to the workload they name (tile factors for other extents): replayed at ingest,
    they are stored invalid, one warning per workload line; the rest stay valid."""
    from ingest_common import text_lines

    cnn = TINY.parent / "tiny_cnn"
    workloads, records = text_lines(cnn / (WORKLOADS + ".gz")), text_lines(cnn / (RECORDS + ".gz"))
    workloads[2], workloads[3] = workloads[3], workloads[2]
    store = Store(tmp_path / "a.db")
    report = ingest(store, [write_workdir(tmp_path / "swapped", workloads=workloads, records=records)])
    convs = [line for line in records if json.loads(line)[0] in (2, 3)]
    assert report.new_records == len(records) and report.errors == []
    bad = store.conn.execute("SELECT COUNT(*) FROM records WHERE error LIKE 'trace does not apply%'").fetchone()[0]
    assert bad == sum(run_secs_valid(json.loads(line)[1][1]) for line in convs)
    warned = [w for w in report.warnings if "their traces do not apply to it" in w]
    assert len(warned) == 2 and all(str(tmp_path / "swapped" / WORKLOADS) in w for w in warned), report.warnings
    assert report.invalid == sum(not run_secs_valid(json.loads(line)[1][1]) for line in records) + bad
    assert store.conn.execute("SELECT COUNT(*) FROM records r JOIN workloads w ON w.id = r.workload_id "
                              "WHERE r.valid = 1 AND w.kind LIKE '%conv2d%'").fetchone() == (0,)


def test_a_workloads_first_trace_not_applying_leaves_its_valid_records_valid(tmp_path):
    """The replay check starts on each workload's first trace in the file before the lines
    are parsed. A first line that is a failed measurement with another convolution's trace
    does not apply, and then the workload's valid traces decide: they apply, and only the
    failed line is invalid."""
    from ingest_common import text_lines

    cnn = TINY.parent / "tiny_cnn"
    workloads, records = text_lines(cnn / (WORKLOADS + ".gz")), text_lines(cnn / (RECORDS + ".gz"))
    other = next(json.loads(line) for line in records if json.loads(line)[0] == 3)
    stray = json.dumps([2, [other[1][0], [1e10], *other[1][2:]]])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [write_workdir(tmp_path / "wd", workloads=workloads, records=[stray] + records)])
    assert report.errors == [] and not any("do not apply" in w for w in report.warnings), report.warnings
    assert report.invalid == 1 + sum(not run_secs_valid(json.loads(line)[1][1]) for line in records)
    assert store.conn.execute("SELECT COUNT(*) FROM records WHERE error LIKE 'trace does not apply%'").fetchone() == (0,)


def test_a_first_line_that_applies_to_anything_does_not_clear_misplaced_records(tmp_path):
    """A failed measurement with an empty trace (which applies to any workload) put first
    for each swapped convolution: the replay check still decides on the first valid traces,
    so the misplaced records are stored invalid as without it."""
    from ingest_common import text_lines

    cnn = TINY.parent / "tiny_cnn"
    workloads, records = text_lines(cnn / (WORKLOADS + ".gz")), text_lines(cnn / (RECORDS + ".gz"))
    workloads[2], workloads[3] = workloads[3], workloads[2]
    head = json.loads(records[0])[1]
    strays = [json.dumps([i, [[[], []], [1e10], *head[2:]]]) for i in (2, 3)]
    store = Store(tmp_path / "a.db")
    report = ingest(store, [write_workdir(tmp_path / "wd", workloads=workloads, records=strays + records)])
    convs = [line for line in records if json.loads(line)[0] in (2, 3)]
    bad = store.conn.execute("SELECT COUNT(*) FROM records WHERE error LIKE 'trace does not apply%'").fetchone()[0]
    assert bad == sum(run_secs_valid(json.loads(line)[1][1]) for line in convs) > 0, report.warnings


def test_merged_records_under_a_workload_they_were_not_tuned_for_are_invalid(tmp_path):
    """Another schedb file whose convolution records name the other convolution (same block
    names, other shapes): merged, they are stored invalid with the reason and a warning;
    every other record keeps its validity."""
    cnn = TINY.parent / "tiny_cnn"
    source = Store(tmp_path / "a.db")
    ingest(source, [cnn])
    convs = [wid for (wid,) in source.conn.execute("SELECT id FROM workloads WHERE kind LIKE '%conv2d%'")]
    assert len(convs) == 2
    moved = source.conn.execute("SELECT COUNT(*) FROM records WHERE valid = 1 AND workload_id IN (?, ?)",
                                convs).fetchone()[0]
    with source.transaction():
        source.conn.execute("UPDATE records SET workload_id = CASE workload_id WHEN ? THEN ? ELSE ? END "
                            "WHERE workload_id IN (?, ?)", (convs[0], convs[1], convs[0], *convs))
    valid_before = source.conn.execute("SELECT COUNT(*) FROM records WHERE valid = 1").fetchone()[0]
    source.close()
    store = Store(tmp_path / "b.db")
    report = ingest(store, [tmp_path / "a.db"])
    assert report.errors == [] and report.new_records > 0
    bad = store.conn.execute("SELECT COUNT(*) FROM records WHERE error LIKE 'trace does not apply%'").fetchone()[0]
    assert bad == moved
    assert store.conn.execute("SELECT COUNT(*) FROM records WHERE valid = 1").fetchone()[0] == valid_before - moved
    assert sum("their traces do not apply to it" in w for w in report.warnings) == 2, report.warnings
