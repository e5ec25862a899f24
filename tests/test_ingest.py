"""Ingest, store, merge, export, CLI and the MetaSchedule Database round trip.

Every expected number is derived here from the input files themselves (line counts,
distinct keys, error codes), never copied from what ingest reports. The real Ansor
seed logs live outside the repository (``../shared/seed-logs/ansor-5000``); the tests
that need them skip cleanly when they are absent.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import re
import shutil
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schedb.ingest as ingest_mod
from helpers import explain

from cli.main import cli
from schedb.errors import SchedbError
from schedb.ingest import ingest
from schedb.store import Store

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures" / "tiny_mlp"
SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seed-logs" / "ansor-5000"
needs_seed = pytest.mark.skipif(not SEED.is_dir(), reason=f"seed Ansor logs not found at {SEED}")

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
ANSOR_TARGET = "llvm -keys=cpu -mcpu=core-avx2 -mtriple=x86_64-linux-gnu"


# --------------------------------------------------------------------------- helpers
def text_lines(path: Path) -> list[str]:
    """The non-blank lines of a (possibly gzip-compressed) text file, read independently."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


TINY_W = text_lines(TINY / (WORKLOADS + ".gz"))
TINY_R = text_lines(TINY / (RECORDS + ".gz"))
TINY_SIDECAR = json.loads((TINY / "schedb.json").read_text())


def write_workdir(folder: Path, workloads=TINY_W, records=TINY_R, sidecar=True) -> Path:
    """A plain-text MetaSchedule work dir (one JSON value a line), like TVM writes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKLOADS).write_text("".join(w + "\n" for w in workloads))
    (folder / RECORDS).write_text("".join(r + "\n" for r in records))
    if sidecar:
        shutil.copy(TINY / "schedb.json", folder / "schedb.json")
    return folder


def ansor_line(i: int, key_hash="0123abcd", shapes=([1, 64], [64, 32], [1, 32]), costs=None,
               error_no=0, ts=1_700_000_000, target=ANSOR_TARGET) -> str:
    """A synthetic legacy Ansor record in the documented format (seed README)."""
    key = json.dumps([key_hash, *shapes])
    return json.dumps({
        "i": [[key, target, [4, 64, 64, 0, 0, 0, 0, 0], "llvm -keys=cpu ", 2, []],
              [[], [["SP", 2, 0, 64, [i % 64 + 1], 1], ["AN", 2, 0, 3]]]],
        "r": [list(costs) if costs is not None else [1e-5 * (i + 1), 1.1e-5 * (i + 1)],
              error_no, 0.5, ts],
        "v": "v0.6",
    })


def write_ansor(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_secs_valid(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(x, (int, float)) and 0 < x < 1e9 for x in value))


def clone_db(src: Path, dst: Path) -> Path:
    """A byte-for-byte consistent copy of a database (WAL content included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def snapshot(conn, max_ids=None) -> dict:
    """Every row that matters, keyed so that two databases can be compared."""
    def q(sql, limit=None):
        if limit is not None:
            return conn.execute(sql + " WHERE id <= ? ORDER BY id", (limit,)).fetchall()
        return conn.execute(sql + " ORDER BY id").fetchall()

    m = max_ids or {}
    return {
        "records": q("SELECT id, digest, workload_id, file_id, line, valid, mean_s, model_id FROM records",
                     m.get("records")),
        "workloads": q("SELECT id, signature, kind, shash FROM workloads", m.get("workloads")),
        "files": q("SELECT id, sha256, path, lines FROM files", m.get("files")),
        "models": q("SELECT id, name FROM models", m.get("models")),
    }


def max_ids(conn) -> dict:
    return {t: conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0]
            for t in ("records", "workloads", "files", "models")}


