"""schedb.pipeline.fast: one step from a database to the fastest model a time budget buys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schedb.errors import SchedbError
from schedb.pipeline.fast import FastOptions, heaviest
from schedb.pipeline.transfer import TaskResult

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _task(name, weight, untuned=None, transferred=None, refined=None):
    return TaskResult(name, weight, 0, "neighbor", untuned_us=untuned, transferred_us=transferred,
                      refined_us=refined)


def test_the_heaviest_tasks_cover_the_latency_share():
    tasks = [_task("a", 1, 100, 50), _task("b", 2, 100, 40, 30), _task("c", 1, 10), _task("d", 5, None)]
    # weight x chosen kernel time: a 50, b 60 (refined), c 10; d has none and is left out.
    assert heaviest(tasks, 0.5) == ["b"]
    assert heaviest(tasks, 0.8) == ["b", "a"]
    assert heaviest(tasks, 1.0) == ["b", "a", "c"]


def test_options_are_checked():
    with pytest.raises(SchedbError, match="`budget_s` must be positive"):
        FastOptions(budget_s=0)
    with pytest.raises(SchedbError, match="`latency_share` must lie in"):
        FastOptions(budget_s=60, latency_share=1.5)


@pytest.mark.slow
def test_fast_transfers_tunes_the_heaviest_and_builds_from_the_choices(tmp_path, target, monkeypatch):
    from schedb.ingest import ingest
    from schedb.models import load_model
    from schedb.pipeline import fast as fast_mod
    from schedb.store import Store

    monkeypatch.setattr(fast_mod, "FINAL_S", 5.0)  # a tiny model compiles and times in seconds
    monkeypatch.setattr(fast_mod, "MIN_TUNE_S", 5.0)
    store = Store(tmp_path / "f.db")
    ingest(store, [FIXTURES / "tiny_mlp", FIXTURES / "tiny_cnn"])
    tuned_before = store.query("SELECT COUNT(*) FROM records WHERE origin = 'tuned'")[1][0][0]
    rep = fast_mod.fast(store, load_model("tiny_cnn"), target, FastOptions(budget_s=60, e2e_repeat=3))
    assert rep.tuned_tasks and rep.wall_s < 60 + 30  # the budget, give or take the batch in flight
    assert rep.e2e["final"]["median_ms"] > 0 and rep.e2e["pytorch"] is not None
    tuned_after = store.query("SELECT COUNT(*) FROM records WHERE origin = 'tuned'")[1][0][0]
    assert tuned_after > tuned_before  # MetaSchedule's trials went into the database
    chosen = store.query("SELECT COUNT(*) FROM choices")[1][0][0]
    assert chosen >= len(rep.tuned_tasks)  # each tuned task decided side by side
    json.dumps(rep.as_dict())  # the report is plain data
    # One fast run, with its transfer and tuning as its children; the tuned tasks as tuning decided them.
    run = store.runs.get(rep.run_id)
    children = store.runs.list(parent=rep.run_id)
    assert run.status == "done" and run.tvm_ms == rep.e2e["final"]["median_ms"] and run.pytorch_ms > 0
    assert sorted(c.kind for c in children) == ["transfer", "tune"] and all(c.status == "done" for c in children)
    tune_run = store.runs.get(next(c.id for c in children if c.kind == "tune"))
    by_task = {t.task: t for t in run.tasks}
    assert len(run.tasks) == len(rep.transfer.tasks) and all(by_task[t.task] == t for t in tune_run.tasks)


@pytest.mark.parametrize("flag, by_latency", [([], False), (["--by-latency"], True)])
def test_the_cli_tunes_in_turn_unless_told_by_latency_share(tmp_path, monkeypatch, flag, by_latency):
    from click.testing import CliRunner

    from schedb.pipeline import fast as fast_mod
    from schedb_cli.main import cli

    seen = []

    def record(store, model, target, opts, *rest):
        seen.append(opts)
        raise SchedbError("stopped by the test")

    monkeypatch.setattr(fast_mod, "fast", record)
    result = CliRunner().invoke(cli, ["fast", "-m", "tiny_mlp", "--budget", "1m", "--db", str(tmp_path / "f.db"), *flag])
    assert result.exit_code != 0 and "stopped by the test" in result.output, result.output
    assert [o.by_latency for o in seen] == [by_latency]
