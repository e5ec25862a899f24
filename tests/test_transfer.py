"""Transfer, the index and the measurement engine, on the tiny fixtures (real TVM runs)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import explain, foreign_target, relabel

from schedb_cli.main import cli
from schedb.search.index import Index, features
from schedb.ingest import ingest
from schedb.search.measure import Engine
from schedb.models import load_model
from schedb.tir.replay import apply_trace
from schedb.tir.signature import signature
from schedb.store import Store
from schedb.tir.target import canonical, load_intrinsics, parse_target
from schedb.tir.tasks import extract_tasks, lower
from schedb.pipeline.evaluate import SLOW_ROUNDS, SLOW_X
from schedb.pipeline.transfer import Options, Transfer, paced, transfer

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def target():
    t = parse_target(None)
    load_intrinsics(t)
    return t


@pytest.fixture(scope="module")
def source_db(tmp_path_factory):
    """A database holding the tiny_cnn fixture (the source model), every record labelled
    for another CPU than this host's: every transfer test sees only foreign records."""
    path = tmp_path_factory.mktemp("db") / "src.db"
    report = ingest(Store(path), [FIXTURES / "tiny_cnn"])
    assert not report.rejected and report.new_records > 0
    relabel(path, foreign_target())
    return path


class MeasureLog:
    """Every Engine.measure call of a transfer, by task: transfer reports a task through
    ``progress`` when its search is over, so the calls made since then are that task's."""

    def __init__(self):
        self.pending, self.by_task = [], {}

    def progress(self, done, total, result):
        self.by_task[result.task], self.pending = self.pending, []


@pytest.fixture
def measure_log(monkeypatch) -> MeasureLog:
    log, measure = MeasureLog(), Engine.measure

    def logged(engine, mods):
        out = measure(engine, mods)
        log.pending.append(out)
        return out

    monkeypatch.setattr(Engine, "measure", logged)
    return log


def assert_transfer_invariants(store, model, rep, target, log: MeasureLog):
    """What a user relies on, per task, checked against what was measured (``log``) and stored.
    Each measurement is [untuned kernel, *candidates], one batch, the same load on all:
    - a task with a schedule won it in its last batch: the fastest candidate there, faster than
      the untuned kernel beside it, and those are the times reported;
    - no earlier batch of the task, and none of a task left untuned, had a candidate faster
      than its untuned kernel (the acceptance rule: untuned stays unless beaten);
    - the winner is committed for the task's own workload, with the samples it won with, and
      its stored trace applies to the task;
    - the verdict is the task's standing choice, so the database builds this model;
    - every compiled variant computes what the framework computes."""
    tasks = {t.name: t for t in extract_tasks(lower(model, target), target)}
    for r in rep.tasks:
        batches = log.by_task[r.task]
        assert batches and all(b[0].ok for b in batches), r.task  # the untuned kernel is always measured
        assert r.untuned_us in [b[0].mean * 1e6 for b in batches]
        lost = batches if r.source == "untuned" else batches[:-1]
        assert all(m.mean >= b[0].mean for b in lost for m in b[1:]), r.task  # failed: mean inf
        choice = store.choices.get(r.workload_id, canonical(target))
        if r.source == "untuned":
            assert choice is None or choice["record"] is None, r.task
            assert r.record_id is None and r.transferred_us is None and r.reason
            continue
        untuned, *candidates = batches[-1]
        best = min(candidates, key=lambda m: m.mean)
        assert (r.transferred_us, r.untuned_us) == (best.mean * 1e6, untuned.mean * 1e6)
        assert best.mean < untuned.mean
        row = store.records.get(r.record_id)
        assert row["workload_id"] == r.workload_id and row["valid"] == 1
        assert choice["record"]["id"] == (r.refined_record_id or r.record_id), r.task
        assert row["origin"] == ("tuned" if r.source == "searched" else "transferred")
        assert json.loads(row["run_secs"]) == best.samples
        assert store.workloads.get(r.workload_id)["signature"] == signature(tasks[r.task].func)[0]
        assert apply_trace(json.loads(row["trace"]), tasks[r.task].func, target).ok, r.task
    assert rep.check and all(c["max_abs_err"] < 1e-3 for c in rep.check.values())


