"""Shared by the tests: CLI results explained, records relabelled to a foreign target, a TVM
RPC tracker and servers on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback

from schedb.tir.target import canonical, parse_target


def explain(result) -> str:
    """A click result as an assertion message: the output and, if one was raised, the
    exception with its traceback (a CLI failure is never invisible)."""
    if result.exc_info is None or isinstance(result.exception, SystemExit):
        return result.output
    return result.output + "\n" + "".join(traceback.format_exception(*result.exc_info))


def foreign_target(here: str | None = None) -> str:
    """A canonical llvm target of another CPU than this host's (AVX-512 as well): znver4,
    or emeraldrapids on a znver4 host. Tests label records with it so that the cross-target
    path runs on every host, whatever its CPU."""
    cfg = json.loads(here or canonical(parse_target(None)))
    cfg["mcpu"] = "emeraldrapids" if cfg.get("mcpu") == "znver4" else "znver4"
    return canonical(parse_target(cfg))


def relabel(db_path, target: str) -> None:
    """Make every record of a database claim ``target`` (as if tuned there)."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE records SET target = ?", (target,))


class Cluster:
    """A TVM RPC tracker and its servers on loopback, each process in its own session:
    killpg ends a server with its session workers, as a machine going down would, and
    leaves none behind (TVM's rpc_server and rpc_tracker serve from a worker process that
    outlives a plain SIGTERM of its parent)."""

    def __init__(self):
        self.procs: list = []
        self.port = free_port()
        self._start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                    "--port-end", str(self.port + 1))
        wait_for(lambda: accepts(self.port), "the tracker to listen")

    def runner(self, key: str) -> str:
        return f"rpc://127.0.0.1:{self.port}/{key}"

    def server(self, key: str):
        from schedb.search.measure import rpc_config

        before = rpc_config(self.runner(key)).count_num_servers()
        port = free_port()
        p = self._start("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                        str(port + 1), "--tracker", f"127.0.0.1:{self.port}", "--key", key)
        wait_for(lambda: rpc_config(self.runner(key)).count_num_servers() > before, f"server {key} to register")
        return p

    def _start(self, *args):
        p = subprocess.Popen([sys.executable, "-m", *args], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group: its worker too, even when the parent has gone
            except ProcessLookupError:
                pass
            p.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(ready, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while not ready():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
