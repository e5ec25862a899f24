"""Schedules across vector units, by construction on this machine: tiny_cnn's fixture (tuned
for AVX-512, 16 lanes, 32 registers) adapted to an AVX2 target (``llvm -mcpu=haswell``: 8
lanes, 16 registers, which an AVX-512 CPU also runs) and back; the adapted traces replay on
the task, build for that target and compute what PyTorch computes."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from schedb.tir.isa import adapt, tilings
from schedb.tir.replay import apply_trace, decision_points
from schedb.tir.target import VectorUnit, canonical, parse_target, vector_unit

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tiny_cnn"
AVX512, AVX2 = VectorUnit("avx512", 16, 32), VectorUnit("avx2", 8, 16)
HASWELL = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}
ROCKETLAKE = {"kind": "llvm", "mcpu": "rocketlake", "num-cores": 2}


def _unit(spec) -> VectorUnit | None:
    return vector_unit(canonical(parse_target(spec)))


def test_vector_unit_comes_from_the_cpu_and_its_attributes():
    assert _unit(ROCKETLAKE) == AVX512
    assert _unit(HASWELL) == AVX2
    assert _unit("llvm -mcpu=rocketlake -mattr=-avx512f") == AVX2  # -mattr takes features away
    assert _unit("llvm -mcpu=haswell -mattr=+avx512f") == AVX512
    assert _unit({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}).isa == "neon"
    assert _unit("cuda") is None


def _wide_record() -> list:
    """A fixture trace of tiny_cnn's second convolution whose vectorized tile is one
    16-lane vector ([1, 1, 1, 16] over the output width) with a 4-row register tile."""
    for line in gzip.open(FIXTURE / "database_tuning_record.json.gz", "rt"):
        trace = json.loads(line)[1][0]
        for t in tilings(trace)[0]:
            tiles = {p.index: p.decision for p in decision_points(trace)}
            if tiles[t.vector] == [1, 1, 1, 16] and any(tiles[i][-1] == 4 for i in t.spatial):
                return trace
    raise AssertionError("the fixture has no such record")


def test_a_16_lane_trace_is_adapted_to_8_lanes_and_back():
    trace = _wide_record()
    (tiling,), _ = tilings(trace)
    before = {p.index: p.decision for p in decision_points(trace)}
    down = adapt(trace, AVX512, AVX2)
    after = {p.index: p.decision for p in decision_points(down.trace)}
    assert before[tiling.vector] == [1, 1, 1, 16] and after[tiling.vector] == [1, 1, 2, 8]  # one ymm, not two
    for i in tiling.spatial:  # every tile still multiplies to its extent
        assert math.prod(after[i]) == math.prod(before[i])
    # The accumulators: 4 x 16 = 4 zmm of 32 before; 16 ymm would be all there are; now 2 of 16.
    acc = [math.prod(d[i][-1] for i in tiling.spatial) for d in (before, after)]
    assert acc == [64, 16]
    assert set(down.changes) <= set(before) and down.changed
    up = adapt(down.trace, AVX2, AVX512)
    assert {p.index: p.decision for p in decision_points(up.trace)}[tiling.vector] == [1, 1, 1, 16]
    assert adapt(trace, AVX512, AVX512).changes == {}  # the same unit: nothing to adapt


def test_unroll_follows_the_register_file():
    from schedb.tir.isa import unroll_step

    steps = [0, 16, 64, 512]
    assert [unroll_step(i, steps, 0.5) for i in range(4)] == [0, 1, 1, 2]  # 512 -> 64, 64 -> 16, 16 stays
    assert [unroll_step(i, steps, 2) for i in range(4)] == [0, 2, 3, 3]


def test_a_trace_without_multi_level_tiling_is_left_alone():
    for line in gzip.open(FIXTURE / "database_tuning_record.json.gz", "rt"):
        trace = json.loads(line)[1][0]
        if not tilings(trace)[0] and not tilings(trace)[1]:
            assert adapt(trace, AVX512, AVX2).changes == {}
            return
    pytest.skip("every fixture trace is tiled")


@pytest.mark.slow
@pytest.mark.parametrize("spec,src,dst", [(HASWELL, AVX512, AVX2), (ROCKETLAKE, AVX2, AVX512)],
                         ids=["to-avx2", "back-to-avx512"])
def test_adapted_trace_replays_builds_and_matches_pytorch(spec, src, dst):
    """The whole model built for the target with the adapted kernel, checked against
    PyTorch's output by compile_model (to 1e-3)."""
    from schedb.models import load_model
    from schedb.pipeline.evaluate import compile_model, winners_database
    from schedb.pipeline.transfer import Winner
    from schedb.tir.target import load_intrinsics
    from schedb.tir.tasks import extract_tasks, lower

    target = parse_target(spec)
    load_intrinsics(target)
    trace = _wide_record()
    if src == AVX2:  # the way back starts from the AVX2 form
        trace = adapt(trace, AVX512, AVX2).trace
    (tiling,), _ = tilings(trace)
    lowered = lower(load_model("tiny_cnn"), target)
    tasks = extract_tasks(lowered, target)
    # The record's own task: the convolution it replays on unchanged.
    task = next(t for t in tasks if "conv2d" in t.name and apply_trace(trace, t.func, target).adapted == 0)
    adapted = adapt(trace, src, dst)
    r = apply_trace(adapted.trace, task.func, target)
    assert r.ok and r.adapted == 0, r.error
    inner = {p.index: p.decision for p in decision_points(r.trace)}[tiling.vector][-1]
    assert inner == dst.lanes  # one vector of the target's width
    compiled = compile_model(lowered, target, winners_database(tasks, {task.name: Winner(r.trace, [1.0], None)},
                                                               target))
    assert compiled.tuned_tasks == 1 and compiled.max_abs_err < 1e-3


