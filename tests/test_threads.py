"""TVM's kernels run on every physical core: its runtime's own default is half the logical
CPUs, which on a machine with one hardware thread per core (this one, most cloud VMs) is
half the machine, for every measurement and every compiled model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from schedb.tir import target as tgt

PROBE = "import schedb, tvm; print(tvm.get_global_func('runtime.NumThreads')(), schedb.host_cores())"


def _threads(env: dict) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tvm_threads, cores = out.stdout.split()
    return int(tvm_threads), int(cores)


def test_tvm_runs_a_thread_per_physical_core_after_schedb_is_imported():
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    tvm_threads, cores = _threads(env)
    assert tvm_threads == cores == tgt.host_cores()
    assert tgt.host_target_dict()["num-cores"] == cores


def test_a_users_own_thread_count_is_kept():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"TVM_NUM_THREADS": "1"}
    assert _threads(env)[0] == 1


@pytest.mark.parametrize("logical, physical, usable, expected", [
    (2, 2, 2, 2),    # one thread per core: TVM alone would run on 1
    (16, 8, 16, 8),  # two threads per core: one per physical core
    (16, 8, 4, 2),   # pinned to 4 logical CPUs of a hyperthreaded machine
    (4, None, 4, 4),  # physical count unknown: the usable CPUs
])
def test_host_cores_counts_the_physical_cores_this_process_may_use(monkeypatch, logical, physical, usable, expected):
    import psutil

    counts = {True: logical, False: physical}
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: counts[logical])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(usable)))
    assert tgt.host_cores() == expected