def test_features_separate_shapes_and_scale_by_ratio(target):
    tasks = extract_tasks(lower(load_model("tiny_cnn"), target), target)
    convs = [signature(t.func)[2] for t in tasks if "conv2d" in t.name]
    a, b = features(convs[0]), features(convs[1])
    assert a.shape == b.shape and (a != b).any()
    assert (features(convs[0]) == a).all()  # deterministic


def test_index_finds_same_kind_nearest_first(source_db, target):
    store = Store(source_db)
    index = Index().fit(store.workloads.tuned(canonical(target)))
    assert len(index) > 0
    wide = extract_tasks(lower(load_model("tiny_cnn_wide"), target), target)
    conv = next(t for t in wide if "conv2d" in t.name)
    sig, kind, desc = signature(conv.func)
    found = index.neighbors(desc, kind, k=5)
    assert found and all(n.kind == kind for n in found)
    assert [n.distance for n in found] == sorted(n.distance for n in found)
    assert all(n.models == ["tiny_cnn"] and n.target == foreign_target() for n in found)
    assert len(Index().fit(store.workloads.tuned(canonical(target), max_distance=0))) == 0  # strict: no record of this CPU
    # Excluding the only source model leaves nothing to transfer from.
    assert Index(exclude=["tiny_cnn"]).fit(store.workloads.tuned(canonical(target))).neighbors(desc, kind) == []


def test_tuned_workloads_name_their_closest_target_and_every_model(source_db, target, tmp_path):
    """store.workloads.tuned: per workload with valid MetaSchedule records of the target's
    kind, the closest target among them (its distance), the models of those records; a
    failed record's target does not count, and ``max_distance`` leaves out the rest."""
    import sqlite3

    path = tmp_path / "db.db"
    with sqlite3.connect(source_db) as src, sqlite3.connect(path) as dst:
        src.backup(dst)  # (its WAL included)
    here = canonical(target)
    with sqlite3.connect(path) as conn:
        wids = [w for (w,) in conn.execute("SELECT DISTINCT workload_id FROM records WHERE valid = 1 ORDER BY 1")]
        near, failed = [w for (w,) in conn.execute(  # one gets a valid record of this CPU, one a failed one
            "SELECT workload_id FROM records WHERE valid = 1 GROUP BY 1 HAVING COUNT(*) > 1 ORDER BY 1 LIMIT 2")]
        other = conn.execute("INSERT INTO models (name, created_at) VALUES ('other', '')").lastrowid
        conn.execute("UPDATE records SET target = ?, model_id = ? WHERE id = (SELECT MIN(id) FROM records "
                     "WHERE workload_id = ? AND valid = 1)", (here, other, near))
        conn.execute("UPDATE records SET target = ?, valid = 0 WHERE id = (SELECT MIN(id) FROM records "
                     "WHERE workload_id = ? AND valid = 1)", (here, failed))
    rows = {r["id"]: r for r in Store(path, readonly=True).workloads.tuned(here)}
    assert sorted(rows) == wids
    assert (rows[near]["target"], rows[near]["target_distance"], rows[near]["models"]) == (here, 0, "other,tiny_cnn")
    assert rows[failed]["target"] == foreign_target() and rows[failed]["target_distance"] > 0
    assert rows[failed]["models"] == "tiny_cnn"
    assert [r["id"] for r in Store(path, readonly=True).workloads.tuned(here, max_distance=0)] == [near]


