"""`schedb browse` for real: the server on loopback, pages loaded by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from html import unescape

import pytest
from helpers import foreign_target
from ingest_common import ROOT, TINY

from schedb.ingest import ingest
from schedb.store import Store

FIXTURE_CNN = ROOT / "fixtures" / "tiny_cnn"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (.ci/run installs Debian's)")


@pytest.fixture(scope="module")
def browse_db(tmp_path_factory):
    """tiny_cnn + tiny_mlp, and a record transferred from a tiny_cnn record to another CPU:
    (path, transferred record id, its parent's id)."""
    path = tmp_path_factory.mktemp("browse") / "tiny.db"
    store = Store(path)
    assert not ingest(store, [FIXTURE_CNN, TINY]).errors
    parent = store.records.best(max(store.models.task_weights(store.models.id_of("tiny_cnn"))))
    with store.transaction():
        child = store.records.add(
            workload_id=parent["workload_id"], target=foreign_target(parent["target"]), format="ms-trace",
            trace=parent["trace"], run_secs="[1e-05]", mean_s=1e-5, valid=1, origin="transferred",
            parent_id=parent["id"], source_workload_id=parent["workload_id"], distance=0.0,
            model_id=store.models.id_of("tiny_mlp"), created_at="2026-12-01T00:00:00+00:00", digest=b"t" * 16)
    store.close()
    return path, child, parent["id"]


@pytest.fixture(scope="module")
def server(browse_db):
    path = browse_db[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "schedb_cli.main", "browse", "--db", str(path), "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"schedb browse did not start: {proc.communicate()[0]}")
            time.sleep(0.5)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def chromium(*args) -> str:
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def cells(dom: str, column: str) -> list[str]:
    """The text of a datasette result table's column, row by row."""
    return [unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(rf'<td class="col-{column}(?: [^"]*)?"[^>]*>(.*?)</td>', dom, re.S)]


@needs_chromium
def test_browse_home_and_canned_lineage_query(server, browse_db, tmp_path):
    path, child, parent = browse_db
    db = path.stem
    home = chromium("--dump-dom", server + "/")
    assert "schedb" in home and f'href="/{db}"' in home

    queries = chromium("--dump-dom", f"{server}/{db}")
    for title in ("Lineage of a record", "Best schedule per workload and target", "What came from a model or file",
                  "Transferred from another CPU", "Search history of a workload"):
        assert title in queries, title

    url = f"{server}/{db}/lineage?record={child}"
    dom = chromium("--dump-dom", url)
    assert cells(dom, "id") == [str(child), str(parent)]
    assert cells(dom, "origin") == ["transferred", "tuned"] and cells(dom, "depth") == ["0", "1"]
    assert cells(dom, "model") == ["tiny_mlp", "tiny_cnn"]
    assert cells(dom, "file")[1].endswith("tiny_cnn/database_tuning_record.json.gz")

    shot = tmp_path / "lineage.png"
    chromium("--window-size=1400,900", f"--screenshot={shot}", url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
    assert int.from_bytes(data[16:20], "big") == 1400


@needs_chromium
def test_browse_provenance_queries_and_search_chart(server, browse_db):
    path, child, parent = browse_db
    db = path.stem
    dom = chromium("--dump-dom", f"{server}/{db}/transferred_from_other_cpu")
    assert cells(dom, "record") == [str(child)] and cells(dom, "parent") == [str(parent)]
    assert cells(dom, "here_us") == ["10.0"]

    dom = chromium("--dump-dom", f"{server}/{db}/from_model_or_file?model=tiny_cnn&file=")
    assert str(child) in cells(dom, "record")  # tiny_mlp's record, from tiny_cnn's schedule

    wid, n = sqlite3.connect(path).execute(
        "SELECT workload_id, (SELECT COUNT(*) FROM records x WHERE x.workload_id = r.workload_id)"
        " FROM records r WHERE id = ?", (parent,)).fetchone()
    dom = chromium("--dump-dom", f"{server}/-/schedb/chart?workload={wid}")
    assert "<svg" in dom and dom.count('class="measured"') == n, dom[:2000]
    assert f"{n} measurements" in dom


def test_browse_errors_are_one_line(browse_db, tmp_path):
    from click.testing import CliRunner

    from schedb_cli.main import cli

    result = CliRunner().invoke(cli, ["browse", "--db", str(tmp_path / "missing.db")])
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path / 'missing.db'}: no such database\n"
    assert not (tmp_path / "missing.db").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["browse", "--db", str(browse_db[0]), "--port", str(port)])
    assert result.exit_code == 1 and result.output.startswith(f"Error: cannot serve on 127.0.0.1:{port}: ")
    assert len(result.output.splitlines()) == 1, result.output
