"""Measurement: build candidates in warm worker processes, run them, keep every sample.

MetaSchedule's LocalBuilder starts a fresh process pool (and so imports TVM again,
~2 s a worker) on every batch. :class:`WarmBuilder` keeps one pool for its whole
life; a worker that crashes or times out is killed and restarted by the pool, so
one bad candidate costs an error record, not the search.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, LocalRunner, PyRunner, PyRunnerFuture
from tvm.s_tir.meta_schedule.utils import cpu_count
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from schedb.errors import SchedbError


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

    That import registers every tensor intrinsic of every backend and takes tens of
    seconds on a small CPU, in every fresh worker: LocalBuilder's builds, a fresh pool
    each batch, take about its 30 s timeout and sometimes pass it. Scheduling needs
    the registry, building a scheduled module does not."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    # A shared library, not MetaSchedule's tar of objects: linking then happens here,
    # in parallel build workers, instead of serially in the runner (~1 s a candidate).
    path = os.path.join(tempfile.mkdtemp(prefix="schedb-"), "kernel.so")
    tvm_build(mod, target=target).export_library(path)
    return path


def make_runner(spec: str = "local", number: int = 1, repeat: int = 5, min_repeat_ms: int = 20,
                timeout_sec: float = 30, workers: int | None = 1):
    """``local`` (this machine) or ``rpc://host:port/key`` (TVM's RPC tracker); either way
    every candidate comes back with ``repeat`` samples (the t-test needs them). Each sample
    runs the kernel ``number`` times, more until it lasts ``min_repeat_ms``: with 1, a kernel
    under 7 ms runs as often as with 3 (as many times as fill 20 ms) and one of 20 ms or more
    once instead of three times (an untuned convolution's samples were a fifth of a
    transfer's run time).

    Over RPC, ``workers`` candidates run at once (None: one per server the tracker has for
    the key, which is then checked to have one), and a candidate whose session fails
    (a server that died or dropped off) is run once more, on whichever server the tracker
    gives next: :class:`RetryRunner`."""
    from tvm.s_tir.meta_schedule.runner import RPCRunner

    config = EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                             enable_cpu_cache_flush=False)
    if spec == "local":
        return LocalRunner(timeout_sec=timeout_sec, evaluator_config=config)
    rpc = rpc_config(spec, timeout_sec)
    if workers is None:
        workers = rpc_servers(rpc)
    return RetryRunner(RPCRunner(rpc_config=rpc, evaluator_config=config, max_workers=workers))


def rpc_config(spec: str, timeout_sec: float = 30):
    """``rpc://host:port/key`` -> MetaSchedule's RPCConfig."""
    from urllib.parse import urlparse

    from tvm.s_tir.meta_schedule.runner import RPCConfig

    url = urlparse(spec)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "rpc" or not url.hostname or not port or not url.path.strip("/"):
        raise SchedbError(f"bad runner {spec!r}: use 'local' or rpc://host:port/key")
    return RPCConfig(tracker_host=url.hostname, tracker_port=port,
                     tracker_key=url.path.strip("/"), session_timeout_sec=int(timeout_sec))


def rpc_servers(rpc) -> int:
    """How many servers the tracker has for the key; none (or no tracker) is an error."""
    where = f"rpc://{rpc.tracker_host}:{rpc.tracker_port}/{rpc.tracker_key}"
    import socket

    try:  # TVM's own connect retries for a minute on a refused connection
        socket.create_connection((rpc.tracker_host, rpc.tracker_port), timeout=10).close()
        n = rpc.count_num_servers(allow_missing=True)
    except (OSError, RuntimeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise SchedbError(f"`runner` {where}: no tracker answers there ({reason})") from None
    if n == 0:
        raise SchedbError(f"`runner` {where}: the tracker has no server for key {rpc.tracker_key!r}")
    return n


@derived_object
class RetryRunner(PyRunner):
    """A MetaSchedule runner that runs a candidate once more when its RPC session failed:
    a server killed mid-run costs the candidates it had in flight one more run each, on
    the servers left, rather than a failed record each. A kernel that fails again (or
    times out) is a failed record as usual. ``retried``: the errors that were retried."""

    def __init__(self, inner, retries: int = 1):
        super().__init__()
        self.inner, self.retries, self.retried = inner, retries, []

    def run(self, runner_inputs):
        return [_RetryFuture(self, i, f) for i, f in zip(runner_inputs, self.inner.run(runner_inputs))]


def session_failed(error: str | None) -> bool:
    """An RPCRunner error from the session (connection, upload, a server gone), not a timeout."""
    return error is not None and error.startswith("RPCRunner: An exception occurred")


@derived_object
class _RetryFuture(PyRunnerFuture):
    def __init__(self, runner, runner_input, future):
        super().__init__()
        self.runner, self.input, self.future, self.left = runner, runner_input, future, runner.retries

    def done(self) -> bool:
        return self.future.done()

    def result(self):
        result = self.future.result()
        while session_failed(result.error_msg) and self.left > 0:
            self.left -= 1
            self.runner.retried.append(_short(result.error_msg, 200))
            result = self.runner.inner.run([self.input])[0].result()
        return result


@dataclass
class Measurement:
    """One candidate's result: every repeat's time in seconds, or why there is none."""

    samples: list[float] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.ok else float("inf")


class Engine:
    """Measure scheduled kernels: warm parallel builds, then the runner, every sample kept.

    The one measurement path of schedb: transfer, droplet search and the benchmarks all
    call :meth:`measure`. With ``rounds``, the kernels are measured interleaved: one sample
    of each per round, the order rotating from round to round, so that drift during the
    call affects all of them alike and round r's samples pair up (droplet's tests)."""

    def __init__(self, target, runner: str = "local", repeat: int = 5, number: int = 1,
                 build_timeout: float = 30.0, run_timeout: float = 30.0):
        self.target, self.runner_spec = target, runner  # (the spec: what a run row records)
        self.builder = WarmBuilder(timeout_sec=build_timeout)
        self.runner = make_runner(runner, number=number, repeat=repeat, timeout_sec=run_timeout)
        self.number, self.run_timeout = number, run_timeout
        self.count = 0

    @cached_property
    def runner_for_rounds(self):
        """The runner of interleaved rounds, one sample a call: made when first needed (its
        worker's start, TVM imported again, is ~3 s that a plain transfer does not need)."""
        return make_runner(self.runner_spec, number=self.number, repeat=1, timeout_sec=self.run_timeout)

    def measure(self, mods: list, rounds: int | None = None) -> list[Measurement]:
        from tvm.s_tir.meta_schedule.arg_info import ArgInfo
        from tvm.s_tir.meta_schedule.builder import BuilderInput
        from tvm.s_tir.meta_schedule.runner import RunnerInput

        from schedb.tir.signature import prim_func

        if not mods:
            return []
        self.count += len(mods)
        built = self.builder.build([BuilderInput(m, self.target) for m in mods])
        out: list[Measurement | None] = [None] * len(mods)
        todo = []
        for i, (m, b) in enumerate(zip(mods, built)):
            if b.error_msg is not None:
                out[i] = Measurement(None, _short(b.error_msg))
            else:
                todo.append((i, RunnerInput(b.artifact_path, "cpu", ArgInfo.from_prim_func(prim_func(m)))))
        if rounds is None:
            results = {i: [f.result()] for (i, _), f in zip(todo, self.runner.run([r for _, r in todo]))}
        else:
            results = self._interleaved(todo, rounds)
        for i, r in todo:
            shutil.rmtree(os.path.dirname(r.artifact_path), ignore_errors=True)
            err = next((x.error_msg for x in results[i] if x.error_msg is not None), None)
            out[i] = Measurement(None, _short(err)) if err is not None else \
                Measurement([float(s) for x in results[i] for s in x.run_secs])
        return out

    def _interleaved(self, todo: list, rounds: int) -> dict:
        """{index: [one runner result per round]}: round r runs the kernels in ``todo``'s
        order rotated by r, all rounds in one runner call."""
        k = len(todo)
        order = [todo[(r + j) % k] for r in range(rounds) for j in range(k)]
        futures = self.runner_for_rounds.run([inp for _, inp in order])
        results: dict = {i: [] for i, _ in todo}
        for (i, _), fut in zip(order, futures):
            results[i].append(fut.result())
        return results


def _short(msg: str, limit: int = 500) -> str:
    msg = str(msg).strip()
    return msg if len(msg) <= limit else msg[:limit] + " ..."