def logical(conn) -> dict:
    """Database content independent of row ids (for merge comparisons)."""
    return {
        "workloads": set(conn.execute(
            "SELECT signature, kind, shash, legacy_key, shapes, dtypes, description, ms_workload,"
            " tvm_version FROM workloads")),
        "records": set(conn.execute(
            "SELECT r.digest, w.signature, r.target, r.format, r.trace, r.run_secs, r.mean_s, r.valid,"
            " r.error, r.args_info, r.origin, p.digest, sw.signature, r.distance, m.name, f.path,"
            " f.sha256, r.line, r.measured_at, r.tvm_version"
            " FROM records r JOIN workloads w ON w.id = r.workload_id"
            " LEFT JOIN records p ON p.id = r.parent_id"
            " LEFT JOIN workloads sw ON sw.id = r.source_workload_id"
            " LEFT JOIN models m ON m.id = r.model_id LEFT JOIN files f ON f.id = r.file_id")),
        "models": set(conn.execute("SELECT name, source, input_shapes, target, tvm_version FROM models")),
        "tasks": set(conn.execute(
            "SELECT m.name, w.signature, t.task_name, t.weight FROM model_tasks t"
            " JOIN models m ON m.id = t.model_id JOIN workloads w ON w.id = t.workload_id")),
        "files": set(conn.execute("SELECT path, sha256, format, size, lines FROM files")),
    }


def cli_ok(result):
    """No traceback: either a clean exit or a SystemExit (click's own error path)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory) -> Path:
    """fixtures/tiny_mlp ingested into a fresh database (read-only use: clone to modify)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.db"
    store = Store(path)
    report = ingest(store, [TINY])
    assert not report.errors and not report.warnings
    store.close()
    return path


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory) -> Path:
    """tiny_mlp plus a small synthetic Ansor log with one failed measurement."""
    d = tmp_path_factory.mktemp("mixed")
    log = write_ansor(d / "logs" / "legacy.json",
                      [ansor_line(i) for i in range(6)] + [ansor_line(99, error_no=1, costs=[1e-9])])
    store = Store(d / "mixed.db")
    report = ingest(store, [TINY, log])
    assert not report.errors and not report.warnings
    store.close()
    return d / "mixed.db"


@pytest.fixture(scope="module")
def seed_ingest(tmp_path_factory):
    if not SEED.is_dir():
        pytest.skip(f"seed Ansor logs not found at {SEED}")
    path = tmp_path_factory.mktemp("seed") / "seed.db"
    store = Store(path)
    report = ingest(store, [SEED])
    return store, report


@pytest.fixture(scope="module")
def target():
    from schedb.target import load_intrinsics, parse_target

    tgt = parse_target(None)
    load_intrinsics(tgt)  # before anything imports tvm.s_tir.tensor_intrin in full (~45 s)
    return tgt


