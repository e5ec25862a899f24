"""Ingest of MetaSchedule work dirs and Ansor logs: exact counts, invalid measurements,
bad input kept to its file and line, and transactions.

Every expected number is derived here from the input files themselves (line counts,
distinct keys, error codes), never copied from what ingest reports. The real Ansor
seed logs live outside the repository (``../shared/seed-logs/ansor-5000``); the tests
that need them skip cleanly when they are absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

import schedb.ingest.lines as lines_mod
from helpers import explain
from ingest_common import RECORDS, SEED, TINY, TINY_R, TINY_SIDECAR, TINY_W, WORKLOADS, ansor_line, cli_ok, needs_seed, run_secs_valid, snapshot, write_ansor, write_workdir

from schedb_cli.main import cli
from schedb.errors import StorageError
from schedb.ingest import ingest
from schedb.ingest.metaschedule import WorkDir
from schedb.store import Store
from schedb.store.tables import Records


# --------------------------------------------------------------------------- tiny_mlp work dir
def test_tiny_mlp_exact_counts(tmp_path):
    # Expected numbers, straight from the files.
    shashes = [json.loads(w)[0] for w in TINY_W]
    recs = [json.loads(r) for r in TINY_R]
    identities = {(r[0], json.dumps(r[1][0]), json.dumps(r[1][1]), json.dumps(r[1][2], sort_keys=True))
                  for r in recs}
    n_invalid = sum(not run_secs_valid(r[1][1]) for r in recs)
    per_index = {i: sum(r[0] == i for r in recs) for i in range(len(TINY_W))}

    store = Store(tmp_path / "a.db")
    report = ingest(store, [TINY])
    assert report.errors == [] and report.warnings == [] and not report.rejected
    assert report.files == 1 and report.already == 0
    assert report.new_workloads == len(set(shashes))
    assert report.new_records == len(identities)
    assert report.duplicates == len(recs) - len(identities)
    assert report.invalid == n_invalid
    assert report.skipped_lines == 0
    c = store.counts()
    assert c == {"files": 1, "models": 1, "workloads": len(set(shashes)),
                 "model_tasks": len(TINY_SIDECAR["tasks"]), "records": len(identities)}

    # Every record belongs to the workload its index names, and remembers its line.
    got = dict(store.conn.execute(
        "SELECT w.shash, COUNT(*) FROM records r JOIN workloads w ON w.id = r.workload_id GROUP BY 1"))
    assert got == {shashes[i]: n for i, n in per_index.items() if n}
    rows = store.conn.execute("SELECT r.line, w.shash, r.trace FROM records r"
                              " JOIN workloads w ON w.id = r.workload_id").fetchall()
    for line, shash, trace in rows:
        rec = recs[line - 1]
        assert shashes[rec[0]] == shash
        assert json.loads(trace) == rec[1][0]
    assert sorted(r[0] for r in rows) == list(range(1, len(recs) + 1))
    f = store.conn.execute("SELECT path, format, lines FROM files").fetchone()
    assert f == (str((TINY / (RECORDS + ".gz")).resolve()), "metaschedule", len(TINY_R))
    assert store.conn.execute("SELECT COUNT(*) FROM records WHERE valid = 0").fetchone()[0] == n_invalid

    # Model and tasks from the sidecar.
    model = store.conn.execute("SELECT name, source, tvm_version FROM models").fetchone()
    assert model == (TINY_SIDECAR["model"], TINY_SIDECAR["source"], TINY_SIDECAR["tvm_version"])
    tasks = set(store.conn.execute(
        "SELECT w.shash, t.task_name, t.weight FROM model_tasks t JOIN workloads w ON w.id = t.workload_id"))
    assert tasks == {(t["shash"], t["name"], t["weight"]) for t in TINY_SIDECAR["tasks"]}

    # The same content again adds nothing.
    before = snapshot(store.conn)
    again = ingest(store, [TINY])
    assert again.already == 1 and again.files == 0
    assert again.new_records == again.new_workloads == again.duplicates == 0
    assert snapshot(store.conn) == before


def test_plain_and_gzip_work_dirs_are_the_same_content(tmp_path):
    """A decompressed copy is a different file (hash) but holds the same records."""
    store = Store(tmp_path / "a.db")
    ingest(store, [TINY])
    before = store.counts()["records"]
    report = ingest(store, [write_workdir(tmp_path / "plain")])
    assert report.files == 1 and report.new_records == 0 and report.duplicates == len(TINY_R)
    assert store.counts()["records"] == before


def test_same_records_in_another_json_spelling_are_duplicates(tmp_path):
    """Identity is the records' meaning, not their text: spaces, target key order and
    run times written with other digits change nothing, and the stored digest is
    record_digest of the stored content."""
    from schedb.store.records import record_digest

    store = Store(tmp_path / "a.db")
    ingest(store, [TINY])
    before = snapshot(store.conn)
    respelled = []
    for line in TINY_R:
        idx, (trace, run_secs, target, *rest) = json.loads(line)
        target = dict(reversed(list(target.items())))
        run_secs = [f"{x:.25e}" for x in run_secs]  # same floats, more digits
        respelled.append(f"[{idx}, [{json.dumps(trace, indent=1)}, [{', '.join(run_secs)}], "
                         f"{json.dumps(target)}, {json.dumps(rest[0])}]]".replace("\n", " "))
    report = ingest(store, [write_workdir(tmp_path / "respelled", records=respelled)])
    assert report.skipped_lines == 0 and report.new_records == 0 and report.duplicates == len(TINY_R)
    assert snapshot(store.conn)["records"] == before["records"]
    for sig, target, trace, run_secs, digest in store.conn.execute(
            "SELECT w.signature, r.target, r.trace, r.run_secs, r.digest"
            " FROM records r JOIN workloads w ON w.id = r.workload_id"):
        assert digest == record_digest(sig, target, trace, json.loads(run_secs))
        assert trace == json.dumps(json.loads(trace), separators=(",", ":"))  # compact, as TVM writes


# --------------------------------------------------------------------------- seed Ansor logs
def _seed_expectations():
    """Everything ingest should find in the seed logs, computed from the files alone."""
    classes = json.loads((SEED / "wkl_classes.json").read_text())
    kind_of = {}
    for name, hashes in classes.items():
        kind = name[len("vm_mod_fused_"):] if name.startswith("vm_mod_fused_") else name
        kind = re.sub(r"_\d+$", "", kind)
        for h in hashes:
            kind_of[h] = kind
    logs = []
    for p in sorted(SEED.iterdir()):  # folder order = ingest order (decides which copy is "new")
        if p.name in ("wkl_classes.json", "tuning_info.json") or p.suffix != ".json":
            continue
        first = json.loads(p.open().readline())
        if isinstance(first, dict) and "i" in first and "r" in first:
            logs.append(p)
    seen, per_file, per_model_keys, lines, invalid_lines = set(), {}, {}, 0, 0
    keys, invalid_identities, first_line = set(), set(), {}
    for p in logs:
        model = re.sub(r"(\.best)?\.json$", "", p.name)
        new = 0
        text = p.read_text().splitlines()
        for n, line in enumerate(text, 1):
            if not line.strip():
                continue
            lines += 1
            o = json.loads(line)
            key, tgt = o["i"][0][0], o["i"][0][1]
            costs, error_no = o["r"][0], o["r"][1]
            keys.add(key)
            per_model_keys.setdefault(model, set()).add(key)
            ident = (key, tgt, json.dumps(o["i"][1][1]), json.dumps([float(c) for c in costs]))
            bad = error_no != 0 or not run_secs_valid(costs)
            invalid_lines += bad
            if ident not in seen:
                seen.add(ident)
                new += 1
                first_line[ident] = (p.name, n, o)
                if bad:
                    invalid_identities.add(ident)
        per_file[p.name] = (new, len(text))
    return {
        "logs": logs, "lines": lines, "distinct": len(seen), "keys": keys,
        "kind_of": kind_of, "invalid_lines": invalid_lines, "invalid": len(invalid_identities),
        "per_file": per_file, "per_model_keys": per_model_keys, "first_line": first_line,
    }


@needs_seed
def test_seed_ansor_exact_counts(seed_ingest):
    store, report = seed_ingest
    exp = _seed_expectations()
    assert report.errors == [] and report.warnings == [] and report.skipped_lines == 0
    assert report.files == len(exp["logs"]) == 5
    assert report.new_records == exp["distinct"]
    assert report.duplicates == exp["lines"] - exp["distinct"]
    assert report.duplicates > 0  # the .best files repeat records of the full logs
    assert report.new_workloads == len(exp["keys"])
    assert report.invalid == exp["invalid_lines"]
    c = store.counts()
    assert c["records"] == exp["distinct"] and c["workloads"] == len(exp["keys"])
    assert c["models"] == len(exp["per_model_keys"])
    assert store.conn.execute("SELECT COUNT(*) FROM records WHERE valid = 0").fetchone()[0] == exp["invalid"]
    assert store.conn.execute(
        "SELECT COUNT(*) FROM records WHERE valid = 1 AND format = 'ansor-steps'"
        " AND origin = 'legacy-ansor'").fetchone()[0] == exp["distinct"] - exp["invalid"]

    # Per file: records that were new there, and the file's line count.
    got = {Path(p).name: (n, lines) for p, n, lines in store.conn.execute(
        "SELECT f.path, COUNT(r.id), f.lines FROM files f LEFT JOIN records r ON r.file_id = f.id GROUP BY f.id")}
    assert got == exp["per_file"]

    # Per model: its tasks are the distinct workload keys of its logs.
    tasks = {}
    for model, key in store.conn.execute(
            "SELECT m.name, w.legacy_key FROM model_tasks t JOIN models m ON m.id = t.model_id"
            " JOIN workloads w ON w.id = t.workload_id"):
        tasks.setdefault(model, set()).add(key)
    assert tasks == exp["per_model_keys"]

    # Kinds come from wkl_classes.json (sha256 of the workload key); the rest are unknown.
    for key, kind, sig, shapes in store.conn.execute(
            "SELECT legacy_key, kind, signature, shapes FROM workloads"):
        h = hashlib.sha256(key.encode()).hexdigest()
        assert sig == "ansor:" + h
        assert kind == exp["kind_of"].get(h, "unknown")
        assert json.loads(shapes) == [s for s in json.loads(key)[1:] if isinstance(s, list)]
    assert store.conn.execute("SELECT COUNT(DISTINCT kind) FROM workloads").fetchone()[0] > 3

    # Provenance of every record: its file and line hold exactly that record.
    for name, line, trace, run_secs, measured_at, error in store.conn.execute(
            "SELECT f.path, r.line, r.trace, r.run_secs, r.measured_at, r.error FROM records r"
            " JOIN files f ON f.id = r.file_id ORDER BY r.id LIMIT 300"):
        o = json.loads((SEED / Path(name).name).read_text().splitlines()[line - 1])
        assert json.loads(trace) == o["i"][1][1]
        assert json.loads(run_secs) == [float(c) for c in o["r"][0]]
        assert measured_at == datetime.fromtimestamp(o["r"][3], timezone.utc).isoformat(timespec="seconds")
        assert (error is None) == (o["r"][1] == 0 and run_secs_valid(o["r"][0]))


@needs_seed
def test_seed_best_records_are_valid_and_fastest(seed_ingest):
    store, _ = seed_ingest
    best_view = {w: (rid, mean) for w, rid, mean in store.conn.execute(
        "SELECT workload_id, id, mean_s FROM best_records")}
    n_only_invalid = 0
    for (wid,) in store.conn.execute("SELECT id FROM workloads").fetchall():
        means = [m for m, in store.conn.execute(
            "SELECT mean_s FROM records WHERE workload_id = ? AND valid = 1", (wid,))]
        best = store.records.best(wid)
        if not means:
            n_only_invalid += 1
            assert best is None and wid not in best_view
            continue
        assert best["valid"] == 1 and best["mean_s"] == min(means)
        assert best_view[wid] == (best["id"], best["mean_s"])
    assert store.conn.execute(
        "SELECT COUNT(*) FROM best_records WHERE valid = 0 OR mean_s IS NULL").fetchone()[0] == 0
    assert len(best_view) + n_only_invalid == store.counts()["workloads"]


# --------------------------------------------------------------------------- invalid measurements
def test_invalid_measurements_stored_but_never_best(tmp_path):
    """A failed measurement that looks fastest (tiny first sample, or a tiny cost with an
    Ansor error code) is kept with valid=0 and never chosen."""
    recs = [json.loads(r) for r in TINY_R]
    by_index: dict[int, list] = {}
    for n, r in enumerate(recs):
        by_index.setdefault(r[0], []).append(n)
    poisoned = set()
    for idx, ns in by_index.items():
        n = min(ns, key=lambda k: sum(recs[k][1][1]) / len(recs[k][1][1]))
        recs[n][1][1] = [1e-8, 1e10]  # one sample failed: the whole measurement is invalid
        poisoned.add(n + 1)
    extra = len(recs)
    recs.append([0, [recs[0][1][0], [], *recs[0][1][2:]]])  # no samples at all
    wd = write_workdir(tmp_path / "wd", records=[json.dumps(r) for r in recs])
    log = write_ansor(tmp_path / "ansor" / "legacy.json", [
        ansor_line(1, costs=[2e-5]),
        ansor_line(2, costs=[1e-9], error_no=4),  # "fastest", but an error
        ansor_line(3, costs=[1e-5, float("nan")]),
    ])

    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd, log])
    assert not report.rejected
    assert report.invalid == len(poisoned) + 1 + 2
    invalid_lines = {line for line, in store.conn.execute(
        "SELECT line FROM records WHERE valid = 0 AND format = 'ms-trace'")}
    assert invalid_lines == poisoned | {extra + 1}
    assert store.conn.execute(
        "SELECT COUNT(*) FROM records WHERE valid = 0 AND (mean_s IS NOT NULL OR error IS NULL)"
    ).fetchone()[0] == 0
    for (wid,) in store.conn.execute("SELECT id FROM workloads").fetchall():
        best = store.records.best(wid)
        valid_means = [m for m, in store.conn.execute(
            "SELECT mean_s FROM records WHERE workload_id = ? AND valid = 1", (wid,))]
        if valid_means:
            assert best["valid"] == 1
            assert best["format"] != "ms-trace" or best["line"] not in poisoned | {extra + 1}
            assert best["mean_s"] == min(valid_means)
            target = best["target"]
            assert store.records.best(wid, target)["id"] == best["id"]
        else:
            assert best is None
    ansor_best = store.records.best(store.conn.execute(
        "SELECT id FROM workloads WHERE signature LIKE 'ansor:%'").fetchone()[0])
    assert ansor_best["mean_s"] == pytest.approx(2e-5)
    assert store.conn.execute(
        "SELECT COUNT(*) FROM best_records b JOIN records r ON r.id = b.id WHERE r.valid = 0").fetchone()[0] == 0
    assert store.conn.execute("SELECT COUNT(*) FROM best_records").fetchone()[0] == store.conn.execute(
        "SELECT COUNT(DISTINCT workload_id || target) FROM records WHERE valid = 1").fetchone()[0]


# --------------------------------------------------------------------------- bad input
def _truncated_workdir(tmp_path) -> tuple[Path, int]:
    last = TINY_R[-1]
    wd = write_workdir(tmp_path / "wd", records=TINY_R[:-1])
    with open(wd / RECORDS, "a") as f:
        f.write(last[: len(last) // 2])  # cut mid-line, no newline: a crashed tuner
    return wd, len(TINY_R)


def test_truncated_last_line_is_skipped_with_file_and_line(tmp_path):
    wd, bad_line = _truncated_workdir(tmp_path)
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.rejected and report.errors == []
    assert report.skipped_lines == 1
    assert len(report.warnings) == 1 and f"{wd / RECORDS}:{bad_line}:" in report.warnings[0]
    assert report.new_records == store.counts()["records"] == len(TINY_R) - 1
    assert {r for r, in store.conn.execute("SELECT line FROM records")} == set(range(1, bad_line))


def test_truncated_last_line_cli(tmp_path):
    wd, bad_line = _truncated_workdir(tmp_path)
    db = tmp_path / "cli.db"
    result = CliRunner().invoke(cli, ["ingest", str(wd), "--db", str(db)])
    cli_ok(result)
    assert result.exit_code != 0, explain(result)
    assert f"{wd / RECORDS}:{bad_line}:" in result.output
    assert "1 line skipped" in result.output
    assert Store(db).counts()["records"] == len(TINY_R) - 1


def test_truncated_gzip_stream_keeps_what_came_before(tmp_path):
    """A .gz cut short (the tuner killed while compressing): no exception, a warning
    naming the file, every record before the damage kept."""
    wd = write_workdir(tmp_path / "wd")
    data = gzip.compress((wd / RECORDS).read_bytes())
    (wd / RECORDS).unlink()
    (wd / (RECORDS + ".gz")).write_bytes(data[: len(data) * 2 // 3])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.rejected and report.errors == []
    assert any(str(wd / (RECORDS + ".gz")) in w for w in report.warnings)
    n = store.counts()["records"]
    assert 0 < n < len(TINY_R)
    assert {r for r, in store.conn.execute("SELECT line FROM records")} == set(range(1, n + 1))


def _damaged_gzip(data: bytes) -> tuple[bytes, bytes]:
    """(``data`` with one bit flipped where zlib reports damage mid-stream, what a byte-by-byte
    decompression yields before it)."""
    for pos in range(len(data) // 2, len(data) - 16):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            d, out = zlib.decompressobj(16 + zlib.MAX_WBITS), []
            for i in range(len(bad)):
                try:
                    out.append(d.decompress(bytes(bad[i:i + 1])))
                except zlib.error as e:
                    if "incorrect data check" not in str(e):  # not merely a wrong checksum at the end
                        return bytes(bad), b"".join(out)
                    break
    raise AssertionError("no damaging bit flip found")


def test_damaged_gzip_stream_keeps_every_line_before_the_damage(tmp_path):
    """A .gz damaged mid-way: every line that decompresses whole before the damage is
    stored, one warning names the file and the line where reading stopped. (Python's gzip
    module dropped the output of its last step before the damage: here lines 21 to 26.)"""
    wd = write_workdir(tmp_path / "wd")
    bad, before = _damaged_gzip(gzip.compress((wd / RECORDS).read_bytes()))
    (wd / RECORDS).unlink()
    (wd / (RECORDS + ".gz")).write_bytes(bad)
    whole = before.split(b"\n")[:-1]  # the last piece is cut by the damage
    intact = {n for n, line in enumerate(whole, 1) if line.decode(errors="replace") == TINY_R[n - 1]}
    assert len(intact) >= 2
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.errors == []
    stopped = [w for w in report.warnings if "read stopped early" in w]
    assert len(stopped) == 1 and f"{wd / (RECORDS + '.gz')}:{len(whole) + 1}:" in stopped[0], report.warnings
    assert intact <= {r for r, in store.conn.execute("SELECT line FROM records")}


def test_file_names_that_are_not_utf8(tmp_path):
    """Linux file names are any bytes: a work dir (without sidecar: the model is named after
    it) and an Ansor log whose names are not UTF-8 are ingested, their paths stored as the OS
    gives them, and shown with the odd bytes escaped."""
    import os

    logs = tmp_path / "logs"
    wd = Path(os.fsdecode(os.fsencode(logs) + b"/wd\xff\xfe"))  # Python holds the bytes as surrogates
    write_workdir(wd, sidecar=False)
    write_ansor(Path(os.fsdecode(os.fsencode(logs) + b"/r\xe9seau.json")), [ansor_line(i) for i in range(3)])
    (wd / RECORDS).write_text((wd / RECORDS).read_text() + "{broken\n")  # a bad line names the file
    db = tmp_path / "a.db"
    result = CliRunner().invoke(cli, ["ingest", str(logs), "--db", str(db)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), explain(result)
    assert "2 files ingested" in result.output and "1 line skipped" in result.output, result.output
    assert f"{logs}/wd\\xff\\xfe/{RECORDS}:{len(TINY_R) + 1}: skipped" in result.output, result.output
    store = Store(db, readonly=True)
    paths = {p for p, in store.conn.execute("SELECT path FROM files")}
    assert paths == {os.fsencode(wd / RECORDS), os.fsencode(logs) + b"/r\xe9seau.json"}
    assert store.counts()["records"] == len(TINY_R) + 3
    assert {m for m, in store.conn.execute("SELECT name FROM models")} == {"wd\\xff\\xfe", "r\\xe9seau"}
    first = store.conn.execute("SELECT MIN(id) FROM records").fetchone()[0]
    shown = CliRunner().invoke(cli, ["show", "record", str(first), "--db", str(db)])
    assert shown.exit_code == 0, explain(shown)
    assert f"{logs}/r\\xe9seau.json:1" in re.sub(r"\s*\n\s*", "", shown.output), shown.output


def test_not_a_tuning_log_among_good_ones(tmp_path):
    folder = tmp_path / "logs"
    write_workdir(folder / "tiny")
    write_ansor(folder / "legacy.json", [ansor_line(i) for i in range(4)])
    (folder / "notes.json").write_text(json.dumps({"hello": "world"}) + "\n")
    (folder / "zz.log").write_bytes(bytes(range(256)) * 4)
    (folder / "readme.txt").write_text("not a log suffix: passed over\n")

    store = Store(tmp_path / "a.db")
    report = ingest(store, [folder])
    assert report.files == 2
    assert len(report.errors) == 2
    assert any(str(folder / "notes.json") in e for e in report.errors)
    assert any(str(folder / "zz.log") in e for e in report.errors)
    assert report.rejected
    assert store.counts()["records"] == len(TINY_R) + 4
    assert {f for f, in store.conn.execute("SELECT format FROM files")} == {"metaschedule", "ansor"}

    # The same on the command line, naming files explicitly: exit 1, clean messages.
    db = tmp_path / "cli.db"
    result = CliRunner().invoke(cli, ["ingest", str(folder / "legacy.json"), str(folder / "notes.json"),
                                      str(folder / "missing.json"), "--db", str(db)])
    cli_ok(result)
    assert result.exit_code == 1, explain(result)
    assert f"{folder / 'notes.json'}:1: not a tuning log" in result.output
    assert f"{folder / 'missing.json'}: no such file" in result.output
    assert Store(db).counts()["records"] == 4


def test_half_a_workdir_and_bad_database_files(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / RECORDS).write_text(TINY_R[0] + "\n")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    plain = tmp_path / "plain.sqlite"
    with sqlite3.connect(plain) as c:
        c.execute("CREATE TABLE t (x)")
    c.close()
    store = Store(tmp_path / "a.db")
    report = ingest(store, [tmp_path / "half" / RECORDS, junk, plain, store.path])
    assert len(report.errors) == 4, report.errors
    assert "half a MetaSchedule work dir" in report.errors[0]
    assert all(str(p) in e for p, e in zip([junk, plain, store.path], report.errors[1:]))
    assert store.counts()["records"] == 0


def test_damaged_database_is_not_merged(tmp_path):
    """A leaf page that lost a cell still opens and answers queries, one row short;
    merging it would drop that record silently, so the file is refused whole."""
    src = Store(tmp_path / "src.db")
    ingest(src, [TINY])
    src.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = src.counts()["records"]
    roots = {r[0] for r in src.conn.execute("SELECT rootpage FROM sqlite_master")}
    page = src.conn.execute("PRAGMA page_size").fetchone()[0]
    src.close()
    good = (tmp_path / "src.db").read_bytes()
    for leaf in (p for p in range(2, len(good) // page + 1)
                 if p not in roots and good[(p - 1) * page] == 0x0D):  # table leaves below a root
        data, at = bytearray(good), (leaf - 1) * page + 3  # its cell count, one less
        data[at:at + 2] = (int.from_bytes(data[at:at + 2], "big") - 1).to_bytes(2, "big")
        (tmp_path / "src.db").write_bytes(data)
        damaged = Store(tmp_path / "src.db", readonly=True)
        short = damaged.conn.execute("SELECT COUNT(trace) FROM records").fetchone()[0] == n - 1
        damaged.close()
        if short:
            break  # a records leaf: the file opens and answers, one record short
    else:
        pytest.fail("no records leaf page found")
    store = Store(tmp_path / "a.db")
    ingest(store, [write_ansor(tmp_path / "legacy.json", [ansor_line(i) for i in range(3)])])
    before = snapshot(store.conn)
    report = ingest(store, [tmp_path / "src.db"])
    assert len(report.errors) == 1 and f"{tmp_path / 'src.db'}: damaged database" in report.errors[0]
    assert snapshot(store.conn) == before
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_unreadable_workload_line_without_sidecar(tmp_path):
    """A plain TVM work dir (no schedb.json) with one bad workload line: that line and the
    records that point at it are skipped, the other workloads' records are ingested."""
    bad = 1
    workloads = list(TINY_W)
    workloads[bad] = json.dumps([json.loads(TINY_W[bad])[0], "bm90IGFuIElSTW9kdWxl"])
    wd = write_workdir(tmp_path / "wd", workloads=workloads, sidecar=False)
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.errors == []
    n_bad = sum(json.loads(r)[0] == bad for r in TINY_R)
    assert report.skipped_lines == 1 + n_bad
    assert any(f"{wd / WORKLOADS}:{bad + 1}:" in w for w in report.warnings)
    assert store.counts()["records"] == len(TINY_R) - n_bad
    assert store.counts()["workloads"] == len(TINY_W) - 1
    assert store.counts()["model_tasks"] == len(TINY_W) - 1
    assert store.conn.execute("SELECT name FROM models").fetchone()[0] == "wd"


