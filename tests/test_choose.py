"""schedb.pipeline.choose: a task's schedule decided by one side-by-side measurement, which
schedb.Database then serves, the untuned kernel included."""

from __future__ import annotations

import json
import shutil

import pytest

from schedb.pipeline.choose import choose
from schedb.search.measure import Measurement
from schedb.store import Store, dumps
from schedb.store.database import Database
from schedb.store.records import commit_trace
from schedb.tir.replay import as_json
from schedb.tir.signature import signature
from schedb.tir.target import canonical


class FakeEngine:
    """Times by rule, deterministically: ``fast`` picks the kernel that runs in 1 us
    (every other one runs in 5 us); ``None`` in the batch is the untuned kernel."""

    def __init__(self, fast):
        self.fast, self.batches = fast, []

    def measure(self, mods):
        self.batches.append(len(mods))
        return [Measurement([1e-6] * 3 if self.fast(i, m) else [5e-6] * 3) for i, m in enumerate(mods)]


@pytest.fixture(params=["here", "foreign"])
def where(request, target):
    """The CPU the fixture's records claim: this host's, or another's (relabelled by
    construction), so both paths run whatever CPU the suite runs on."""
    from helpers import foreign_target

    return canonical(target) if request.param == "here" else foreign_target()


@pytest.fixture
def db(tiny_db, tmp_path, where):
    from helpers import relabel

    path = tmp_path / "c.db"
    shutil.copy(tiny_db, path)
    relabel(path, where)
    return path


@pytest.fixture(scope="module")
def tasks(lowered, target):
    from schedb.tir.tasks import extract_tasks

    return extract_tasks(lowered, target)


def _top(path, target, task) -> list:
    from tvm.s_tir.meta_schedule.database import Workload

    return Database(path, target=target).get_top_k(Workload(task.func), 1)


def test_untuned_kernel_chosen_over_every_record(db, tasks, target, lowered):
    """When the untuned kernel runs fastest beside the records, the model is built with it:
    the database serves no schedule for that task (a stored record alone always won before)."""
    from schedb.pipeline.evaluate import compile_model

    assert all(_top(db, target, t) for t in tasks)
    engine = FakeEngine(lambda i, m: i == 0)  # the untuned kernel is first in every batch
    chosen = choose(Store(db), tasks, target, engine)
    assert [c.record_id for c in chosen] == [None] * len(tasks)
    assert all(n >= 2 for n in engine.batches)  # measured beside at least one record
    assert not any(_top(db, target, t) for t in tasks)
    assert compile_model(lowered, target, Database(db, target=target)).tuned_tasks == 0


def test_choice_beats_a_record_whose_stored_time_is_lower(db, tasks, target):
    """A record that claims 10 ns (a lucky or wrong measurement) is the lowest stored time,
    but the side-by-side batch decides: the record that ran fastest there is served first."""
    store, tgt, task = Store(db), canonical(target), tasks[0]
    wid = store.workloads.id_of(signature(task.func)[0])
    rows = store.records.contenders(wid, tgt, 2)
    liar = commit_trace(store, wid, signature(task.func)[0], tgt, json.loads(rows[-1]["trace"]), [1e-8], "tuned")
    assert store.records.top(wid, tgt, 1)[0]["id"] == liar
    honest = [r["id"] for r in store.records.contenders(wid, tgt, 2) if r["id"] != liar][0]
    honest_trace = store.records.get(honest)["trace"]

    def fast(i, mod):  # the honest record's schedule is the fast one
        return i > 0 and mod.script() == _replayed(honest_trace, task, target).script()

    chosen = choose(store, [task], target, FakeEngine(fast))
    assert [c.record_id for c in chosen] == [honest]
    (top,) = _top(db, target, task)
    assert _replayed(dumps(as_json(top.trace)), task, target).script() == \
        _replayed(honest_trace, task, target).script()


