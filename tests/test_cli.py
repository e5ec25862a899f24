"""The command line: sql, show, provenance and ingest reports."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3

import pytest
from click.testing import CliRunner

from helpers import explain
from ingest_common import ROOT, TINY, TINY_R, cli_ok, clone_db, snapshot

from schedb_cli.main import cli
from schedb.errors import SchedbError


# --------------------------------------------------------------------------- CLI
def test_cli_sql_is_read_only_by_default(mixed_db, tmp_path):
    db = clone_db(mixed_db, tmp_path / "c.db")
    before = snapshot(sqlite3.connect(db))
    runner = CliRunner()
    for stmt in ["DELETE FROM records", "INSERT INTO models (name, created_at) VALUES ('x', 'y')",
                 "DROP TABLE records", "CREATE TABLE t (x)", "UPDATE records SET valid = 1",
                 "PRAGMA user_version = 7"]:
        result = runner.invoke(cli, ["sql", stmt, "--db", str(db)])
        cli_ok(result)
        assert result.exit_code != 0, explain(result)
        assert "SQL error" in result.output and "readonly" in result.output, result.output
    for stmt in [f"VACUUM INTO '{tmp_path / 'copy.db'}'", f"ATTACH '{tmp_path / 'other.db'}' AS o"]:
        result = runner.invoke(cli, ["sql", stmt, "--db", str(db)])
        cli_ok(result)
        assert result.exit_code != 0 and "read-only" in result.output, explain(result)
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "other.db").exists()
    assert snapshot(sqlite3.connect(db)) == before
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 0

    for args, msg in [(["sql", "SELEC nonsense"], "SQL error"),
                      (["sql", "SELECT 1; DELETE FROM records"], "SQL error"),
                      (["sql", "SELECT 1", "--db", str(tmp_path / "missing.db")], "no such database")]:
        if "--db" not in args:
            args = [*args, "--db", str(db)]
        result = runner.invoke(cli, args)
        cli_ok(result)
        assert result.exit_code != 0 and msg in result.output, explain(result)
        assert "read-only" not in result.output, explain(result)  # the hint is for writes only
    assert not (tmp_path / "missing.db").exists()

    result = runner.invoke(cli, ["sql", "UPDATE records SET error = 'x' WHERE id = 1", "--db", str(db), "--write"])
    cli_ok(result)
    assert result.exit_code == 0, explain(result)
    assert sqlite3.connect(db).execute("SELECT error FROM records WHERE id = 1").fetchone()[0] == "x"


def test_cli_sql_csv_and_json(mixed_db):
    query = "SELECT id, workload_id, mean_s, valid, origin FROM records ORDER BY id"
    want = sqlite3.connect(mixed_db).execute(query).fetchall()
    runner = CliRunner()
    result = runner.invoke(cli, ["sql", query, "--db", str(mixed_db), "--json"])
    cli_ok(result)
    assert result.exit_code == 0, explain(result)
    rows = json.loads(result.stdout)
    assert [tuple(r.values()) for r in rows] == want
    assert list(rows[0]) == ["id", "workload_id", "mean_s", "valid", "origin"]

    result = runner.invoke(cli, ["sql", query, "--db", str(mixed_db), "--csv"])
    cli_ok(result)
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[0] == ["id", "workload_id", "mean_s", "valid", "origin"]
    assert len(table) == len(want) + 1
    for row, w in zip(table[1:], want):
        assert int(row[0]) == w[0] and row[4] == w[4]
        assert (row[2] == "" and w[2] is None) or float(row[2]) == w[2]

    result = runner.invoke(cli, ["sql", "SELECT model, tasks, records FROM model_summary", "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0 and "tiny_mlp" in result.output and "legacy" in result.output, explain(result)


def test_cli_sql_like_sqlite_utils(mixed_db):
    """-p parameters, the SQL from stdin, --nl / --tsv / -t, --json-cols, full values off a terminal."""
    db = ["--db", str(mixed_db)]
    conn = sqlite3.connect(mixed_db)
    runner = CliRunner()

    def run(*args, **kw):
        result = runner.invoke(cli, [*args, *db], **kw)
        cli_ok(result)
        assert result.exit_code == 0, explain(result)
        return result.stdout

    out = run("sql", "SELECT id, origin FROM records WHERE id <= :n AND origin = :o ORDER BY id",
              "-p", "n", "3", "-p", "o", "tuned", "--nl")
    assert [json.loads(x) for x in out.splitlines()] == [
        {"id": i, "origin": o} for i, o in conn.execute(
            "SELECT id, origin FROM records WHERE id <= 3 AND origin = 'tuned' ORDER BY id")]
    assert json.loads(run("sql", "-", "--json", input="SELECT COUNT(*) AS n FROM records")) == [
        {"n": conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]}]
    tsv = list(csv.reader(io.StringIO(run("sql", "SELECT id, origin FROM records ORDER BY id", "--tsv")),
                          dialect="excel-tab"))
    assert tsv[0] == ["id", "origin"] and len(tsv) == conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] + 1
    # --json-cols: run_secs as a list, not its text.
    rid, run_secs = conn.execute("SELECT id, run_secs FROM records WHERE run_secs IS NOT NULL LIMIT 1").fetchone()
    (row,) = json.loads(run("sql", "SELECT id, run_secs FROM records WHERE id = :id", "-p", "id", str(rid),
                            "--json-cols"))
    assert row == {"id": rid, "run_secs": json.loads(run_secs)}
    # Off a terminal (a pipe, a file) the table holds every value in full: no "…".
    trace, mean_s = conn.execute("SELECT trace, mean_s FROM records WHERE valid = 1 ORDER BY length(trace) DESC"
                                 " LIMIT 1").fetchone()
    for flags in ([], ["-t"], ["--table"]):
        out = run("sql", "SELECT trace, mean_s FROM records WHERE trace = :t", "-p", "t", trace, *flags)
        assert trace in out and repr(mean_s) in out and "…" not in out, out[:300]


def test_table_fits_the_terminal():
    from io import StringIO

    from rich.console import Console
    from schedb_cli.output import print_table

    buf = StringIO()
    print_table(["id", "trace"], [[1, "x" * 500], [2, "short"]], console=Console(file=buf, force_terminal=True, width=60, color_system=None))
    lines = buf.getvalue().splitlines()
    assert lines and all(len(x) <= 60 for x in lines) and "…" in buf.getvalue()


@pytest.mark.parametrize("fmt", ["--csv", "-t"])
def test_closed_pipe_is_quiet(mixed_db, fmt):
    """`schedb sql ... | head -1`: head's line, no 'Broken pipe' on stderr."""
    import subprocess
    import sys

    many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 300000) SELECT i, 'row' FROM n"
    cmd = f"{sys.executable} -m schedb_cli.main sql \"{many}\" --db {mixed_db} {fmt} | head -1"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() and proc.stderr == "", proc.stderr


