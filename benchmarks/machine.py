"""The machine a benchmark ran on, written into every result file."""

from __future__ import annotations

import os
import platform
import sqlite3


def describe() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import tvm

    from schedb.target import host_target_dict

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "llvm_mcpu": host_target_dict()["mcpu"],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "tvm": tvm.__version__,
        "load_average_at_start": os.getloadavg(),
    }
