"""Measurement: build candidates in warm worker processes, run them, keep every sample.

MetaSchedule's LocalBuilder starts a fresh process pool (and so imports TVM again,
~2 s a worker) on every batch. :class:`WarmBuilder` keeps one pool for its whole
life; a worker that crashes or times out is killed and restarted by the pool, so
one bad candidate costs an error record, not the search.
"""

from __future__ import annotations

import os
import tempfile

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, LocalRunner
from tvm.s_tir.meta_schedule.utils import cpu_count
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind


@derived_object
class WarmBuilder(PyBuilder):
    """A drop-in MetaSchedule builder whose worker processes stay up between batches."""

    def __init__(self, max_workers: int | None = None, timeout_sec: float = 30.0):
        super().__init__()
        self.timeout_sec = timeout_sec
        self.pool = PopenPoolExecutor(
            max_workers=max_workers or cpu_count(logical=True), timeout=timeout_sec
        )

    def build(self, build_inputs):
        jobs = [(b.mod, b.target) for b in build_inputs]
        results = []
        for r in self.pool.map_with_error_catching(lambda x: build_and_export(*x), jobs):
            if r.status == StatusKind.COMPLETE:
                results.append(BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"build timed out after {self.timeout_sec}s"))
            else:
                results.append(BuilderResult(None, f"build failed: {r.value}"))
        return results


def build_and_export(mod, target) -> str:
    """MetaSchedule's default build, minus ``import tvm.s_tir.tensor_intrin``.

    That import registers every tensor intrinsic of every backend and takes ~45 s
    here (CUDA's alone ~35 s); scheduling needs the registry, building a scheduled
    module does not."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    # A shared library, not MetaSchedule's tar of objects: linking then happens here,
    # in parallel build workers, instead of serially in the runner (~1 s a candidate).
    path = os.path.join(tempfile.mkdtemp(prefix="schedb-"), "kernel.so")
    tvm_build(mod, target=target).export_library(path)
    return path


def make_runner(number: int = 3, repeat: int = 5, min_repeat_ms: int = 20, timeout_sec: float = 30):
    """LocalRunner that returns ``repeat`` samples per candidate (the t-test needs them)."""
    return LocalRunner(
        timeout_sec=timeout_sec,
        evaluator_config=EvaluatorConfig(
            number=number, repeat=repeat, min_repeat_ms=min_repeat_ms, enable_cpu_cache_flush=False
        ),
    )
