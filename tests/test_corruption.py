"""Property: corrupted input never escapes as a traceback and never loses good data."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_common import RECORDS, SEED, TINY, TINY_R, TINY_SIDECAR, TINY_W, WORKLOADS, ansor_line, clone_db, max_ids, snapshot, write_ansor

from schedb.ingest import ingest
from schedb.store import Store


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