@pytest.mark.slow
def test_transfer_to_avx2_measures_adapted_records_and_searches_natively(tmp_path):
    """`schedb transfer` of tiny_cnn_wide from tiny_cnn's AVX-512 fixture to an AVX2 target:
    adapted traces are candidates beside the records as tuned, the summary and the report
    say what adapting gained, the tasks of another ISA get a few native trials, and the
    model built checks out."""
    from click.testing import CliRunner
    from helpers import explain

    from schedb.ingest import ingest
    from schedb.store import Store
    from schedb_cli.main import cli

    db = tmp_path / "t.db"
    assert not ingest(Store(db), [FIXTURE]).rejected
    res = CliRunner().invoke(cli, ["transfer", "--model", "tiny_cnn_wide", "--db", str(db), "--target",
                                   "llvm -mcpu=haswell -num-cores=2", "--search-trials", "0", "--e2e-repeat", "2",
                                   "--native-trials", "2", "--native-budget", "2", "--native-per-iter", "1",
                                   "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, explain(res)
    assert "other vector ISA: " in res.output and "use records of avx512 on this avx2 CPU" in res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    other = [t for t in rep["tasks"] if t["source_isa"]]
    assert other and all(t["source_isa"] == "avx512" for t in other)
    tried = [t for t in rep["tasks"] if t["isa_adapted"] is not None]
    assert tried and all(t["adapted_us"] and t["source_isa"] for t in tried)
    isa = rep["isa"]
    assert isa["host"] == "avx2" and isa["sources"] == ["avx512"] and isa["tasks"] == len(other)
    assert isa["adapted_tried"] == len(tried) and isa["adapted_won"] == sum(t["isa_adapted"] for t in tried)
    assert isa["adapting_gain"] >= 1.0  # the best of both, over the best as tuned, side by side
    native = isa["native"]
    assert native["tasks"] and set(native["tasks"]) <= {t["task"] for t in other} and 0 < native["share"] <= 1
    assert any(t["native_us"] for t in rep["tasks"] if t["task"] in native["tasks"])
    if isa["adapted_won"]:
        assert "unadapted" in rep["e2e"]
    assert all(c["max_abs_err"] < 1e-3 for c in rep["check"].values())
    target = canonical(parse_target(HASWELL))
    tuned = Store(db).conn.execute("SELECT COUNT(*) FROM records WHERE target = ? AND origin = 'tuned'",
                                   (target,)).fetchone()[0]
    assert tuned > 0  # the native trials went into the database
    (options,) = Store(db).conn.execute("SELECT options FROM runs WHERE kind = 'tune'").fetchone()
    assert json.loads(options)["budget"]["trials_per_iter"] == 1  # --native-per-iter reached MetaSchedule


@pytest.mark.slow
def test_exact_matches_of_another_isa_come_with_their_neighbours(tmp_path):
    """tiny_cnn from its own AVX-512 fixture: on an AVX2 target a task's exact matches are
    of another ISA, so its neighbours' records are candidates beside them (other tilings to
    adapt); on an AVX-512 target the exact matches alone."""
    from click.testing import CliRunner
    from helpers import explain

    from schedb.ingest import ingest
    from schedb.store import Store
    from schedb_cli.main import cli

    def candidates(spec, name) -> dict:
        db, report = tmp_path / f"{name}.db", tmp_path / f"{name}.json"
        assert not ingest(Store(db), [FIXTURE]).rejected
        res = CliRunner().invoke(cli, ["transfer", "--model", "tiny_cnn", "--db", str(db), "--target", json.dumps(spec),
                                       "--search-trials", "0", "--native-trials", "0", "--e2e-repeat", "0",
                                       "--report", str(report)])
        assert res.exit_code == 0, explain(res)
        return {t["task"]: t for t in json.loads(report.read_text())["tasks"]}

    same, other = candidates(ROCKETLAKE, "avx512"), candidates(HASWELL, "avx2")
    exact = [name for name, t in same.items() if t["source"] == "exact"]
    assert exact and all(other[n]["candidates"] >= same[n]["candidates"] for n in exact)
    assert any(other[n]["candidates"] > same[n]["candidates"] for n in exact)


def test_the_summary_line_says_how_many_tasks_and_what_it_gained():
    from schedb_cli.main import isa_line

    isa = {"host": "avx2", "sources": ["avx512"], "tasks": 40, "adapted_tried": 30, "adapted_won": 21,
           "adapting_gain": 1.84, "native": {"tasks": ["a", "b"], "share": 0.62, "wall_s": 181.0, "gain": 1.31}}
    line = isa_line(isa, 72)
    assert line.startswith("other vector ISA: 40 of 72 tasks use records of avx512 on this avx2 CPU")
    assert "won on 21" in line and "1.84x over them as tuned" in line
    assert "native search on 2 tasks (62% of the latency), 181 s, 1.31x" in line
    assert "native" not in isa_line({**isa, "native": None, "adapting_gain": None}, 72)


def test_native_search_only_where_a_winner_is_of_another_isa():
    from schedb.pipeline.native import NativeOptions, native_search
    from schedb.pipeline.transfer import TaskResult

    def task(name, isa, us):
        return TaskResult(name, 1, 0, "neighbor", untuned_us=10 * us, transferred_us=us, record_id=1, source_isa=isa)

    same = [task("a", None, 50.0), task("b", None, 10.0)]
    # Nothing of another ISA, no trials, or no time: no search (and no tuning started).
    assert native_search(None, None, None, same, NativeOptions()) is None
    mixed = same + [task("c", "avx512", 40.0)]
    assert native_search(None, None, None, mixed, NativeOptions(trials=0)) is None
    assert native_search(None, None, None, mixed, NativeOptions(), time_left=0.0) is None
    # c carries 40 of 100 us: 40% of a 60 s budget is under the 30 s a search is worth.
    assert native_search(None, None, None, mixed, NativeOptions(budget_s=60)) is None