def test_transfer_to_new_shapes_is_never_slower_than_untuned(source_db, target, tmp_path, measure_log):
    db = tmp_path / "t.db"
    Store(db)
    ingest(Store(db), [source_db])  # merge: the source stays untouched
    store = Store(db)
    model = load_model("tiny_cnn_wide")
    rep = transfer(store, model, target, Options(k=2, e2e_repeat=5), progress=measure_log.progress)
    assert_transfer_invariants(store, model, rep, target, measure_log)
    n_tasks = len(extract_tasks(lower(load_model("tiny_cnn_wide"), target), target))
    assert len(rep.tasks) == n_tasks
    by_source = {r.source for r in rep.tasks}
    assert "neighbor" in by_source  # shapes differ: no exact matches
    assert "exact" not in by_source
    assert len(rep.notes) == 1 and "no schedules for" in rep.notes[0] and "used as candidates" in rep.notes[0]
    for r in rep.tasks:
        if r.source == "untuned":
            assert r.reason  # every untuned task says why
        else:
            # Committed with provenance back to the tiny_cnn fixture's log line.
            chain = store.records.lineage(r.record_id)
            assert [c["origin"] for c in chain] == ["transferred", "tuned"]
            assert chain[1]["model"] == "tiny_cnn"
            assert chain[1]["file"].endswith("database_tuning_record.json.gz") and chain[1]["line"] >= 1
            assert chain[0]["source_workload_id"] == chain[1]["workload_id"]
            # Measured and committed for this CPU; its parent keeps the CPU it was tuned for.
            assert chain[0]["target"] == canonical(target) and chain[1]["target"] == r.source_target
            assert r.source_target == foreign_target()
    conv = [r for r in rep.tasks if "conv2d" in r.task]
    assert any(r.source == "neighbor" for r in conv)  # the schedules that matter do transfer
    assert rep.check["transferred"]["kernels_scheduled"] == sum(r.source != "untuned" for r in rep.tasks)
    assert rep.check["untuned"]["kernels_scheduled"] == 0
    # Every variant and PyTorch timed in the same 5 rounds; the untuned model in the first 3
    # only when it measured over SLOW_X times slower than the transferred one there.
    counts = {k: len(v["samples_ms"]) for k, v in rep.e2e.items()}
    assert counts == {"untuned": counts["untuned"], "transferred": 5, "pytorch": 5}
    first = {k: statistics.median(rep.e2e[k]["samples_ms"][:SLOW_ROUNDS]) for k in ("untuned", "transferred")}
    far_slower = first["untuned"] > SLOW_X * first["transferred"]
    assert counts["untuned"] == (SLOW_ROUNDS if far_slower else 5), (counts, first)
    # The new model and its tasks are in the database now.
    assert store.conn.execute(
        "SELECT COUNT(*) FROM model_tasks t JOIN models m ON m.id = t.model_id WHERE m.name = 'tiny_cnn_wide'"
    ).fetchone()[0] == n_tasks


def test_exact_matches_reuse_and_exclude_model(source_db, target, tmp_path, measure_log):
    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    store = Store(db)
    # Strict matching finds nothing: every record is another CPU's (and says so). No
    # sampled fallback here (search_trials=0): these runs are about what matches.
    strict = transfer(store, load_model("tiny_cnn"), target,
                      Options(same_target_only=True, search_trials=0, e2e_repeat=3))
    assert {r.source for r in strict.tasks} == {"untuned"}
    assert "ignored (`same_target_only`)" in strict.notes[0]
    assert all("`same_target_only`" in r.reason for r in strict.tasks)
    model = load_model("tiny_cnn")
    measure_log.pending.clear()  # the strict run's batches
    same = transfer(store, model, target, Options(e2e_repeat=3), progress=measure_log.progress)
    assert_transfer_invariants(store, model, same, target, measure_log)
    assert any(r.source == "exact" for r in same.tasks)
    assert all(r.distance == 0 for r in same.tasks if r.source == "exact")
    excluded = transfer(store, load_model("tiny_cnn"), target,
                        Options(exclude=["tiny_cnn"], search_trials=0, e2e_repeat=3))
    assert {r.source for r in excluded.tasks} == {"untuned"}
    assert all("no tuned workload" in r.reason for r in excluded.tasks)