def _spy_work_dirs(monkeypatch) -> list:
    """(step, work dir, its decoding started ahead?) for every WorkDir.prepare and call."""
    events = []
    prepare, call = WorkDir.prepare, WorkDir.__call__

    def spy_prepare(self, store):
        prepare(self, store)
        events.append(("prepare", self.folder.name, bool(self.ahead and self.ahead[2])))
        decodings.append(self.ahead and self.ahead[2])

    def spy_call(self, *args):
        events.append(("ingest", self.folder.name, bool(self.ahead and self.ahead[2])))
        return call(self, *args)

    decodings = []
    monkeypatch.setattr(WorkDir, "prepare", spy_prepare)
    monkeypatch.setattr(WorkDir, "__call__", spy_call)
    return events, decodings


def test_the_next_work_dir_decodes_while_one_is_ingested(tmp_path, monkeypatch):
    """ingest starts the next work dir's workload decoding in the sandbox before it ingests
    the current one (two cores busy); it stores and reports what one at a time gives, a
    work dir read whole before starts no decoding, and one never reached is stopped."""
    workloads = list(TINY_W)
    workloads[1] = json.dumps([json.loads(TINY_W[1])[0], "bm90IGFuIElSTW9kdWxl"])  # a bad line: b's line 2
    a, b = write_workdir(tmp_path / "a"), write_workdir(tmp_path / "b", workloads=workloads, sidecar=False)
    alone = Store(tmp_path / "alone.db")
    one_at_a_time = [ingest(alone, [wd]) for wd in (a, b)]
    events, decodings = _spy_work_dirs(monkeypatch)
    store = Store(tmp_path / "both.db")
    both = ingest(store, [a, b])
    assert events == [("prepare", "b", True), ("ingest", "a", False), ("ingest", "b", True)]
    for field in ("files", "new_workloads", "new_records", "duplicates", "invalid", "skipped_lines"):
        assert getattr(both, field) == sum(getattr(r, field) for r in one_at_a_time), field
    assert both.warnings == [w for r in one_at_a_time for w in r.warnings]
    assert any(w.startswith(f"{b / WORKLOADS}:2: skipped") for w in both.warnings)
    assert store.counts() == alone.counts()

    events.clear()
    again = ingest(store, [b, a])  # a was read whole: nothing to decode; b (a line skipped) is read again
    assert events[0] == ("prepare", "a", False) and again.already == 1

    def full_disk(*_):
        raise StorageError("database or disk is full")
    monkeypatch.setattr(WorkDir, "_ingest", full_disk)
    events.clear()
    stopped = ingest(Store(tmp_path / "full.db"), [a, b])
    assert events == [("prepare", "b", True), ("ingest", "a", False)] and len(stopped.errors) == 1
    assert decodings[-1].started is None  # b's child: stopped, not left running


