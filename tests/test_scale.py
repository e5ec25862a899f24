"""Tuning over several machines: `tune --tasks` (name patterns, balanced shards i/n) and
`tune --runner rpc://...` through a real TVM RPC tracker and servers on loopback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import explain

from schedb.errors import SchedbError
from schedb.tir.tasks import Task, select_tasks, shards
from schedb_cli.main import cli


def _tasks(costs) -> list[Task]:
    return [Task(f"t{i}", 1, None, None) for i in range(len(costs))]


def _cost_of(costs):
    by_name = {f"t{i}": c for i, c in enumerate(costs)}
    return lambda t: by_name[t.name]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1, 1e9), min_size=1, max_size=80), st.integers(1, 12))
def test_shards_are_disjoint_cover_every_task_and_are_balanced(costs, n):
    tasks, cost = _tasks(costs), _cost_of(costs)
    parts = shards(tasks, n, cost)
    names = [t.name for part in parts for t in part]
    assert sorted(names) == sorted(t.name for t in tasks) and len(set(names)) == len(names)
    for part in parts:  # each keeps the model's task order
        assert [t.name for t in part] == [t.name for t in tasks if t in part]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # equal task counts, to one
    loads = [sum(cost(t) for t in part) for part in parts]
    # Largest first into the least loaded: no shard exceeds the mean by more than one task.
    assert max(loads) <= sum(loads) / n + max(costs) + 1e-6 * sum(loads)
    # The same tasks give the same split (what n machines rely on), and i/n selects shard i.
    assert [[t.name for t in p] for p in shards(tasks, n, cost)] == [[t.name for t in p] for p in parts]
    assert [t.name for t in select_tasks(tasks, f"{n}/{n}", cost)] == [t.name for t in parts[-1]]


def test_shards_balance_a_skewed_model():
    costs = [100, 60, 50, 40, 30, 20, 10, 5, 5, 1]  # a few heavy kernels and a tail
    loads = sorted(sum(_cost_of(costs)(t) for t in part) for part in shards(_tasks(costs), 3, _cost_of(costs)))
    assert loads == [105, 106, 110]


def test_task_patterns_select_by_name():
    tasks = [Task(n, 1, None, None) for n in ("fused_conv2d_add_relu", "fused_conv2d1_add1", "reshape", "dense")]
    assert [t.name for t in select_tasks(tasks, "fused_conv2d*")] == ["fused_conv2d_add_relu", "fused_conv2d1_add1"]
    assert [t.name for t in select_tasks(tasks, "reshape, dense")] == ["reshape", "dense"]
    assert select_tasks(tasks, None) == tasks
    with pytest.raises(SchedbError, match="matches none of the model's 4 tasks"):
        select_tasks(tasks, "softmax*")
    for bad in ("0/2", "3/2"):
        with pytest.raises(SchedbError, match="1 <= i <= n"):
            select_tasks(tasks, bad)


def test_real_model_shards_split_its_estimated_cost(lowered, target):
    from schedb.tir.tasks import extract_tasks, task_cost

    tasks = extract_tasks(lowered, target)
    parts = [select_tasks(tasks, f"{i}/2") for i in (1, 2)]
    assert sorted(t.name for p in parts for t in p) == sorted(t.name for t in tasks)
    assert all(parts) and all(task_cost(t) >= 1 for t in tasks)


@pytest.mark.parametrize("args, message", [
    (["--tasks", "nothing*"], "--tasks 'nothing*' matches none of the model's 2 tasks"),
    (["--tasks", "3/4"], "--tasks 3/4: this shard of tiny_mlp's 2 tasks is empty"),
    (["--runner", "rpc://127.0.0.1/key"], "bad runner"),
    (["--runner", "rpc://127.0.0.1:9/key"], "--runner rpc://127.0.0.1:9/key: no tracker answers there"),
])
def test_bad_selection_or_runner_is_a_clean_error(args, message, tmp_path):
    res = CliRunner().invoke(cli, ["tune", "--model", "tiny_mlp", "--trials", "2", "--out", str(tmp_path / "w"),
                                   *args])
    assert res.exit_code == 1, explain(res)
    assert message in res.output and "Traceback" not in res.output, res.output


# --------------------------------------------------------------------------- a tracker on loopback


def _in_session(server, tracker_port: int) -> bool:
    """A session in flight on ``server``: a process serving it (a child of its listener) is
    connected to a client, not only to the tracker, and the client has not hung up."""
    import psutil

    try:
        for child in psutil.Process(server.pid).children(recursive=True):
            for conn in child.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port != tracker_port \
                        and child.ppid() != server.pid:
                    return True
    except psutil.Error:
        return False
    return False


def _records_by_task(db_path):
    """{task name: [(record id, the sidecar of the work dir it came from)]} of a database."""
    import json
    from pathlib import Path

    from schedb.store import Store

    store = Store(db_path, readonly=True)
    _, rows = store.query("SELECT t.task_name, r.id, f.path, r.valid FROM records r "
                          "JOIN model_tasks t ON t.workload_id = r.workload_id JOIN files f ON f.id = r.file_id")
    out: dict = {}
    for name, rid, path, valid in rows:
        meta = json.loads((Path(path).parent / "schedb.json").read_text())
        out.setdefault(name, []).append((rid, meta, valid))
    return out


@pytest.mark.slow
def test_two_shards_over_two_tracker_keys_ingest_into_one_database(cluster, tmp_path, target):
    """Two machines' worth of tuning on loopback: shard 1/2 measured on the server of key a,
    2/2 on key b; both work dirs ingest into one database, where every task of the model has
    records and every record leads (its file, that file's sidecar) to the runner that measured it."""
    from schedb import extract_tasks, load_model, lower, tune
    from schedb.ingest import ingest
    from schedb.pipeline.tune import TuneBudget
    from schedb.store import Store

    model = load_model("tiny_mlp")
    names = [t.name for t in extract_tasks(lower(model, target), target)]
    runners = {}
    for i, key in ((1, "shard-a"), (2, "shard-b")):
        cluster.server(key)
        runners[i] = cluster.runner(key)
        meta = tune(model, target, tmp_path / f"shard{i}", TuneBudget(trials_per_task=2, trials_per_iter=2),
                    tasks=f"{i}/2", runner=runners[i])
        assert meta["runner"] == runners[i] and meta["task_selection"] == {"tasks": f"{i}/2", "of": len(names)}
        assert meta["measured"] >= len(meta["tasks"]) >= 1 and meta["runner_retries"] == []
    report = ingest(Store(tmp_path / "one.db"), [tmp_path / "shard1", tmp_path / "shard2"])
    assert not report.errors, report.errors
    by_task = _records_by_task(tmp_path / "one.db")
    assert sorted(by_task) == sorted(names)  # every task, from one shard or the other
    for name, records in by_task.items():
        assert records and all(valid for _, _, valid in records), name
        shard = {meta["task_selection"]["tasks"] for _, meta, _ in records}
        assert len(shard) == 1, name  # each task was tuned by one machine only
        assert {meta["runner"] for _, meta, _ in records} == {runners[int(shard.pop()[0])]}
        assert all(name in [t["name"] for t in meta["tasks"]] for _, meta, _ in records)


@pytest.mark.slow
def test_a_server_killed_mid_run_costs_one_more_run_of_its_candidates(cluster, tmp_path):
    """Two servers under one key; one is killed (with its session in flight) while `schedb tune`
    measures on them. The candidates it had in flight run again on the other server, and the
    run completes with every trial measured: nothing is lost, nothing is stored as failed.
    A kill can land in a session's last moments, after its result reached the client: then
    nothing needs running again, and the run is tried once more with new servers (at most
    three runs), each one held to the same completeness."""
    retried = []
    for attempt in range(3):
        output, meta = _kill_a_server_mid_run(cluster, f"pair{attempt}", tmp_path / f"work{attempt}")
        retried.append(len(meta["runner_retries"]))
        assert retried[-1] <= 2, output  # at most what the victim had in flight
        if retried[-1]:
            assert "ran again after a failed RPC session" in output
            break
    assert retried[-1] >= 1, f"no kill landed mid-session in {len(retried)} runs"


def _kill_a_server_mid_run(cluster, key: str, out) -> tuple[str, dict]:
    """`schedb tune` on two servers of ``key``, one killed while a client is in its session:
    (the run's output, its sidecar), after checking that every trial was measured."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    victim = cluster.server(key)
    cluster.server(key)
    args = ["tune", "--model", "tiny_mlp", "--trials-per-task", "8", "--trials-per-iter", "4",
            "--runner", cluster.runner(key), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "schedb_cli.main", *args], cwd=Path(__file__).parents[1],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not _in_session(victim, cluster.port):
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before a server could be killed"
        os.killpg(victim.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output
    meta = json.loads((out / "schedb.json").read_text())
    lines = [json.loads(line) for line in (out / "database_tuning_record.json").read_text().splitlines()]
    assert len(lines) == meta["measured"] >= 8 * len(meta["tasks"]), output
    failed = [run_secs for _, (_, run_secs, *_) in lines if not run_secs or min(run_secs) >= 1e9]
    assert failed == [], failed
    return output, meta