def test_the_database_serves_what_transfer_chose(source_db, target, tmp_path, monkeypatch):
    """Where the untuned kernel beat a task's own records, schedb.Database serves none of
    them afterwards, as transfer built the model. By construction: the untuned kernel,
    first in every batch, is timed at a thousandth of its samples, so it wins every task."""
    from tvm.s_tir.meta_schedule.database import Workload

    from schedb.search.measure import Measurement
    from schedb.store.database import Database

    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    measure = Engine.measure

    def untuned_fastest(engine, mods):
        out = measure(engine, mods)
        if len(mods) > 1 and out[0].ok:
            out[0] = Measurement([s / 1000 for s in out[0].samples])
        return out

    monkeypatch.setattr(Engine, "measure", untuned_fastest)
    model = load_model("tiny_cnn")
    rep = transfer(Store(db), model, target, Options(search_trials=0, e2e_repeat=0))
    store, database = Store(db), Database(db, target)
    assert all(r.source == "untuned" for r in rep.tasks), [(r.task, r.source, r.reason) for r in rep.tasks]
    own = {r.task: r for r in rep.tasks if store.records.top(r.workload_id, canonical(target), 1)}
    assert own and all(r.reason.startswith("untuned kernel fastest") for r in own.values())
    for task in extract_tasks(lower(model, target), target):
        if task.name in own:  # its records lost to the untuned kernel
            assert store.choices.get(own[task.name].workload_id, canonical(target)) == {"record": None}
            assert database.get_top_k(Workload(task.func), 1) == [], task.name


def test_tasks_nothing_transfers_to_get_a_short_metaschedule_search(target, tmp_path, measure_log):
    """An empty database: no candidates anywhere, so every task samples a few schedules from
    MetaSchedule's design space; a winner is committed as tuned here, never slower than untuned."""
    store = Store(tmp_path / "empty.db")
    model = load_model("tiny_mlp")
    rep = transfer(store, model, target, Options(search_trials=4, e2e_repeat=3), progress=measure_log.progress)
    assert_transfer_invariants(store, model, rep, target, measure_log)
    searched = [r for r in rep.tasks if r.source == "searched"]
    assert any("matmul" in r.task for r in searched)  # the default matmul is never the fastest
    for r in rep.tasks:
        assert r.searched == 4 and r.candidates == 0
        if r.source != "searched":
            assert r.source == "untuned" and "sampled schedules no faster" in r.reason
    assert rep.check["transferred"]["kernels_scheduled"] == len(searched)
    none = transfer(store, load_model("tiny_mlp"), target, Options(search_trials=0, e2e_repeat=3))
    assert {r.source for r in none.tasks} <= {"exact", "untuned"}  # exact: what the first run stored


def test_a_time_budget_is_spread_over_every_task():
    """Under a budget a task measures as many candidates as its share of the time left pays
    for (the untuned kernel counted), never none; without a budget or a cost yet, all."""
    assert paced(6, None, 10, 0.5) == 6 and paced(6, 30.0, 10, None) == 6
    assert paced(6, 100.0, 10, 0.5) == 6  # 10 s a task pays for 20 modules
    assert paced(6, 20.0, 10, 0.5) == 3  # 2 s a task: the untuned kernel and 3 candidates
    assert paced(6, 1.0, 10, 0.5) == 1  # short of one: still the nearest candidate
    assert paced(0, 20.0, 10, 0.5) == 0


def test_sampled_schedules_are_distinct(target):
    """A kernel whose design space has no decisions (a reshape) gives one schedule however
    many are asked for: n copies would each cost a build and a run, all alike."""
    import tvm_ffi

    from schedb.search.sample import sample_schedules

    tasks = {t.name: t.func for t in extract_tasks(lower(load_model("tiny_cnn"), target), target)}
    assert len(sample_schedules(tasks["reshape"], target, 6)) == 1
    conv = sample_schedules(tasks["fused_conv2d_add_relu"], target, 6)
    assert len({tvm_ffi.structural_hash(s.mod) for s in conv}) == len(conv) > 1