def test_repeated_workload_lines_keep_positional_indices(tmp_path):
    """TVM refers to workloads by line position; a repeated workload line (e.g. files
    concatenated by hand) must not shift the records of later workloads."""
    workloads = TINY_W[:2] + [TINY_W[1]] + TINY_W[2:]
    records = []
    for r in TINY_R:
        o = json.loads(r)
        o[0] = o[0] + (o[0] >= 2)  # what TVM would have written against this workload file
        records.append(json.dumps(o))
    wd = write_workdir(tmp_path / "wd", workloads=workloads, records=records, sidecar=False)
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.errors == [] and report.skipped_lines == 0
    assert store.counts()["records"] == len(TINY_R)
    for line, shash in store.conn.execute(
            "SELECT r.line, w.shash FROM records r JOIN workloads w ON w.id = r.workload_id"):
        assert shash == json.loads(workloads[json.loads(records[line - 1])[0]])[0]


# Lines that once escaped ingest() as exceptions (or rejected a whole file).
def _escapes():
    good = json.loads(ansor_line(0))
    cases = {}
    o = json.loads(json.dumps(good)); o["i"][0][1] = 'llvm -mcpu="core-avx2'; cases["ansor-unbalanced-quote"] = o
    o = json.loads(json.dumps(good)); o["r"][0] = [10 ** 400]; cases["ansor-huge-int-cost"] = o
    o = json.loads(json.dumps(good)); o["r"][3] = 10 ** 400; cases["ansor-huge-int-timestamp"] = o
    o = json.loads(json.dumps(good)); o["v"] = ["v0.6"]; cases["ansor-version-not-a-string"] = o
    lines = {k: json.dumps(v) for k, v in cases.items()}
    lines["ansor-deep-nesting"] = "[" * 100_000
    lines["ansor-5000-digit-int"] = ansor_line(0).replace("0.5,", "1" * 5000 + ",")
    return lines


