"""TVM's workload loader behind a process boundary.

A workload line is a serialized IRModule that TVM's C++ loader trusts: a node that
refers to itself segfaults it, a forged length prefix makes it allocate gigabytes. So
the lines of a workload file are decoded in a forked child with a memory ceiling; a
line that kills the child, exhausts its memory or hangs it is skipped with its reason,
the child is restarted after it, and every other line is still read. Results come back
as JSON, never pickles: the child handled untrusted input. Traces from a log are applied
to their workloads (``trace_applies``) the same way.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import resource
import signal
import struct
from pathlib import Path
from typing import Iterator

import orjson
import psutil  # here, not in each child: its import was a third of a child's start

LINE_TIMEOUT = 60.0  # s without an answer from the child: the line hangs TVM
MEMORY_HEADROOM = 4 << 30  # bytes the child may grow by before an allocation fails


def load_workloads(path: Path, lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, dict | str]]:
    """``(lineno, line, workload)`` for every line, in order: ``workload`` is
    ``{"shash", "signature", "kind", "description", "blocks"}`` or the reason the line is bad."""
    return sandboxed(decode, lines, "workload")


def sandboxed(fn, items: Iterator[tuple[object, bytes]], what: str) -> Iterator[tuple[object, bytes, object]]:
    """``(key, payload, fn(payload))`` for every item, in order, ``fn`` run in the guarded
    child; an item that kills, exhausts or hangs it gets the reason instead (``what`` it is
    named in the reason). Nothing starts before the first result is asked for."""
    yield from Sandboxed(fn, items, what)


class Sandboxed:
    """What ``sandboxed`` iterates, with its first child started on construction: the
    caller works on while the child does, then iterates for the results; leaving its
    ``with`` block (or ``close``) stops a child never asked for."""

    def __init__(self, fn, items: Iterator[tuple[object, bytes]], what: str):
        self.fn, self.what, self.pending = fn, what, list(items)
        self.started = self._spawn() if self.pending else None

    def _spawn(self):
        ctx = multiprocessing.get_context("fork")  # the parent has TVM loaded already: no re-import
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_guarded, args=(send, self.fn, self.what, [p for _, p in self.pending],
                                                   os.getpid()), daemon=True)
        child.start()
        send.close()
        return child, recv

    def __iter__(self) -> Iterator[tuple[object, bytes, object]]:
        loader = f"TVM's {self.what} loader"
        while self.pending:
            (child, recv), self.started = self.started or self._spawn(), None
            done = 0
            try:
                for key, payload in self.pending:
                    if not recv.poll(LINE_TIMEOUT):
                        why = f"{loader} hung on it (> {LINE_TIMEOUT:.0f} s)" if child.is_alive() else None
                        raise _ChildLost(why)
                    try:
                        result = orjson.loads(recv.recv_bytes())
                    except EOFError:
                        raise _ChildLost(None) from None
                    done += 1
                    yield key, payload, result
                self.pending = []
            except _ChildLost as lost:
                child.kill()
                child.join()
                key, payload = self.pending[done]
                yield key, payload, lost.why or _death(loader, child.exitcode)
                self.pending = self.pending[done + 1:]
            finally:
                _reap(child, recv)

    def close(self) -> None:
        """The child started and never asked for, stopped."""
        if self.started is not None:
            _reap(*self.started)
            self.started = None

    def __enter__(self) -> Sandboxed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reap(child, recv) -> None:
    recv.close()
    if child.is_alive():
        child.kill()
    child.join()


class _ChildLost(Exception):
    def __init__(self, why: str | None):
        self.why = why


def _death(loader: str, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"crashed {loader} ({signal.Signals(-exitcode).name})"
    return f"{loader} exited ({exitcode})"


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this child when its parent dies (an ingest killed while the
    child decodes would otherwise leave it blocked on its pipe, holding memory and files)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own cleanup is all there is
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _guarded(send, fn, what: str, payloads: list[bytes], parent: int):
    """The child's entry: bound to its parent's life, then working."""
    _die_with_parent(parent)
    _child(send, fn, what, payloads)


def _child(send, fn, what: str, payloads: list[bytes]):
    vms = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (vms + MEMORY_HEADROOM, resource.RLIM_INFINITY))
    for payload in payloads:
        try:
            result = fn(payload)
        except MemoryError:
            result = f"TVM's {what} loader ran out of memory on it"
        except Exception as e:  # json, base64 or TVM: all mean "bad input"
            result = f"unreadable {what} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        send.send_bytes(orjson.dumps(result))
    send.close()
    os._exit(0)  # no atexit handlers: they belong to the parent (its open database)


def decode(line: bytes) -> dict | str:
    """One workload line, ``[structural_hash, base64(length-prefixed JSON graph)]``, as
    its signature and description, or why it is not a workload.

    ``tvm_version`` is the release that wrote the graph (its metadata). A graph of an
    older release is translated to this TVM's form first (schedb.tir.upgrade); then
    ``line`` is the workload as this TVM writes it, and ``shash`` this TVM's structural
    hash (``source_shash`` the line's own)."""
    from tvm.s_tir.meta_schedule.database import Workload
    from tvm.tirx import PrimFunc, Stmt

    from schedb.tir.signature import iter_blocks, signature
    from schedb.tir.upgrade import UpgradeError, upgrade_blob

    obj = orjson.loads(line)
    if not isinstance(obj, list) or len(obj) != 2 or not all(isinstance(x, str) for x in obj):
        return "expected [structural_hash, base64 IRModule]"
    blob = base64.b64decode(obj[1], validate=True)
    # TVM trusts the 8-byte length in front of the graph and allocates it up front.
    if len(blob) < 8 or struct.unpack("<Q", blob[:8])[0] != len(blob) - 8:
        return "length prefix does not match the workload's size"
    try:
        version, upgraded = upgrade_blob(blob)
    except UpgradeError as e:
        return f"unreadable workload ({e})"
    mod = Workload.from_json(obj if upgraded is None else [obj[0], base64.b64encode(upgraded).decode()]).mod
    funcs = list(mod.functions.values())
    if not funcs or not all(isinstance(f, PrimFunc) and isinstance(f.body, Stmt) for f in funcs):
        return "not a TIR workload (every function must be a PrimFunc with a statement body)"
    sig, kind, desc = signature(mod)
    # Block names as a trace gets them (GetSBlock): the description strips their suffixes.
    blocks = sorted({str(b.name_hint) for f in funcs for b in iter_blocks(f.body)})
    out = {"shash": obj[0], "source_shash": obj[0], "signature": sig, "kind": kind, "description": desc,
           "blocks": blocks, "tvm_version": version, "line": None}
    if upgraded is not None:  # stored, and exported, as this TVM writes it
        shash, b64 = Workload(mod).as_json()
        out.update(shash=str(shash), line=orjson.dumps([str(shash), str(b64)]).decode())
    return out


def replay_payload(line: str, trace: bytes) -> bytes:
    """What ``trace_applies`` takes: ``[workload line, trace]``, the trace as its JSON bytes."""
    return b"[" + orjson.dumps(line) + b"," + trace + b"]"


def misplaced(samples: dict, cleared: frozenset | set = frozenset()) -> dict:
    """``{key: (workload line, [trace JSON bytes])}`` -> ``{key: why}`` for the workloads
    none of whose traces applies to them (see trace_applies). Each round tries the next
    trace of the workloads not yet cleared, all in one child: one replay per workload
    where its first trace applies. ``cleared``: keys already found to apply."""
    left, why = set(samples) - set(cleared), {}
    for k in range(max((len(t) for _, t in samples.values()), default=0)):
        items = [(key, replay_payload(samples[key][0], samples[key][1][k])) for key in left
                 if k < len(samples[key][1])]
        for key, _, reason in sandboxed(trace_applies, items, "trace"):
            if reason is None:
                left.discard(key)
            else:
                why[key] = reason
    return {key: why[key] for key in left}


def trace_applies(payload: bytes) -> str | None:
    """``payload`` is ``[workload line, trace]`` (JSON; the line as stored, this TVM's form):
    None when the trace applies to the workload with its own decisions, else why not. TVM
    quietly re-samples a tile decision that does not multiply to its loop's extent, so a
    trace tuned for another workload of the same block names applies without an error:
    its tile decisions come back changed."""
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.database import Workload

    line, trace = orjson.loads(payload)
    mod = Workload.from_json(orjson.loads(line)).mod
    sch = s_tir.Schedule(mod, error_render_level="none")
    try:
        s_tir.schedule.Trace.apply_json_to_schedule(trace, sch)
    except Exception as e:  # TVM's own error types: any means "not a schedule of this workload"
        text = str(e).strip().splitlines()
        return (text[-1] if text else type(e).__name__)[:200]
    insts, given = trace
    got = dict((i, d) for i, d in sch.trace.as_json()[1])
    for i, decision in given:
        if insts[i][0] == "SamplePerfectTile" and [int(x) for x in got.get(i, [])] != decision:
            return f"tile decision {decision} does not fit its loop (instruction {i})"
    return None