def test_anchor_is_the_main_reduction_block(target):
    from schedb.tir.anchor import anchor_of

    tasks = {t.name: signature(t.func)[2] for t in extract_tasks(lower(load_model("tiny_cnn"), target), target)}
    anchors = {name: anchor_of(desc) for name, desc in tasks.items()}
    assert anchors["fused_conv2d_add_relu"] == anchors["fused_conv2d1_add1_relu1"] == "conv2d_nchw:SSSSRRR"
    assert anchors["fused_matmul_add2"] == "matmul:SSR"
    assert anchors["reshape"] is None  # no reduction: no anchor fallback


def test_anchor_fallback_transfers_across_epilogues(source_db, target, tmp_path, measure_log):
    # tiny_cnn has matmul + bias only; tiny_mlp's first layer is matmul + bias + ReLU,
    # a kind no source has: its schedule comes from the matmul + bias one, retargeted.
    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    store = Store(db)
    model = load_model("tiny_mlp")
    rep = transfer(store, model, target, Options(k=2, e2e_repeat=3), progress=measure_log.progress)
    assert_transfer_invariants(store, model, rep, target, measure_log)
    by_task = {r.task: r for r in rep.tasks}
    relu, plain = by_task["fused_matmul_add_relu"], by_task["fused_matmul1_add1"]
    assert plain.source == "neighbor"  # a workload of its own kind exists: no fallback
    assert relu.candidates > 0 and relu.failed == 0  # every retargeted trace replays
    assert relu.source == "anchor", relu.reason
    src = store.workloads.get(relu.source_workload_id)
    assert src["kind"] == "matmul+T_add" != store.workloads.get(relu.workload_id)["kind"]
    # From tiny_cnn's record, or from the one the plain layer just got from it: the
    # chain ends at tiny_cnn's tuned record either way.
    chain = store.records.lineage(relu.record_id)
    assert chain[0]["origin"] == "transferred" and chain[-1]["origin"] == "tuned"
    assert chain[-1]["model"] == "tiny_cnn" and relu.source_model in ("tiny_cnn", "tiny_mlp")
    # The anchor kernel is in the model, whose output the invariants checked.
    assert rep.check["transferred"]["kernels_scheduled"] == sum(r.source != "untuned" for r in rep.tasks)


def test_search_wall_time_ends_at_the_final_compile_and_the_timing_is_apart(source_db, target, tmp_path):
    """search_wall_s runs from the search's clock (Transfer.t_begin) to the end of the final
    model's compile, e2e_wall_s holds the timing after it: checked against when each phase
    started and ended (orderings, no tolerance needed)."""
    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    store, model = Store(db), load_model("tiny_mlp")
    at = {}  # (phase, "start" | "end") -> perf_counter

    def on_phase(name, event, seconds):
        at[name, event] = time.perf_counter()

    search = Transfer(store, model, target, Options(k=1, search_trials=0, e2e_repeat=3), on_phase)
    rep = search.run()
    returned = time.perf_counter()
    search_end = search.t_begin + rep.search_wall_s
    assert search.t_begin <= at["lowering", "start"]
    assert at["compiling transferred", "end"] <= search_end <= at["compiling untuned", "start"]
    timing = next(name for name, _ in at if name.startswith("timing "))
    assert at[timing, "end"] - at["compiling untuned", "start"] <= rep.e2e_wall_s <= returned - search_end
    assert rep.search_time_s <= rep.search_wall_s
    # Without the timing: the model the user gets is still compiled and checked, nothing else.
    at.clear()
    quick = transfer(store, model, target, Options(k=1, search_trials=0, e2e_repeat=0), on_phase=on_phase)
    assert quick.e2e == {} and quick.e2e_wall_s is None and quick.load_average == {}
    assert list(quick.check) == ["transferred"]
    assert quick.check["transferred"]["kernels_scheduled"] == sum(r.source != "untuned" for r in quick.tasks) > 0
    assert {name for name, _ in at if name.startswith(("compiling", "timing"))} == {"compiling transferred"}


