"""`schedb tune` and `schedb bench` end to end, on user models (a .py factory and ONNX)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import explain

from cli.main import cli

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

    # TVM's own JSONDatabase reads the work dir, and MetaScheduleApplyDatabase uses it.
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    assert len(JSONDatabase(work_dir=str(out))) > 0
    res = runner.invoke(cli, ["bench", "--model", spec, "--logs", str(out), "--repeat", "3", "--json"])
    assert res.exit_code == 0, explain(res)
    report = json.loads(res.output)
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
    meta = json.loads((out / "schedb.json").read_text())
    assert meta["time_limit_s"] == 0 and meta["trials"] == 50 * len(meta["tasks"])
    from collections import Counter

    per_workload = Counter(json.loads(line)[0] for line in
                           (out / "database_tuning_record.json").read_text().splitlines())
    # At most the one batch each task had in flight when the clock ran out, not 50 trials.
    assert per_workload and max(per_workload.values()) <= 2
    steps = meta["timeline"]["tasks"]
    assert {i: s[-1][1] for i, s in enumerate(steps) if s} == dict(per_workload)


def test_bench_untuned_zoo_model_against_pytorch():
    res = CliRunner().invoke(cli, ["bench", "--model", "tiny_cnn", "--repeat", "3"])
    assert res.exit_code == 0, explain(res)
    assert "pytorch" in res.output and "check" in res.output


def test_bench_with_fixture_logs_schedules_kernels():
    res = CliRunner().invoke(cli, ["bench", "--model", "tiny_cnn", "--logs", str(FIXTURES / "tiny_cnn"),
                                   "--repeat", "3", "--json"])
    assert res.exit_code == 0, explain(res)
    assert json.loads(res.output)["tuned_tasks"] >= 3


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