def test_cli_sql_refuses_two_output_formats(mixed_db):
    result = CliRunner().invoke(cli, ["sql", "SELECT 1", "--csv", "--json", "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 2 and "--csv and --json exclude each other" in result.output, explain(result)


def _error_line(result) -> str:
    """The one line a failed command prints (click's usage errors and progress lines aside)."""
    lines = [x for x in result.output.splitlines() if x.strip() and not re.match(r"\[ *\d+\.\ds\] ", x)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), explain(result)
    return lines[0]


def test_failed_commands_create_no_files(mixed_db, tmp_path):
    runner = CliRunner()
    err_db = tmp_path / "err.db"
    result = runner.invoke(cli, ["ingest", str(tmp_path / "nonexistent"), "--db", str(err_db)])
    cli_ok(result)
    assert result.exit_code == 1 and "no such file or directory" in result.output, explain(result)
    assert "no database written" in result.output
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())  # neither err.db nor -wal / -shm

    # An existing database keeps what it holds when an ingest into it fails.
    db = clone_db(mixed_db, tmp_path / "c.db")
    before = snapshot(sqlite3.connect(db))
    result = runner.invoke(cli, ["ingest", str(tmp_path / "nonexistent"), "--db", str(db)])
    assert result.exit_code == 1 and db.exists() and snapshot(sqlite3.connect(db)) == before, explain(result)

    for args, msg in [(["export", "/proc/nope/out", "--db", str(db)],
                       "/proc/nope/out: cannot write there (No such file or directory)"),
                      (["ingest", str(TINY), "--db", str(tmp_path / "no" / "dir.db")], "no such folder"),
                      (["export", str(tmp_path / "out"), "--db", str(tmp_path / "none.db")], "no such database")]:
        result = runner.invoke(cli, args)
        cli_ok(result)
        assert result.exit_code == 1 and msg in _error_line(result), explain(result)
    assert not (tmp_path / "out").exists() and not (tmp_path / "none.db").exists() and not (tmp_path / "no").exists()

    # SCHEDB_DEBUG=1: the exception itself, for a traceback.
    result = runner.invoke(cli, ["export", "/proc/nope/out", "--db", str(db)], env={"SCHEDB_DEBUG": "1"})
    assert isinstance(result.exception, SchedbError), explain(result)


def test_unknown_mcpu_is_refused_with_the_cpus_llvm_knows(mixed_db, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "out"), "--target", "llvm -mcpu=notacpu",
                                      "--db", str(mixed_db)])
    cli_ok(result)
    line = _error_line(result)
    assert result.exit_code == 1 and "unknown mcpu 'notacpu'" in line, explain(result)
    assert "skylake-avx512" in line.split("it knows:")[1] and "znver4" in line  # LLVM's own list
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "out"), "--target", "llvm -mcpu=skylake-avx512",
                                      "--db", str(mixed_db)])
    # A CPU LLVM knows is taken; nothing in the database was tuned for it, which is said.
    assert result.exit_code == 1 and "0 records match target llvm skylake-avx512" in result.output, explain(result)
    assert not (tmp_path / "out").exists()


