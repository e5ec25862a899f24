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
from schedb_cli import browse_runs

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
    yield from serve(browse_db[0])


def serve(path):
    """`schedb browse` on ``path`` in a child process, on a free port: yields its base URL."""
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


@pytest.fixture(scope="module")
def run_db(tmp_path_factory, target):
    """A transfer run as the README's quick start makes one, in small: tiny_cnn_wide from
    tiny_cnn's fixture, timed beside PyTorch. -> (path, run id)."""
    from schedb.models import load_model
    from schedb.pipeline.transfer import Options, transfer

    path = tmp_path_factory.mktemp("runs") / "runs.db"
    store = Store(path)
    assert not ingest(store, [FIXTURE_CNN]).errors
    rep = transfer(store, load_model("tiny_cnn_wide"), target, Options(k=1, trials=6, e2e_repeat=3))
    store.close()
    return path, rep.run_id


@pytest.fixture(scope="module")
def run_server(run_db):
    yield from serve(run_db[0])


@needs_chromium
def test_run_page_shows_each_task_and_the_latency_beside_pytorch(run_server, run_db, tmp_path):
    path, run_id = run_db
    db, run = path.stem, Store(path, readonly=True).runs.get(run_id)
    listing = chromium("--dump-dom", f"{run_server}/-/schedb/runs")
    assert f'href="/-/schedb/runs/{run_id}"' in listing and "tiny_cnn_wide" in listing

    url = f"{run_server}/-/schedb/runs/{run_id}"
    dom = chromium("--dump-dom", url)
    assert f"Run {run_id}: transfer of tiny_cnn_wide" in dom
    tables = re.findall(r"<table class=\"(\w+)\".*?<tbody>(.*?)</tbody>", dom, re.S)
    rows = {cls: [[unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
                  for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)] for cls, body in tables}
    # Each task: its source, the untuned and chosen kernel rounded, its share; the records linked.
    assert [(r[0], r[2]) for r in rows["tasks"]] == [(t.task, t.source) for t in run.tasks]
    for r, t in zip(rows["tasks"], run.tasks):
        assert r[7] == browse_runs.fmt_us(t.untuned_us) and r[8] == browse_runs.fmt_us(t.chosen_us)
        assert re.fullmatch(r"\d+\.\d%", r[10]), r
    assert sum(float(r[10][:-1]) for r in rows["tasks"]) == pytest.approx(100, abs=0.3)
    for t in run.tasks:
        if t.record_id:
            assert f'href="/{db}/records/{t.record_id}"' in dom
            assert f'href="/{db}/lineage?record={t.record_id}"' in dom
            assert f'href="/{db}/lineage?record={t.source_record_id}"' in dom
    # The model's latencies beside PyTorch's, in the table and the chart, with labelled axes.
    assert [r[0] for r in rows["e2e"]] == ["untuned", "transferred", "pytorch"]
    assert rows["e2e"][2][1] == browse_runs.fmt_ms(run.pytorch_ms) and rows["e2e"][1][3].endswith("x")
    assert dom.count('class="bar"') == 3 and dom.count('class="share"') == len(run.tasks)
    assert "median latency, ms (log scale)" in dom and "share of the model's kernel time" in dom
    # A chosen record's lineage leads back to tiny_cnn's log line.
    chosen = next(t for t in run.tasks if t.record_id)
    lineage = chromium("--dump-dom", f"{run_server}/{db}/lineage?record={chosen.record_id}")
    assert cells(lineage, "id") == [str(chosen.record_id), str(chosen.source_record_id)]
    assert cells(lineage, "model") == ["tiny_cnn_wide", "tiny_cnn"]

    shot = tmp_path / "run.png"
    chromium("--window-size=1400,1100", f"--screenshot={shot}", url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000 and int.from_bytes(data[16:20], "big") == 1400
    assert chromium("--dump-dom", f"{run_server}/-/schedb/runs/999").count("No such run") == 1