def test_a_newer_record_voids_the_choice_and_a_standing_one_is_not_remeasured(db, tasks, target, where):
    store, tgt, task = Store(db), canonical(target), tasks[0]
    wid, sig = store.workloads.id_of(signature(task.func)[0]), signature(task.func)[0]
    choose(store, [task], target, FakeEngine(lambda i, m: i == 0))
    engine = FakeEngine(lambda i, m: i == 0)
    assert choose(store, [task], target, engine) == [] and engine.batches == []  # it stands
    trace = json.loads(store.records.contenders(wid, tgt, 1)[0]["trace"])
    # A newer record where the fixture's were tuned (a foreign one contends for this host too):
    new = commit_trace(store, wid, sig, where, trace, [2e-6, 2e-6], "droplet")
    assert store.choices.get(wid, tgt) is None  # a newer record: back to the stored times
    assert _top(db, target, task)  # the untuned verdict no longer hides the records
    assert store.records.top(wid, tgt, 1)[0]["id"] != new  # slower than the fixture's best
    chosen = choose(store, [task], target, FakeEngine(lambda i, m: i == len(store.records.contenders(wid, tgt, 2))))
    assert chosen[0].record_id == store.records.contenders(wid, tgt, 2)[-1]["id"]


def _replayed(trace_text, task, target):
    from schedb.tir.replay import apply_trace

    return apply_trace(json.loads(trace_text), task.func, target).mod


def test_records_of_another_cpu_compete_and_are_served(db, tasks, target):
    """Records tuned on a foreign CPU (relabelled by construction) are contenders here, and
    the one that ran fastest on this host is what the database serves for this host."""
    from helpers import foreign_target, relabel

    relabel(db, foreign_target())
    store, tgt, task = Store(db), canonical(target), tasks[0]
    wid = store.workloads.id_of(signature(task.func)[0])
    rows = store.records.contenders(wid, tgt, 2)
    assert rows and all(r["target"] != tgt for r in rows)
    chosen = choose(store, [task], target, FakeEngine(lambda i, m: i == len(rows)))
    assert chosen[0].record_id == rows[-1]["id"]
    (top,) = _top(db, target, task)
    assert _replayed(dumps(as_json(top.trace)), task, target).script() == \
        _replayed(rows[-1]["trace"], task, target).script()


@pytest.fixture
def chosen(db, tasks, target):
    """tiny_cnn's database with a standing choice per task: the untuned kernel everywhere."""
    choose(Store(db), tasks, target, FakeEngine(lambda i, m: i == 0))
    return db


def test_a_merge_carries_the_choices_that_still_hold(chosen, tiny_db, tasks, target, tmp_path, where):
    """Choices travel with the records they were made among: merged into an empty database
    they still decide what is served; where the receiving database holds a record that the
    measurement never met, that workload's choice stays behind and its records are served."""
    from schedb.ingest import ingest

    rep = ingest(Store(tmp_path / "empty.db"), [chosen])
    assert rep.errors == [] and rep.choices == len(tasks)
    assert not any(_top(tmp_path / "empty.db", target, t) for t in tasks)

    from helpers import relabel

    other = tmp_path / "other.db"
    shutil.copy(tiny_db, other)
    relabel(other, where)
    store = Store(other)
    best = store.records.best(store.workloads.id_of(signature(tasks[0].func)[0]))
    with store.transaction():  # a record of the first task that the choice never measured
        store.records.add(**{k: best[k] for k in ("workload_id", "target", "format", "trace", "origin")},
                         run_secs="[9e-06]", mean_s=9e-6, valid=1, digest=b"n" * 16)
    rep = ingest(store, [chosen])
    assert rep.errors == [] and rep.choices == len(tasks) - 1
    assert _top(other, target, tasks[0])
    assert not any(_top(other, target, t) for t in tasks[1:])


def test_a_damaged_choice_is_skipped_and_the_rest_merged(chosen, tasks, tmp_path):
    """A choice that does not parse is named in a warning; the file's records and its other
    choices still come in."""
    import sqlite3

    from schedb.ingest import ingest

    with sqlite3.connect(chosen) as conn:
        bad = conn.execute("SELECT workload_id FROM choices ORDER BY workload_id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE choices SET contenders = '[{' WHERE workload_id = ?", (bad,))
        records = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    rep = ingest(Store(tmp_path / "b.db"), [chosen])
    assert rep.errors == [] and rep.new_records == records and rep.choices == len(tasks) - 1
    assert rep.skipped_lines == 1 and rep.rejected
    assert rep.warnings == [f"{chosen}:choice of workload {bad}: skipped: malformed (JSONDecodeError)"]