# A record whose only oddity is an unusable timestamp or version is kept without it.
KEPT = {"ansor-huge-int-timestamp": "measured_at", "ansor-version-not-a-string": "tvm_version"}


@pytest.mark.parametrize("case", sorted(_escapes()))
def test_bad_ansor_line_is_skipped_not_fatal(tmp_path, case):
    log = write_ansor(tmp_path / "legacy.json", [ansor_line(1), _escapes()[case], ansor_line(2)])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [log])
    assert report.errors == []
    if case in KEPT:
        assert report.skipped_lines == 0 and store.counts()["records"] == 3
        assert store.conn.execute(f"SELECT {KEPT[case]} FROM records WHERE line = 2").fetchone() == (None,)
        assert store.conn.execute(f"SELECT {KEPT[case]} FROM records WHERE line = 1").fetchone() != (None,)
    else:
        assert report.skipped_lines == 1 and f"{log}:2:" in report.warnings[0]
        assert store.counts()["records"] == 2


@pytest.mark.parametrize("case", ["huge-int", "5000-digits", "deep", "target-quote", "nan-index"])
def test_bad_metaschedule_line_is_skipped_not_fatal(tmp_path, case):
    o = json.loads(TINY_R[1])
    text = None
    if case == "huge-int":
        o[1][1] = [10 ** 400]
    elif case == "target-quote":
        o[1][2] = 'llvm -mcpu="x'
    elif case == "5000-digits":
        text = TINY_R[1].replace("[", "[" + "7" * 5000 + ",", 1)
    elif case == "deep":
        text = "[" * 100_000
    elif case == "nan-index":
        text = "[NaN" + TINY_R[1][2:]
    records = [TINY_R[0], text or json.dumps(o), *TINY_R[2:]]
    wd = write_workdir(tmp_path / "wd", records=records)
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.errors == []
    # a huge-int sample is a (weird) measurement, not a broken line: it may be kept as invalid
    assert report.skipped_lines <= 1
    if report.skipped_lines:
        assert f"{wd / RECORDS}:2:" in report.warnings[0]
    assert store.counts()["records"] >= len(TINY_R) - 1
    assert store.conn.execute(
        "SELECT COUNT(*) FROM records WHERE line = 2 AND valid = 1").fetchone()[0] == 0