def test_transfer_cli_report(source_db, tmp_path):
    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["transfer", "--model", "tiny_cnn_wide", "--db", str(db), "-k", "1",
                                   "--trials", "6", "--report", str(out)])
    assert res.exit_code == 0, explain(res)
    assert "speed-up over untuned" in res.output
    assert "note: the database holds no schedules for" in res.output
    rep = json.loads(out.read_text())
    assert rep["measured"] <= 6  # the budget caps candidates (untuned baselines are not charged)
    assert rep["search_wall_s"] >= rep["search_time_s"] > 0 and rep["e2e_wall_s"] > 0
    assert f"search {rep['search_wall_s']:.1f} s wall" in res.output
    assert f"end-to-end timing {rep['e2e_wall_s']:.1f} s" in res.output
    assert {"untuned", "transferred"} <= set(rep["e2e"])
    # PyTorch timed in the same rounds as the compiled variants; the load around it recorded.
    assert len(rep["e2e"]["pytorch"]["samples_ms"]) == len(rep["e2e"]["untuned"]["samples_ms"]) == 10
    assert all(len(rep["load_average"][k]) == 3 for k in ("before", "after"))
    assert "load average (1 min)" in res.output
    for name in ("loading TVM and PyTorch", "importing the model", "lowering", "extracting tasks", "building the index",
                 "searching 4 tasks", "compiling untuned", "compiling transferred",
                 "timing untuned, transferred, pytorch interleaved, 10 rounds"):
        assert f"] {name} ...\n" in res.output and f"] {name}: done in " in res.output, res.output
    # Not wrapped at 80 columns in a log: the note is one line.
    assert any(x.startswith("note: the database holds no schedules for") and x.endswith("and measured here")
               for x in res.output.splitlines()), res.output


def test_transfer_with_droplet_keeps_only_significant_refinements(source_db, tmp_path):
    """transfer --droplet: one budget of --droplet-trials per task on average, spent by
    weight x kernel time; the report says per task what was spent and gained, and a
    refinement is committed exactly when it was accepted at p <= 0.05."""
    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["transfer", "--model", "tiny_cnn", "--db", str(db), "-k", "1", "--droplet",
                                   "--droplet-trials", "6", "--e2e-repeat", "0", "--report", str(out)])
    assert res.exit_code == 0, explain(res)
    assert "droplet trials" in res.output and "end-to-end timing skipped (--e2e-repeat 0)" in res.output
    rep = json.loads(out.read_text())
    found = [t for t in rep["tasks"] if t["transferred_us"] is not None]
    searched = [t for t in found if t["refined_accepted"] is not None]
    assert searched and sum(t["droplet_trials"] for t in found) <= 6 * len(found)
    # The budget went first to the task holding the most time (weight x kernel time).
    heaviest = max(found, key=lambda t: t["weight"] * t["transferred_us"])
    assert heaviest["droplet_trials"] == max(t["droplet_trials"] for t in found) > 0
    store = Store(db)
    for t in searched:
        assert store.choices.get(t["workload_id"], rep["target"])["record"]["id"] == (t["refined_record_id"]
                                                                                  or t["record_id"])
        assert t["refined_accepted"] == (t["refined_record_id"] is not None)
        if t["refined_accepted"]:
            assert t["refined_pvalue"] <= 0.05 and t["droplet_speedup"] > 1
            assert store.records.get(t["refined_record_id"])["parent_id"] == t["record_id"]
        else:
            assert t["droplet_speedup"] == 1.0 and t["refined_us"] == t["transferred_us"]
    committed = store.conn.execute("SELECT COUNT(*) FROM records WHERE origin = 'droplet'").fetchone()[0]
    assert committed == sum(t["refined_accepted"] for t in searched)
    # Not timed: only the refined model, the one the user gets, compiled (and checked).
    assert rep["e2e"] == {} and rep["e2e_wall_s"] is None and list(rep["check"]) == ["refined"]
    assert rep["check"]["refined"]["kernels_scheduled"] == len(found)
    assert 0 < rep["droplet_wall_s"] < rep["search_time_s"] and "droplet alone" in res.output