def _commands(cmd, path=("schedb",)):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_command_and_option_has_help():
    import click

    runner = CliRunner()
    seen = []
    for path, cmd in _commands(cli):
        result = runner.invoke(cli, [*path[1:], "--help"])
        assert result.exit_code == 0, explain(result)
        short = runner.invoke(cli, [*path[1:], "-h"])  # -h is --help on every command
        assert short.exit_code == 0 and short.output == result.output, explain(short)
        summary = result.output.split("Options:")[0].split("\n", 2)[-1].strip()
        assert summary and cmd.help and summary.startswith(cmd.help.split()[0]), (path, result.output)
        missing = [p.name for p in cmd.params if isinstance(p, click.Option) and not p.help]
        assert not missing, (path, missing)
        seen.append(" ".join(path))
    assert {"schedb show record", "schedb show workload", "schedb transfer"} <= set(seen)


def test_cli_show_and_provenance(mixed_db):
    conn = sqlite3.connect(mixed_db)
    wid, rid, line, path = conn.execute(
        "SELECT r.workload_id, r.id, r.line, f.path FROM records r JOIN files f ON f.id = r.file_id"
        " WHERE r.format = 'ms-trace' AND r.valid = 1 ORDER BY r.mean_s, r.id LIMIT 1").fetchone()
    ansor_rid = conn.execute("SELECT id FROM records WHERE format = 'ansor-steps' LIMIT 1").fetchone()[0]
    runner = CliRunner()

    result = runner.invoke(cli, ["show", "workload", str(wid), "--db", str(mixed_db), "--json"])
    cli_ok(result)
    w = json.loads(result.stdout)
    assert w["id"] == wid and w["models"] == ["tiny_mlp"] and w["best"]["id"] == rid
    assert w["records"] == conn.execute("SELECT COUNT(*) FROM records WHERE workload_id = ?", (wid,)).fetchone()[0]
    assert "ms_workload" not in w and isinstance(w["description"], dict)

    for r in (rid, ansor_rid):
        result = runner.invoke(cli, ["show", "record", str(r), "--db", str(mixed_db), "--json"])
        cli_ok(result)
        rec = json.loads(result.stdout)
        assert rec["id"] == r and isinstance(rec["trace"], list) and isinstance(rec["target"], dict)

    result = runner.invoke(cli, ["provenance", str(rid), "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0, explain(result)
    assert path in result.stdout and "tiny_mlp" in result.stdout  # the whole path, not cut (off a terminal)
    result = runner.invoke(cli, ["provenance", str(rid), "--db", str(mixed_db), "--json"])
    (row,) = json.loads(result.stdout)
    assert row["origin"] == "tuned" and row["model"] == "tiny_mlp" and row["id"] == rid
    assert row["file"] == path and row["line"] == line

    for args, msg in [(["show", "workload", "999999"], "no workload 999999"),
                      (["show", "record", "999999"], "no record 999999"),
                      (["provenance", "999999"], "no record 999999"),
                      (["show", "record", "abc"], "not a valid integer")]:
        result = runner.invoke(cli, [*args, "--db", str(mixed_db)])
        cli_ok(result)
        assert result.exit_code != 0 and msg in result.output, explain(result)


def test_cli_ingest_json_report(tmp_path):
    db = tmp_path / "a.db"
    result = CliRunner().invoke(cli, ["ingest", str(TINY), "--db", str(db), "--json"])
    cli_ok(result)
    assert result.exit_code == 0, explain(result)
    rep = json.loads(result.stdout)
    assert rep["new_records"] == len(TINY_R) and rep["files"] == 1 and rep["errors"] == []
    assert f"database_tuning_record.json.gz: 1 file, {len(TINY_R)} new records so far" in result.stderr
    result = CliRunner().invoke(cli, ["ingest", str(TINY), "--db", str(db)])
    assert result.exit_code == 0 and "(1 already in the database)" in result.output, explain(result)
    (tmp_path / "notes.txt").write_text("hello")
    result = CliRunner().invoke(cli, ["ingest", str(TINY), "--db", str(tmp_path / "notes.txt")])
    cli_ok(result)
    assert result.exit_code != 0 and "not a schedb database" in result.output, explain(result)


@pytest.fixture(scope="module")
def cnn_db(tmp_path_factory):
    """fixtures/tiny_cnn (conv2d records) ingested."""
    db = tmp_path_factory.mktemp("cnn") / "cnn.db"
    result = CliRunner().invoke(cli, ["ingest", str(ROOT / "fixtures" / "tiny_cnn"), "--db", str(db)])
    assert result.exit_code == 0, explain(result)
    return db


def test_show_record_is_a_table_and_tvms_python_schedule(cnn_db, tmp_path):
    conn = sqlite3.connect(cnn_db)
    rid, line, mean_s = conn.execute(
        "SELECT r.id, r.line, r.mean_s FROM records r JOIN workloads w ON w.id = r.workload_id"
        " WHERE w.kind LIKE '%conv2d%' AND r.valid = 1 ORDER BY length(r.trace) DESC LIMIT 1").fetchone()
    runner = CliRunner()
    result = runner.invoke(cli, ["show", "record", str(rid), "--db", str(cnn_db)])
    cli_ok(result)
    out = result.stdout
    assert result.exit_code == 0 and len(out.splitlines()) <= 60, out  # the longest conv2d trace of the fixture
    assert f"{mean_s * 1e6:.2f} us" in out and "tiny_cnn" in out and f"database_tuning_record.json.gz:{line}" in out
    assert "def apply_trace(sch: s_tir.Schedule) -> None:" in out
    assert 'sch.get_sblock(name="conv2d_nchw", func_name="main")' in out and "sample_perfect_tile" in out
    assert "postprocessing instructions" in out and "sch.enter_postproc()" not in out

    full = runner.invoke(cli, ["show", "record", str(rid), "--db", str(cnn_db), "--full"]).stdout
    assert "sch.enter_postproc()" in full and len(full.splitlines()) > len(out.splitlines())

    # A trace this TVM cannot read: the stored JSON, one instruction a line, and why.
    db = clone_db(cnn_db, tmp_path / "bad.db")
    with sqlite3.connect(db) as c:
        c.execute("UPDATE records SET trace = ? WHERE id = ?", ('[[["NoSuchInstruction",[],[],[]]],[]]', rid))
    result = runner.invoke(cli, ["show", "record", str(rid), "--db", str(db)])
    cli_ok(result)
    assert result.exit_code == 0 and "note: this TVM cannot read the trace" in result.stdout, explain(result)
    assert '["NoSuchInstruction", [], [], []]' in result.stdout


def test_show_record_of_a_legacy_ansor_log(mixed_db):
    rid = sqlite3.connect(mixed_db).execute("SELECT id FROM records WHERE format = 'ansor-steps'").fetchone()[0]
    result = CliRunner().invoke(cli, ["show", "record", str(rid), "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0 and "legacy Ansor" in result.stdout and '"SP"' in result.stdout, explain(result)


def test_show_workload_prints_its_tir(cnn_db):
    wid = sqlite3.connect(cnn_db).execute("SELECT id FROM workloads WHERE kind LIKE '%conv2d%'").fetchone()[0]
    result = CliRunner().invoke(cli, ["show", "workload", str(wid), "--db", str(cnn_db)])
    cli_ok(result)
    out = result.stdout
    assert result.exit_code == 0 and "@T.prim_func" in out and "def main(" in out and 'T.sblock("conv2d_nchw")' in out, out
    assert "tiny_cnn" in out and "record " in out  # models and the best record


def test_progress_heartbeat_inside_a_long_phase(capsys, monkeypatch):
    """Off a terminal, a phase that takes long says it is still running, every HEARTBEAT_S."""
    import time

    from schedb_cli.main import Reporter
    from schedb.pipeline.phases import phase

    monkeypatch.setattr(Reporter, "HEARTBEAT_S", 0.05)
    report = Reporter()
    with phase(report.phase, "compiling transferred"):
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("] compiling transferred ...") and lines[-1].endswith("compiling transferred: done in 0.3 s")
    beats = [x for x in lines if "compiling transferred: still running" in x]
    assert len(beats) >= 2 and len(lines) == len(beats) + 2
    time.sleep(0.15)
    assert capsys.readouterr().err == ""  # the heartbeat ends with its phase

    with pytest.raises(ValueError), phase(report.phase, "timing"):
        time.sleep(0.1)
        raise ValueError("x")
    time.sleep(0.15)
    lines = capsys.readouterr().err.splitlines()  # no "done", and the heartbeat stopped
    assert lines[0].endswith("] timing ...") and all("still running" in x for x in lines[1:3]) and len(lines) <= 3
    time.sleep(0.15)
    assert capsys.readouterr().err == ""


def test_sql_stops_a_query_that_runs_too_long(tiny_db):
    import time

    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["sql", endless, "--db", str(tiny_db), "--timeout", "1"])
    assert res.exit_code == 1 and "SQL stopped: took longer than 1 s (--timeout)" in res.output, res.output
    assert time.perf_counter() - t0 < 15
    ok = CliRunner().invoke(cli, ["sql", "SELECT COUNT(*) FROM records", "--db", str(tiny_db)])
    assert ok.exit_code == 0


def test_ingest_summary_explains_invalid_measurements_with_plurals(tmp_path):
    from ingest_common import ansor_line, write_ansor

    log = write_ansor(tmp_path / "legacy.json", [ansor_line(0), ansor_line(1, error_no=1, costs=[1e-9]),
                                                 ansor_line(2, error_no=4, costs=[1e-9])])
    res = CliRunner().invoke(cli, ["ingest", str(log), "--db", str(tmp_path / "a.db")])
    assert res.exit_code == 0, explain(res)
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("1 file ingested (0 already in the database), 1 new workload, 3 new records, "
                           "0 duplicates, 2 invalid measurements (Ansor error records: build or run failures), "
                           "0 lines skipped, 0 files rejected -> "), line
    mixed = CliRunner().invoke(cli, ["ingest", str(TINY), "--db", str(tmp_path / "a.db")])
    assert "1 file ingested" in mixed.stdout and ", 0 invalid measurements," in mixed.stdout, mixed.stdout


@pytest.mark.parametrize("text, bare, seconds", [
    ("90s", "s", 90), ("20m", "s", 1200), ("1h", "m", 3600), ("1.5h", "s", 5400), ("2min", "s", 120),
    ("45", "s", 45), ("2", "m", 120), ("0.5", "m", 30),
])
def test_durations_take_units_and_a_bare_number_keeps_its_unit(text, bare, seconds):
    from schedb_cli.params import Duration

    assert Duration(bare).convert(text, None, None) == seconds


def test_durations_on_the_command_line(tiny_db):
    import click

    from schedb_cli.params import Duration

    for bad in ("2x", "-5m", "m", "0"):
        with pytest.raises(click.BadParameter):
            Duration("m").convert(bad, None, None)
    assert Duration("s", zero=True).convert("0", None, None) == 0
    # Every duration option takes units: the commands' parameters say so.
    for path, cmd in _commands(cli):
        for p in cmd.params:
            if p.name in ("budget", "time_limit", "timeout"):
                assert isinstance(p.type, Duration) and "90s, 20m, 1h" in p.help, (path, p.name)
    res = CliRunner().invoke(cli, ["sql", "SELECT 1", "--db", str(tiny_db), "--timeout", "1m"])
    assert res.exit_code == 0, explain(res)
    res = CliRunner().invoke(cli, ["transfer", "-m", "tiny_mlp", "--budget", "soon", "--db", str(tiny_db)])
    assert res.exit_code == 2 and "'soon' is not a duration: use e.g. 90s, 20m or 1h" in res.output, res.output


def test_model_lists_repeat_or_take_commas():
    from schedb_cli.main import neighbors, transfer

    ctx = transfer.make_context("transfer", ["-m", "x", "--sources", "resnet50,alexnet", "--source", "vgg16",
                                             "--exclude-model", "a,b", "--exclude-model", "c"])
    assert ctx.params["sources"] == ["resnet50", "alexnet", "vgg16"] and ctx.params["exclude_model"] == ["a", "b", "c"]
    ctx = neighbors.make_context("neighbors", ["-m", "x", "--exclude-model", "a, b"])
    assert ctx.params["exclude_model"] == ["a", "b"]


def test_zoo_names_are_the_zoo():
    from schedb.models.zoo import ZOO
    from schedb.spec import ZOO_NAMES

    assert set(ZOO_NAMES) == set(ZOO)


@pytest.mark.parametrize("args, message", [
    (["transfer", "-m", "resnt50"], "unknown model 'resnt50' (did you mean 'resnet50'?)"),
    (["neighbors", "-m", "GoogLeNet"], "unknown model 'GoogLeNet' (did you mean 'googlenet'?)"),
    (["tune", "-m", "tiny_mlp", "--input-shape", "1,x", "-o", "out"], "bad --input-shape '1,x'"),
    (["bench", "-m", "nets/missing.onnx"], "nets/missing.onnx: no such file"),
    (["fast", "-m", "missing.py:make", "--budget", "1m"], "missing.py:make: no such file missing.py"),
    (["transfer", "-m", "tiny_mlp", "--target", '{"mcpu": "x"}'], "a JSON target is an object with a \"kind\""),
    (["neighbors", "-m", "tiny_mlp", "--db", "/nonexistent/x.db"], "no such database"),
    (["transfer", "-m", "tiny_mlp", "--db", "/nonexistent/x.db"], "no such folder"),
    (["transfer", "-m", "tiny_mlp", "--report", "/nonexistent/r.json"],
     "/nonexistent/r.json: no such folder '/nonexistent'"),
])
def test_fail_fast_before_tvm_or_torch(args, message):
    """A wrong model, shape, target or path fails in well under a second: TVM and PyTorch
    are never imported (a fresh interpreter, to see what got imported)."""
    import subprocess
    import sys

    code = ("import sys\nfrom schedb_cli.main import cli\n"
            f"try:\n    cli.main({args!r}, standalone_mode=False)\nexcept Exception as e:\n    print('ERR', e)\n"
            "print('tvm' in sys.modules, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("False False"), proc.stdout + proc.stderr
    assert message in proc.stdout, proc.stdout


def test_models_and_export_print_json(mixed_db, tmp_path):
    from schedb.spec import ZOO_NAMES

    res = CliRunner().invoke(cli, ["models", "--json"])
    assert res.exit_code == 0, explain(res)
    zoo = json.loads(res.stdout)
    assert [m["model"] for m in zoo] == list(ZOO_NAMES)
    assert zoo[-1] == {"model": "tiny_mlp", "input_shapes": [[1, 64]], "parameters": 12_448, "tasks": None,
                       "description": zoo[-1]["description"]}
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "out"), "--db", str(mixed_db), "--json"])
    assert res.exit_code == 0, explain(res)
    n_ms = sqlite3.connect(mixed_db).execute("SELECT COUNT(*) FROM records WHERE format = 'ms-trace'").fetchone()[0]
    assert json.loads(res.stdout) == {"folder": str(tmp_path / "out"), "workloads": 2, "records": n_ms, "left_out": []}


def test_install_is_light_and_browse_says_what_it_needs(monkeypatch, tmp_path):
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[; ]", d)[0] for d in project["dependencies"]]
    assert "xgboost-cpu" in names and "xgboost" not in names  # no nvidia-nccl-cu12 on a CPU machine
    assert "datasette" not in names and project["optional-dependencies"]["browse"] == ["datasette>=0.64"]
    assert "schedb[browse]" in project["optional-dependencies"]["test"]

    monkeypatch.setitem(sys.modules, "datasette", None)  # as if not installed
    res = CliRunner().invoke(cli, ["browse", "--db", str(tmp_path / "a.db")])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "Error: schedb browse needs datasette: pip install 'schedb[browse]' (or, in a clone, pip install -e '.[browse]')"]