@pytest.mark.parametrize("sidecar", ["[1, 2]", '{"target": 5}', '{"tasks": [1]}', '{"target": "{"}', "{",
                                     b"\xff{}", '{"model": ["x"]}'])
def test_bad_sidecar_costs_its_metadata_not_the_records(tmp_path, sidecar):
    """A damaged schedb.json is named in a warning; its work dir's records are all stored."""
    wd = write_workdir(tmp_path / "logs" / "wd")
    (wd / "schedb.json").write_bytes(sidecar if isinstance(sidecar, bytes) else sidecar.encode())
    write_ansor(tmp_path / "logs" / "legacy.json", [ansor_line(i) for i in range(3)])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [tmp_path / "logs"])
    assert report.errors == [] and report.skipped_lines == 0
    assert any(str(wd / "schedb.json") in w for w in report.warnings), report.warnings
    assert not any(str(wd / RECORDS) in w for w in report.warnings)
    assert report.files == 2 and report.new_records == len(TINY_R) + 3
    assert store.counts()["records"] == len(TINY_R) + 3


def test_corrupt_gzip_member_is_a_warning_not_a_crash(tmp_path):
    wd = write_workdir(tmp_path / "wd")
    data = bytearray(gzip.compress((wd / RECORDS).read_bytes()))
    for k in range(len(data) // 2, len(data) // 2 + 64):
        data[k] ^= 0xFF
    (wd / RECORDS).unlink()
    (wd / (RECORDS + ".gz")).write_bytes(bytes(data))
    store = Store(tmp_path / "a.db")
    report = ingest(store, [wd])
    assert report.rejected
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --------------------------------------------------------------------------- transactions
class _Boom(sqlite3.OperationalError):
    pass


def _fail_on_call(monkeypatch, n: int, exc):
    real = Records.insert
    calls = {"n": 0}

    def insert_records(self, rows):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(self, rows)

    monkeypatch.setattr(Records, "insert", insert_records)
    return calls


def test_failure_midway_rolls_back_the_whole_file(tmp_path, monkeypatch):
    store = Store(tmp_path / "a.db")
    earlier = write_ansor(tmp_path / "old" / "legacy.json", [ansor_line(i) for i in range(5)])
    assert ingest(store, [earlier]).new_records == 5
    before = snapshot(store.conn)

    monkeypatch.setattr(lines_mod, "CHUNK", 10)  # 34 records: chunks of 10, 10, 10, 4
    first = write_ansor(tmp_path / "new" / "a_first.json", [ansor_line(i, key_hash="ffff") for i in range(3)])
    wd = write_workdir(tmp_path / "new" / "b_tiny")
    calls = _fail_on_call(monkeypatch, 3, _Boom("database or disk is full"))  # 1: first file, 2-3: tiny
    report = ingest(store, [tmp_path / "new"])
    assert calls["n"] >= 3
    assert len(report.errors) == 1 and "disk is full" in report.errors[0] and str(wd) in report.errors[0]
    # The file that failed left nothing: no records, workloads, model, tasks or file row.
    assert store.conn.execute("SELECT COUNT(*) FROM workloads WHERE shash IS NOT NULL").fetchone()[0] == 0
    assert store.models.id_of("tiny_mlp") is None
    assert store.conn.execute("SELECT COUNT(*) FROM files WHERE format = 'metaschedule'").fetchone()[0] == 0
    # ... the report does not claim it did ...
    assert report.files == 1 and report.new_records == 3 and report.new_workloads == 1
    # ... the earlier data and the file before it are intact.
    after = snapshot(store.conn)
    for table, rows in before.items():
        assert after[table][: len(rows)] == rows
    assert store.counts()["records"] == 5 + 3
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not store.conn.in_transaction

    # Nothing remembers the failed file: ingesting it again works.
    monkeypatch.undo()
    again = ingest(store, [tmp_path / "new"])
    assert again.errors == [] and again.already == 1 and again.files == 1
    assert again.new_records == len(TINY_R)


def test_interrupt_midway_rolls_back_and_propagates(tmp_path, monkeypatch):
    store = Store(tmp_path / "a.db")
    ingest(store, [write_ansor(tmp_path / "legacy.json", [ansor_line(i) for i in range(5)])])
    before = snapshot(store.conn)
    monkeypatch.setattr(lines_mod, "CHUNK", 10)
    _fail_on_call(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        ingest(store, [write_workdir(tmp_path / "wd")])
    assert snapshot(store.conn) == before
    assert not store.conn.in_transaction
    monkeypatch.undo()
    assert ingest(store, [tmp_path / "wd"]).new_records == len(TINY_R)


def test_a_file_with_lines_it_could_not_store_is_read_again(tmp_path, monkeypatch):
    """A line this schedb cannot read (here: refused by construction) does not make its file
    count as ingested: the next ingest, by a schedb that can read it, stores that record
    once, and only a file read whole is 'already in the database'."""
    from schedb.ingest.lines import Skip
    from schedb.ingest.metaschedule import MsRecordParser

    store = Store(tmp_path / "a.db")
    real = MsRecordParser.__call__

    def refuses_line_2(self, raw, lineno, stamp):
        if lineno == 2:
            raise Skip("not readable by this schedb")
        return real(self, raw, lineno, stamp)

    monkeypatch.setattr(MsRecordParser, "__call__", refuses_line_2)
    first = ingest(store, [TINY])
    assert first.skipped_lines == 1 and first.new_records == len(TINY_R) - 1
    monkeypatch.undo()
    again = ingest(store, [TINY])
    assert again.already == 0 and again.new_records == 1 and again.duplicates == len(TINY_R) - 1
    third = ingest(store, [TINY])
    assert third.already == 1 and third.new_records == third.duplicates == 0
    assert store.counts()["files"] == 1 and store.counts()["records"] == len(TINY_R)


def test_ingesting_the_folder_that_holds_the_database(tmp_path, monkeypatch):
    """`cd logs && schedb ingest .`: the default ./schedb.db lies in the walked folder; the
    walk passes over the database it writes to, and the logs beside it go in. Named
    explicitly, the database itself is still refused."""
    write_workdir(tmp_path / "logs" / "run")
    monkeypatch.chdir(tmp_path / "logs")
    res = CliRunner().invoke(cli, ["ingest", "."])
    assert res.exit_code == 0, res.output
    assert Store(tmp_path / "logs" / "schedb.db").counts()["records"] == len(TINY_R)
    again = CliRunner().invoke(cli, ["ingest", "schedb.db"])
    assert again.exit_code == 1 and "is the database being written to" in again.output
    for part in ("schedb.db-wal", "schedb.db-shm"):  # nor its write-ahead log or shared memory
        (tmp_path / "logs" / part).touch()
        res = CliRunner().invoke(cli, ["ingest", part])
        assert res.exit_code == 1 and f"{part}: is a part (-wal / -shm) of the database being written to" in res.output


def test_a_folder_without_logs_is_an_error_and_leaves_no_database(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no logs here\n")
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "empty"), "--db", str(tmp_path / "x.db")])
    assert res.exit_code == 1 and "no tuning logs found" in res.output, res.output
    assert not (tmp_path / "x.db").exists()
