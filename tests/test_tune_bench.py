"""`schedb tune` and `schedb bench` end to end, on user models (a .py factory and ONNX)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import explain

from schedb_cli.main import cli

FIXTURES = Path(__file__).parents[1] / "fixtures"

FACTORY = """
import torch
from torch import nn

def small():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))

small.input_shape = (1, 32)
"""


def _onnx_model(path: Path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 32)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal(16).astype("float32"), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y0"], transB=1), helper.make_node("Relu", ["y0"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], initializer=[w, b],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("kind", ["factory", "onnx"])
def test_user_model_tunes_and_benches(kind, tmp_path):
    if kind == "factory":
        (tmp_path / "net.py").write_text(FACTORY)
        spec = f"{tmp_path / 'net.py'}:small"
    else:
        _onnx_model(tmp_path / "net.onnx")
        spec = str(tmp_path / "net.onnx")
    out = tmp_path / "work"
    runner = CliRunner()
    # An unnamed handler on MetaSchedule's logger (pytest's log capture adds such, and so may a
    # user) made TVM's create_loggers fail with None.format inside tune.
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    stray = logging.StreamHandler()
    logger.addHandler(stray)
    try:
        res = runner.invoke(cli, ["tune", "--model", spec, "--trials", "6", "--out", str(out)])
    finally:
        logger.removeHandler(stray)
    assert res.exit_code == 0, explain(res)
    meta = json.loads((out / "schedb.json").read_text())
    assert meta["trials"] == 6 and meta["tasks"] and meta["tvm_version"]
    assert json.loads(meta["target"])["kind"] == "llvm"
    # The timeline accounts for every record of every task (workload i is task i), in time order.
    from collections import Counter

    lines = (out / "database_tuning_record.json").read_text().splitlines()
    per_workload = Counter(json.loads(line)[0] for line in lines)
    steps = meta["timeline"]["tasks"]
    assert {i: s[-1][1] for i, s in enumerate(steps) if s} == dict(per_workload)
    times = [t for s in steps for t, _ in s]
    assert all(0 <= t <= meta["wall_time_s"] + 1 for t in times)
    # Where the search's time went, by MetaSchedule's profiler: builds and runs among it.
    profile = meta["profile_s"]
    assert 0 < profile["SendToBuilder"] < profile["Total"] <= meta["wall_time_s"] + 1, profile
    assert "SendToRunner" in profile and any(k.startswith("EvoSearch") for k in profile), profile

    # TVM's own JSONDatabase reads the work dir, and MetaScheduleApplyDatabase uses it.
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    assert len(JSONDatabase(work_dir=str(out))) > 0
    res = runner.invoke(cli, ["bench", "--model", spec, "--logs", str(out), "--repeat", "3", "--json"])
    assert res.exit_code == 0, explain(res)
    report = json.loads(res.stdout)
    assert report["tuned_tasks"] >= 1
    assert report["max_abs_err"] < 1e-3
    assert report["tvm"]["median_ms"] > 0
    assert (report["pytorch"] is None) == (kind == "onnx")  # no PyTorch module behind an ONNX file


def test_time_limit_ends_tuning_with_a_complete_work_dir(tmp_path):
    """MetaSchedule has no time budget; --time-limit stops every task after the batch
    measured past it, and the work dir and sidecar are as complete as after a full run."""
    out = tmp_path / "work"
    res = CliRunner().invoke(cli, ["tune", "--model", "tiny_mlp", "--trials-per-task", "50",
                                   "--trials-per-iter", "2", "--time-limit", "0", "--out", str(out)])
    assert res.exit_code == 0, explain(res)
    for name in ("loading TVM and PyTorch", "importing the model", "lowering", "extracting tasks", "tuning 2 tasks"):
        # Every phase starts and ends on a line of its own (not a terminal: plain lines).
        assert f"] {name} ...\n" in res.output and f"] {name}: done in " in res.output, res.output
    meta = json.loads((out / "schedb.json").read_text())
    assert meta["time_limit_s"] == 0 and meta["trials"] == 50 * len(meta["tasks"])
    from collections import Counter

    per_workload = Counter(json.loads(line)[0] for line in
                           (out / "database_tuning_record.json").read_text().splitlines())
    # At most the one batch each task had in flight when the clock ran out, not 50 trials.
    assert per_workload and max(per_workload.values()) <= 2
    steps = meta["timeline"]["tasks"]
    assert {i: s[-1][1] for i, s in enumerate(steps) if s} == dict(per_workload)
    # What was measured, not the budget, is what the user is told.
    assert meta["measured"] == sum(per_workload.values()) < meta["trials"]
    assert f"{meta['measured']} of {meta['trials']} trials" in res.output


def test_bench_untuned_zoo_model_against_pytorch():
    res = CliRunner().invoke(cli, ["bench", "--model", "tiny_cnn", "--repeat", "3"])
    assert res.exit_code == 0, explain(res)
    assert "pytorch" in res.output and "check" in res.output


def test_bench_with_fixture_logs_schedules_kernels():
    res = CliRunner().invoke(cli, ["bench", "--model", "tiny_cnn", "--logs", str(FIXTURES / "tiny_cnn"),
                                   "--repeat", "3", "--json"])
    assert res.exit_code == 0, explain(res)
    assert json.loads(res.stdout)["tuned_tasks"] >= 3
    assert "note:" not in res.output  # tuned on this pipeline: bound weights


def test_bench_compiles_a_work_dir_the_way_it_was_tuned(tmp_path):
    """A work dir from before weights were bound (its sidecar has no "params") is compiled
    with the weights as inputs, and the user is told."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(FIXTURES / "tiny_cnn", old)
    meta = json.loads((old / "schedb.json").read_text())
    del meta["params"]
    (old / "schedb.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(cli, ["bench", "--model", "tiny_cnn", "--logs", str(old), "--repeat", "3"])
    assert res.exit_code == 0, explain(res)
    assert "tuned with the weights as runtime inputs: compiling the same way" in res.output


@pytest.mark.parametrize("args, message", [
    (["bench", "--model", "no_such_model"], "unknown model"),
    (["bench", "--model", "missing.onnx"], "no such file"),
    (["tune", "--model", "tiny_mlp", "--target", "llvm -mcpu", "--out", "x"], "bad target"),
])
def test_bad_input_is_a_clean_error(args, message):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_tune_resumes_after_a_real_kill(tmp_path):
    """SIGKILL a tuning run mid-search, resume it: what was committed stays, the trials
    already spent count against each task's budget, and every task reaches it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from schedb.ingest.workdir import spent_trials
    from schedb import extract_tasks, load_model, lower, parse_target

    out = tmp_path / "work"
    args = ["tune", "--model", "tiny_mlp", "--trials-per-task", "16", "--trials-per-iter", "4", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "schedb_cli.main", *args], cwd=Path(__file__).parents[1],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "database_tuning_record.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if records.is_file() and len(records.read_text().splitlines()) >= 8:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its build and run workers
    proc.wait()
    target = parse_target(None)
    tasks = extract_tasks(lower(load_model("tiny_mlp"), target), target)
    spent = spent_trials(out, tasks)
    kept = records.read_text().splitlines()
    assert 8 <= sum(spent) < 32 and not (out / "schedb.json").exists()

    res = CliRunner().invoke(cli, args)  # without --resume: refused
    assert res.exit_code == 1 and "--resume continues it" in res.output, explain(res)
    res = CliRunner().invoke(cli, [*args, "--resume"])
    assert res.exit_code == 0, explain(res)
    whole = [line for line in kept if line.strip()][:sum(spent)]  # a line the kill cut short is dropped
    assert records.read_text().splitlines()[:len(whole)] == whole
    final = spent_trials(out, tasks)
    assert all(16 <= n <= 16 + 4 for n in final), final  # each task's budget, at most a batch over
    meta = json.loads((out / "schedb.json").read_text())
    assert meta["resumed_from_trials"] == sum(spent) and meta["wall_time_s"] > 0
    assert meta["cost_model_warm_samples"] > 0  # the resumed search's cost model learned the kept trials
    for steps in meta["timeline"]["tasks"]:
        assert steps and [n for _, n in steps] == sorted(n for _, n in steps)


@pytest.mark.slow
def test_a_kill_in_the_first_pass_loses_at_most_the_batches_in_flight(tmp_path):
    """Killed while its first pass over the tasks is still going, a run has kept every batch
    that had run (MetaSchedule's gradient scheduler kept none of that pass)."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    out, per_iter = tmp_path / "work", 4
    args = ["tune", "--model", "tiny_cnn", "--trials-per-task", "8", "--trials-per-iter", str(per_iter),
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "schedb_cli.main", *args], cwd=Path(__file__).parents[1],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log() -> str:
        found = list((out / "logs").glob("*task_scheduler.log"))
        return found[0].read_text(errors="replace") if found else ""

    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and "picks Task #3" not in log():
        time.sleep(0.2)  # the 4th of tiny_cnn's 4 tasks: the first pass is not over
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    sent = sum(int(n) for n in re.findall(r"Sending (\d+) valid sample\(s\) to runner", log()))
    records = out / "database_tuning_record.json"
    kept = len([line for line in records.read_text().splitlines() if line.strip()]) if records.is_file() else 0
    assert sent > 2 * per_iter, sent  # more than two batches had gone to the runner
    assert kept >= sent - 2 * per_iter, (sent, kept)  # all but the batches in flight were kept


def test_tune_into_a_database_starts_from_its_records(tmp_path, monkeypatch):
    """tune --db: the trials go into the schedb database, and MetaSchedule's evolutionary
    search asks it for each workload's best records (transferred ones would be among them)."""
    from schedb.ingest import ingest
    from schedb.store import Store
    from schedb.store.tables import Records

    db = tmp_path / "s.db"
    ingest(Store(db), [FIXTURES / "tiny_mlp"])
    before = Store(db).records.count()
    stored = Store(db).query("SELECT COUNT(DISTINCT trace) FROM records WHERE valid = 1")[1][0][0]
    asked = []
    top = Records.top  # what schedb.Database.get_top_k answers MetaSchedule with
    monkeypatch.setattr(Records, "top", lambda self, *a, **kw: asked.append(kw) or top(self, *a, **kw))
    out = tmp_path / "work"
    res = CliRunner().invoke(cli, ["tune", "--model", "tiny_mlp", "--trials-per-task", "4", "--trials-per-iter", "4",
                                   "--db", str(db), "--out", str(out)])
    assert res.exit_code == 0, explain(res)
    store = Store(db)
    new = store.records.count() - before
    assert 8 <= new <= 8 + 4 and not (out / "database_tuning_record.json").exists()
    origins = store.query("SELECT DISTINCT r.origin, m.name FROM records r JOIN models m ON m.id = r.model_id"
                          " WHERE r.id > ?", (before,))[1]
    assert origins == [("tuned", "tiny_mlp")]
    assert asked  # the search drew its start from the database
    assert all(kw.get("distinct") is True for kw in asked)  # k different schedules, not k of one trace
    meta = json.loads((out / "schedb.json").read_text())
    assert meta["database"] == str(db)
    assert meta["cost_model_warm_samples"] == stored  # the cost model learned every stored schedule first
    # Then every task's records and untuned kernel ran side by side, and the winner stands.
    from schedb import extract_tasks, load_model, lower
    from schedb.tir.signature import signature
    from schedb.tir.target import canonical, parse_target

    target = parse_target(None)
    tasks = extract_tasks(lower(load_model("tiny_mlp"), target), target)
    assert meta["choices"]["measured_tasks"] == len(tasks) == len(meta["choices"]["tasks"])
    for task, c in zip(tasks, meta["choices"]["tasks"]):
        standing = store.choices.get(store.workloads.id_of(signature(task.func)[0]), canonical(target))
        assert standing is not None and (standing["record"] or {}).get("id") == c["record_id"]
    # The run is kept: each decided task, and every record it tuned linked to it.
    run = store.runs.get(meta["run_id"])
    assert (run.kind, run.model, run.status) == ("tune", "tiny_mlp", "done")
    assert [(t.task, t.record_id, t.chosen_us) for t in run.tasks] == \
        [(c["task"], c["record_id"], c["chosen_us"]) for c in meta["choices"]["tasks"]]
    assert all(t.source == ("untuned" if t.record_id is None else store.records.get(t.record_id)["origin"])
               and t.untuned_us > 0 for t in run.tasks)
    assert run.records == new


HEAVY_LIGHT = """
from torch import nn

def heavy_light():
    return nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4))

heavy_light.input_shape = (1, 1024)
"""


def test_tuning_by_latency_share_gives_the_heavy_task_the_batches(tmp_path):
    """by_latency: each batch goes to the task with the largest weight x best time so far,
    halved for each batch since it last improved; a kernel 256x the other's work gets
    nearly every batch after the first pass, where round-robin would share them equally."""
    from schedb import load_model, parse_target
    from schedb.pipeline.tune import TuneBudget, tune

    (tmp_path / "hl.py").write_text(HEAVY_LIGHT)
    model = load_model(f"{tmp_path / 'hl.py'}:heavy_light")
    budget = TuneBudget(trials=16, trials_per_task=16, trials_per_iter=2, by_latency=True)
    meta = tune(model, parse_target(None), tmp_path / "work", budget, database=tmp_path / "s.db")
    trials = {t["name"]: s[-1][1] if s else 0 for t, s in zip(meta["tasks"], meta["timeline"]["tasks"])}
    heavy = next(n for n in trials if "relu" in n)
    light = next(n for n in trials if n != heavy)
    assert meta["by_latency"] and sum(trials.values()) >= 14, trials
    assert trials[light] >= 2 and trials[heavy] >= 3 * trials[light], trials  # both tried, the heavy one most


def test_a_budget_is_checked_before_any_tuning(tmp_path):
    from schedb.errors import SchedbError
    from schedb.pipeline.tune import TuneBudget

    with pytest.raises(SchedbError, match="`time_limit` must not be negative"):
        TuneBudget(time_limit=-1)
    assert TuneBudget(trials_per_task=8).resolved(5).trials == 40
    res = CliRunner().invoke(cli, ["tune", "--model", "tiny_mlp", "--trials-per-iter", "0", "--out", str(tmp_path / "w")])
    assert res.exit_code == 1 and "--trials-per-iter must be positive" in res.output