@pytest.fixture(scope="module")
def lowered(target):
    from schedb.models import load_model
    from schedb.tasks import lower

    return lower(load_model("tiny_mlp"), target)


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
    from schedb.ingest import record_digest

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
        best = store.best_record(wid)
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
        recs[n][1][1] = [1e-12, 1e10]  # one sample failed: the whole measurement is invalid
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
        best = store.best_record(wid)
        valid_means = [m for m, in store.conn.execute(
            "SELECT mean_s FROM records WHERE workload_id = ? AND valid = 1", (wid,))]
        if valid_means:
            assert best["valid"] == 1
            assert best["format"] != "ms-trace" or best["line"] not in poisoned | {extra + 1}
            assert best["mean_s"] == min(valid_means)
            target = best["target"]
            assert store.best_record(wid, target)["id"] == best["id"]
        else:
            assert best is None
    ansor_best = store.best_record(store.conn.execute(
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
    assert "1 lines skipped" in result.output
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


@pytest.mark.parametrize("sidecar", ["[1, 2]", '{"target": 5}', '{"tasks": [1]}', '{"target": "{"}', "{"])
def test_bad_sidecar_is_an_error_for_that_dir_only(tmp_path, sidecar):
    wd = write_workdir(tmp_path / "logs" / "wd")
    (wd / "schedb.json").write_text(sidecar)
    log = write_ansor(tmp_path / "logs" / "legacy.json", [ansor_line(i) for i in range(3)])
    store = Store(tmp_path / "a.db")
    report = ingest(store, [tmp_path / "logs"])
    assert len(report.errors) == 1 and str(wd) in report.errors[0]
    assert report.files == 1 and report.new_records == 3 and report.new_workloads == 1
    assert store.counts()["records"] == 3
    assert log.exists()


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
    real = Store.insert_records
    calls = {"n": 0}

    def insert_records(self, rows):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(self, rows)

    monkeypatch.setattr(Store, "insert_records", insert_records)
    return calls


def test_failure_midway_rolls_back_the_whole_file(tmp_path, monkeypatch):
    store = Store(tmp_path / "a.db")
    earlier = write_ansor(tmp_path / "old" / "legacy.json", [ansor_line(i) for i in range(5)])
    assert ingest(store, [earlier]).new_records == 5
    before = snapshot(store.conn)

    monkeypatch.setattr(ingest_mod, "CHUNK", 10)  # 34 records: chunks of 10, 10, 10, 4
    first = write_ansor(tmp_path / "new" / "a_first.json", [ansor_line(i, key_hash="ffff") for i in range(3)])
    wd = write_workdir(tmp_path / "new" / "b_tiny")
    calls = _fail_on_call(monkeypatch, 3, _Boom("database or disk is full"))  # 1: first file, 2-3: tiny
    report = ingest(store, [tmp_path / "new"])
    assert calls["n"] >= 3
    assert len(report.errors) == 1 and "disk is full" in report.errors[0] and str(wd) in report.errors[0]
    # The file that failed left nothing: no records, workloads, model, tasks or file row.
    assert store.conn.execute("SELECT COUNT(*) FROM workloads WHERE shash IS NOT NULL").fetchone()[0] == 0
    assert store.model_id("tiny_mlp") is None
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
    monkeypatch.setattr(ingest_mod, "CHUNK", 10)
    _fail_on_call(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        ingest(store, [write_workdir(tmp_path / "wd")])
    assert snapshot(store.conn) == before
    assert not store.conn.in_transaction
    monkeypatch.undo()
    assert ingest(store, [tmp_path / "wd"]).new_records == len(TINY_R)


# --------------------------------------------------------------------------- merge
def test_merge_preserves_everything_and_is_idempotent(tmp_path):
    a_path = tmp_path / "A.db"
    a = Store(a_path)
    ingest(a, [TINY, write_ansor(tmp_path / "ansor" / "legacy.json",
                                 [ansor_line(i) for i in range(4)] + [ansor_line(9, error_no=2)])])
    # A derived record (as transfer would write): lineage must survive the merge.
    parent = a.best_record(a.conn.execute("SELECT id FROM workloads WHERE shash IS NOT NULL").fetchone()[0])
    other_wid = a.conn.execute(
        "SELECT id FROM workloads WHERE id != ? AND shash IS NOT NULL", (parent["workload_id"],)).fetchone()[0]
    with a.transaction():
        child = a.add_record(
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
         a_path.stat().st_size, None)}
    # Provenance still leads to the original log lines, through the parent.
    new_child = b.conn.execute("SELECT id FROM records WHERE digest = ?", ("d" * 64,)).fetchone()[0]
    chain = b.lineage(new_child)
    assert [r["origin"] for r in chain] == ["transferred", "tuned"]
    assert chain[1]["file"] == str((TINY / (RECORDS + ".gz")).resolve()) and chain[1]["line"] == parent["line"]
    assert chain[0]["distance"] == 0.25
    a2 = Store(a_path, readonly=True)
    assert [(r["origin"], r["file"], r["line"], r["kind"]) for r in a2.lineage(child)] == \
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
    import schedb.store

    def hex_digest(signature, target, trace, run_secs_text):
        return hashlib.sha256("\x1f".join((signature, target, trace, run_secs_text)).encode()).hexdigest()

    with monkeypatch.context() as m:
        m.setattr(schedb.store, "SCHEMA_VERSION", 2)
        m.setattr(ingest_mod, "_digest", hex_digest)
        store = Store(path)
        report = ingest(store, sources)
        assert report.errors == [] and report.new_records > 0
        # A derived record whose lineage must survive the rebuild of the records table.
        parent = store.best_record(store.conn.execute(
            "SELECT id FROM workloads WHERE shash IS NOT NULL").fetchone()[0])
        with store.transaction():
            store.add_record(workload_id=parent["workload_id"], target=parent["target"], format="ms-trace",
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
    from schedb.ingest import record_digest
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
    assert store.version() == SCHEMA_VERSION == 4
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
    assert [r["origin"] for r in store.lineage(child)] == ["transferred", "tuned"]
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
    real = Store.upsert_workload
    late = write_ansor(tmp_path / "late.json", [ansor_line(i, key_hash="late") for i in range(2)])
    state = {"done": False}

    def upsert_workload(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self is b and not state["done"]:
            state["done"] = True
            ingest(a, [late])  # a concurrent writer adds a workload and its records
        return out

    monkeypatch.setattr(Store, "upsert_workload", upsert_workload)
    report = ingest(b, [a.path])
    assert state["done"]
    assert report.errors == [] and report.new_records in (3, 5)
    monkeypatch.undo()
    ingest(b, [a.path])
    assert b.counts()["records"] == 5


# --------------------------------------------------------------------------- property: corruption
def _good_ansor_lines() -> list[str]:
    if SEED.is_dir():
        lines = (SEED / "alexnet.json").read_text().splitlines()
        return lines[:20] + [lines[i] for i in range(100, 5000, 400)]
    return [ansor_line(i) for i in range(20)] + [ansor_line(i, error_no=1) for i in range(3)]


GOOD_ANSOR = _good_ansor_lines()


@pytest.fixture(scope="module")
def good_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    log = write_ansor(d / "seed-slice" / "alexnet.json", GOOD_ANSOR)
    store = Store(d / "good.db")
    report = ingest(store, [TINY, log])
    assert report.errors == [] and report.skipped_lines == 0
    snap = snapshot(store.conn)
    ids = max_ids(store.conn)
    store.close()
    return d / "good.db", snap, ids


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([0, -1, 2 ** 63, 10 ** 400, -(10 ** 30)])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)


def _replace_somewhere(obj, data):
    """Replace one node of a parsed JSON value (chosen by hypothesis) with a random value."""
    if isinstance(obj, (list, dict)) and obj and data.draw(st.integers(0, 3)) > 0:
        keys = list(range(len(obj))) if isinstance(obj, list) else list(obj)
        k = data.draw(st.sampled_from(keys))
        obj[k] = _replace_somewhere(obj[k], data)
        return obj
    return data.draw(json_values)


def _corrupt(line: str, data) -> bytes:
    how = data.draw(st.sampled_from([
        "keep", "truncate", "flip", "insert", "drop-brackets", "field", "empty", "garbage", "deep", "digits",
    ]))
    raw = line.encode()
    if how == "keep":
        return raw
    if how == "truncate":
        return raw[: data.draw(st.integers(0, len(raw)))]
    if how == "flip":
        b = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        return bytes(b).replace(b"\n", b" ")
    if how == "insert":
        k = data.draw(st.integers(0, len(raw)))
        return raw[:k] + data.draw(st.binary(min_size=1, max_size=8)).replace(b"\n", b"") + raw[k:]
    if how == "drop-brackets":
        ch = data.draw(st.sampled_from("[]{}\""))
        if data.draw(st.booleans()):
            return line.replace(ch, "").encode()
        positions = [i for i, c in enumerate(line) if c == ch]
        if not positions:
            return raw
        i = data.draw(st.sampled_from(positions))
        return (line[:i] + line[i + 1:]).encode()
    if how == "field":
        try:
            text = json.dumps(_replace_somewhere(json.loads(line), data))
        except ValueError:  # json.dumps of an int too long to print
            text = line
        return text.encode()
    if how == "empty":
        return data.draw(st.sampled_from([b"", b"   ", b"\t", b"\r"]))
    if how == "garbage":
        return data.draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b"")
    if how == "deep":
        return data.draw(st.sampled_from([b"[", b"{\"i\":"])) * data.draw(st.sampled_from([10, 2000, 50_000]))
    return raw.replace(b"[", b"[" + b"9" * data.draw(st.sampled_from([40, 400, 5000])) + b",", 1)


def _corrupt_file(lines: list[str], data) -> bytes:
    n = data.draw(st.integers(1, min(8, len(lines))))
    start = data.draw(st.integers(0, len(lines) - n))
    return b"\n".join(_corrupt(line, data) for line in lines[start: start + n]) + \
        data.draw(st.sampled_from([b"\n", b"", b"\n\n"]))


def _maybe_gzip(path: Path, content: bytes, data) -> None:
    if data.draw(st.integers(0, 3)) == 0:
        z = bytearray(gzip.compress(content))
        damage = data.draw(st.sampled_from(["none", "flip", "cut"]))
        if damage == "flip":
            k = data.draw(st.integers(10, len(z) - 1))
            z[k] ^= data.draw(st.integers(1, 255))
        elif damage == "cut":
            z = z[: data.draw(st.integers(0, len(z)))]
        path.with_name(path.name + ".gz").write_bytes(bytes(z))
    else:
        path.write_bytes(content)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_input_never_escapes_or_loses_data(good_db, tmp_path_factory, data):
    good_path, good_snap, good_ids = good_db
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    inp = work / "in"
    inp.mkdir()
    kinds = data.draw(st.sets(st.sampled_from(["ms", "ansor", "garbage", "schedb"]), min_size=1))
    if "ms" in kinds:
        wd = inp / "wd"
        wd.mkdir()
        _maybe_gzip(wd / RECORDS, _corrupt_file(TINY_R, data), data)
        workloads = list(TINY_W)
        if data.draw(st.integers(0, 4)) == 0:
            i = data.draw(st.integers(0, len(workloads) - 1))
            workloads[i] = _corrupt(workloads[i], data).decode("utf-8", "replace")
        _maybe_gzip(wd / WORKLOADS, "\n".join(workloads).encode() + b"\n", data)
        side = data.draw(st.sampled_from(["real", "none", "json", "field", "garbage"]))
        if side == "real":
            shutil.copy(TINY / "schedb.json", wd / "schedb.json")
        elif side == "json":
            (wd / "schedb.json").write_text(json.dumps(data.draw(json_values)))
        elif side == "field":
            try:
                text = json.dumps(_replace_somewhere(json.loads(json.dumps(TINY_SIDECAR)), data))
            except ValueError:
                text = "{}"
            (wd / "schedb.json").write_text(text)
        elif side == "garbage":
            (wd / "schedb.json").write_bytes(data.draw(st.binary(max_size=30)))
    if "ansor" in kinds:
        _maybe_gzip(inp / "alexnet.json", _corrupt_file(GOOD_ANSOR, data), data)
        if data.draw(st.booleans()):
            (inp / "wkl_classes.json").write_bytes(_corrupt(json.dumps({"x_1": ["ab"]}), data))
    if "garbage" in kinds:
        (inp / "junk.log").write_bytes(data.draw(st.binary(min_size=0, max_size=200)))
    if "schedb" in kinds:
        b = bytearray(good_path.read_bytes())
        for _ in range(data.draw(st.integers(1, 20))):
            b[data.draw(st.integers(100, len(b) - 1))] = data.draw(st.integers(0, 255))
        (inp / "other.db").write_bytes(bytes(b))

    db = clone_db(good_path, work / "db.sqlite")
    store = Store(db)
    try:
        report = ingest(store, [inp])  # must not raise
        assert isinstance(report.errors, list)
        assert store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert not store.conn.in_transaction
        # Nothing that was there is lost or changed.
        assert snapshot(store.conn, good_ids) == good_snap
        if "schedb" not in kinds:  # a damaged database may well claim records of the same files
            good_files = [f[0] for f in good_snap["files"]]
            n_good = store.conn.execute(
                f"SELECT COUNT(*) FROM records WHERE file_id IN ({','.join('?' * len(good_files))})",
                good_files).fetchone()[0]
            assert n_good == len(good_snap["records"])
        # The report tells the truth about what was added.
        assert store.counts()["records"] - len(good_snap["records"]) == report.new_records
        # Invalid rows never become best.
        assert store.conn.execute(
            "SELECT COUNT(*) FROM best_records WHERE valid = 0 OR mean_s IS NULL").fetchone()[0] == 0
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- TVM: schedb.Database
def test_database_feeds_compile(tiny_db, target, lowered):
    from schedb.compile import compile_model
    from schedb.database import Database

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

    from schedb.compile import compile_model
    from schedb.database import Database
    from schedb.measure import WarmBuilder, make_runner

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

    from schedb.compile import compile_model
    from schedb.workdir import export_workdir

    store = Store(mixed_db, readonly=True)
    n_ms = store.conn.execute("SELECT COUNT(*) FROM records WHERE format = 'ms-trace'").fetchone()[0]
    n_ms_wl = store.conn.execute(
        "SELECT COUNT(DISTINCT workload_id) FROM records WHERE format = 'ms-trace'").fetchone()[0]
    out = tmp_path / "export"
    assert export_workdir(store, out) == (n_ms_wl, n_ms)  # Ansor records left out
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
    assert export_workdir(store, tmp_path / "m", model="tiny_mlp") == (n_ms_wl, n_ms)
    assert export_workdir(store, tmp_path / "l", model="legacy") == (0, 0)
    with pytest.raises(SchedbError, match="no model"):
        export_workdir(store, tmp_path / "x", model="nope")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "c"), "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0 and f"wrote {n_ms_wl} workloads, {n_ms} records" in result.output, explain(result)


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


def _table_cells(text: str) -> dict:
    """A one-row rich table (cells may wrap over several lines) -> {column: text}."""
    lines = text.splitlines()
    header = [c.strip() for c in next(x for x in lines if x.startswith("┃")).split("┃")[1:-1]]
    cells = [""] * len(header)
    for x in lines:
        if x.startswith("│"):
            for i, c in enumerate(x.split("│")[1:-1]):
                cells[i] += c.strip()
    return dict(zip(header, cells))


def test_cli_show_and_provenance(mixed_db):
    conn = sqlite3.connect(mixed_db)
    wid, rid, line, path = conn.execute(
        "SELECT r.workload_id, r.id, r.line, f.path FROM records r JOIN files f ON f.id = r.file_id"
        " WHERE r.format = 'ms-trace' AND r.valid = 1 ORDER BY r.mean_s, r.id LIMIT 1").fetchone()
    ansor_rid = conn.execute("SELECT id FROM records WHERE format = 'ansor-steps' LIMIT 1").fetchone()[0]
    runner = CliRunner()

    result = runner.invoke(cli, ["show", "workload", str(wid), "--db", str(mixed_db)])
    cli_ok(result)
    w = json.loads(result.stdout)
    assert w["id"] == wid and w["models"] == ["tiny_mlp"] and w["best"]["id"] == rid
    assert w["records"] == conn.execute("SELECT COUNT(*) FROM records WHERE workload_id = ?", (wid,)).fetchone()[0]
    assert "ms_workload" not in w and isinstance(w["description"], dict)

    for r in (rid, ansor_rid):
        result = runner.invoke(cli, ["show", "record", str(r), "--db", str(mixed_db)])
        cli_ok(result)
        rec = json.loads(result.stdout)
        assert rec["id"] == r and isinstance(rec["trace"], list) and isinstance(rec["target"], dict)

    result = runner.invoke(cli, ["provenance", str(rid), "--db", str(mixed_db)])
    cli_ok(result)
    assert result.exit_code == 0, explain(result)
    table = _table_cells(result.stdout)
    assert table["origin"] == "tuned" and table["model"] == "tiny_mlp" and table["id"] == str(rid)
    assert table["file"] == path and table["line"] == str(line)  # the whole path, not cut

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
    result = CliRunner().invoke(cli, ["ingest", str(TINY), "--db", str(db)])
    assert result.exit_code == 0 and "(1 already in the database)" in result.output, explain(result)
    (tmp_path / "notes.txt").write_text("hello")
    result = CliRunner().invoke(cli, ["ingest", str(TINY), "--db", str(tmp_path / "notes.txt")])
    cli_ok(result)
    assert result.exit_code != 0 and "not a schedb database" in result.output, explain(result)