def test_droplet_share_caps_droplet_time_by_the_search_before_it(source_db, tmp_path):
    """--droplet-share 0: droplet may spend no time at all, whatever its trial budget."""
    db = tmp_path / "t.db"
    ingest(Store(db), [source_db])
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["transfer", "--model", "tiny_cnn", "--db", str(db), "-k", "1", "--droplet",
                                   "--droplet-trials", "6", "--droplet-share", "0", "--e2e-repeat", "0",
                                   "--report", str(out)])
    assert res.exit_code == 0, explain(res)
    rep = json.loads(out.read_text())
    assert any(t["transferred_us"] is not None for t in rep["tasks"])
    assert all(t["droplet_trials"] == 0 and t["refined_accepted"] is None for t in rep["tasks"])
    assert Store(db).conn.execute("SELECT COUNT(*) FROM records WHERE origin = 'droplet'").fetchone()[0] == 0


def test_droplet_cli_spends_one_budget_and_commits_only_accepted(source_db, tmp_path):
    db = tmp_path / "d.db"
    ingest(Store(db), [source_db])
    res = CliRunner().invoke(cli, ["droplet", "--model", "tiny_cnn", "--db", str(db), "--trials", "6"])
    assert res.exit_code == 0, explain(res)
    store = Store(db)
    n = len(store.models.task_weights(store.models.id_of("tiny_cnn")))
    assert all(col in res.output for col in ("weight", "gain", "trials", "accepted"))
    summary = res.output.strip().splitlines()[-1]
    improved, total = int(summary.split()[0]), int(summary.split()[2])
    spent = int(summary.split("; ")[1].split()[0])
    assert 0 < total <= n and spent <= 6 * n and summary.endswith(f"trials of {6 * n}")
    rows = store.conn.execute("SELECT r.parent_id, r.mean_s, p.origin FROM records r"
                              " JOIN records p ON p.id = r.parent_id WHERE r.origin = 'droplet'").fetchall()
    assert len(rows) == improved  # committed exactly when accepted, as a child of the start record
    assert all(origin == "tuned" for _, _, origin in rows)
    (run,) = store.runs.list(kind="droplet")
    run = store.runs.get(run.id)
    assert (run.model, run.status, run.options["trials"], run.records) == ("tiny_cnn", "done", 6, improved)
    assert sum(t.source == "droplet" for t in run.tasks) == improved and len(run.tasks) == total


HANG = """
from tvm.script import tirx as T
@T.prim_func(s_tir=True)
def main(A: T.Buffer((1,), "float32")):
    for i in range(T.int64(1) << T.int64(40)):
        with T.sblock("spin"):
            A[0] = A[0] * T.float32(1.0000001)
"""


def test_engine_survives_a_hanging_candidate(target, tmp_path):
    import importlib.util

    import tvm

    # TVMScript reads the function's source file, so the kernel lives in one.
    (tmp_path / "hang_kernel.py").write_text(HANG)
    spec = importlib.util.spec_from_file_location("hang_kernel", tmp_path / "hang_kernel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hang = tvm.IRModule({"main": module.main})
    good = extract_tasks(lower(load_model("tiny_mlp"), target), target)[0].func
    engine = Engine(target, repeat=3, run_timeout=3)
    t0 = time.perf_counter()
    out = engine.measure([good, hang, good])
    assert out[0].ok and len(out[0].samples) == 3
    assert not out[1].ok and out[1].error
    assert out[2].ok
    assert time.perf_counter() - t0 < 60
    again = engine.measure([good])  # the engine is still usable afterwards
    assert again[0].ok


def test_engine_over_rpc_tracker(cluster, target):
    cluster.server("schedb-test")
    good = extract_tasks(lower(load_model("tiny_mlp"), target), target)[0].func
    engine = Engine(target, runner=cluster.runner("schedb-test"), repeat=3, run_timeout=60)
    out = engine.measure([good])
    assert out[0].ok, out[0].error
    assert len(out[0].samples) == 3
