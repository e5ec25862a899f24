"""What every benchmark writes: the machine, medians with 95% intervals, and a result
as JSON + a markdown table + a PNG plot under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]


def describe() -> dict:
    """CPU, cores, memory, versions and load: written into every result file."""
    cpu, mem = "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            mem = round(int(next(x for x in f if x.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    import tvm

    from schedb import host_target_dict

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem,
        "llvm_mcpu": host_target_dict()["mcpu"],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "tvm": tvm.__version__,
        "tvm_threads": int(tvm.get_global_func("runtime.NumThreads")()),  # what its kernels ran on
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "schedb_commit": _commit(),
        "dirty": _dirty(),
    }


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _dirty() -> bool | None:
    """Whether the code differs from that commit (results of uncommitted code); results and
    run progress written since, by this or an earlier benchmark of a queue, are not code."""
    import subprocess

    try:
        return bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                    ":!benchmarks/results", ":!benchmarks/runs"], cwd=ROOT,
                                   text=True, capture_output=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_line(m: dict) -> str:
    run = ("commit not recorded" if not m.get("schedb_commit") else
           f"schedb {m['schedb_commit']}" + {True: " (uncommitted changes)", False: "", None: ""}[m.get("dirty")])
    return (f"Machine: {m['cpu']} ({m['cores']} cores, LLVM mcpu {m.get('llvm_mcpu')}), "
            f"TVM {m['tvm']}, Python {m['python']}; {run}; load average at start "
            f"{m.get('load_average_at_start')}.")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def median_ci(samples, confidence: float = 0.95) -> dict:
    """Median with a distribution-free confidence interval: the order statistics x_(k) and
    x_(n+1-k) with the largest k whose binomial(n, 1/2) coverage is at least ``confidence``
    (what scipy.stats.quantile_test gives); no normality assumed. Below 6 samples no pair
    reaches 95%: the interval is then [min, max], and ``coverage``, the exact coverage of
    the ranks chosen, says how much less it covers (93.75% at n = 5)."""
    import numpy as np

    x = np.sort(np.asarray(samples, dtype=float))
    n = int(x.size)
    k = _rank(n, confidence)
    return {"median": float(np.median(x)), "ci_low": float(x[k - 1]), "ci_high": float(x[n - k]), "n": n,
            "coverage": float(_coverage(n, k))}


def geomean_ci(groups, confidence: float = 0.95, seed: int = 0) -> dict:
    """Geometric mean over groups of each group's median (e.g. per-round speed-up ratios of
    one pair), with a percentile bootstrap interval that resamples within every group
    (scipy.stats.bootstrap)."""
    import numpy as np
    from scipy.stats import bootstrap

    def stat(*xs, axis=-1):
        return np.exp(np.mean([np.log(np.median(x, axis=axis)) for x in xs], axis=0))

    data = tuple(np.asarray(g, dtype=float) for g in groups)
    ci = bootstrap(data, stat, confidence_level=confidence, method="percentile", n_resamples=10000,
                   rng=np.random.default_rng(seed)).confidence_interval
    return {"geomean": float(stat(*data)), "ci_low": float(ci.low), "ci_high": float(ci.high), "groups": len(data)}


def _coverage(n, k):
    """P(x_(k) <= median <= x_(n+1-k)) for n samples of a continuous distribution: the
    number B of samples below the median is binomial(n, 1/2), and the interval holds the
    median exactly when k <= B <= n - k. ``k`` may be an array."""
    from scipy.stats import binom

    return binom.cdf(n - k, n, 0.5) - binom.cdf(k - 1, n, 0.5)


def _rank(n: int, confidence: float) -> int:
    """The largest k whose interval [x_(k), x_(n+1-k)] covers at least ``confidence``; 1
    (min and max) when none does. Coverage falls as k grows."""
    import numpy as np

    ks = np.arange(1, n // 2 + 1)
    ok = ks[_coverage(n, ks) >= confidence]
    return int(ok.max()) if ok.size else 1


def coverage_note(c: dict, nominal: float = 0.95) -> str:
    """'' if the interval of a median_ci dict covers ``nominal``, else its real coverage,
    e.g. ' (93.75% interval)': a table headed "95% interval" must not pass off a lower one.
    Results written before median_ci stored ``coverage`` are recomputed from n (the ranks
    were the same)."""
    cov = c["coverage"] if "coverage" in c else float(_coverage(c["n"], _rank(c["n"], nominal)))
    return "" if cov >= nominal else f" ({cov:.2%} interval)"


def fmt_ci(c: dict, unit: str = "ms", digits: int | None = None) -> str:
    """median [low, high] unit: to ``digits`` decimals, or 4 significant digits; an interval
    that covers less than 95% says how much (coverage_note)."""
    f = f".{digits}f" if digits is not None else ".4g"
    return f"{c['median']:{f}} [{c['ci_low']:{f}}, {c['ci_high']:{f}}] {unit}".rstrip() + coverage_note(c)


def verdict(c: dict, goal: float, at_least: bool = False) -> str:
    """A goal 'at most ``goal``' (or 'at least', ``at_least``) judged on the whole interval of
    ``c`` (a median_ci dict): met when all of it meets the goal, missed when none does, else
    not shown."""
    if at_least:
        return "met" if c["ci_low"] >= goal else "missed" if c["ci_high"] < goal else "not shown"
    return "met" if c["ci_high"] <= goal else "missed" if c["ci_low"] > goal else "not shown"


def write(name: str, result: dict, markdown: str, figure=None, folder: Path = RESULTS) -> Path:
    """results/NAME.json (with the markdown inside), NAME.md and NAME.png."""
    folder.mkdir(parents=True, exist_ok=True)
    result = portable({**result, "markdown": markdown})
    (folder / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{name}.md").write_text(markdown.rstrip() + "\n")
    if figure is not None:
        figure.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight")
    return folder / f"{name}.json"


def portable(x):
    """``x`` with this checkout's absolute paths made relative to it, and other absolute paths
    (scratch folders) reduced to "<scratch>/" and their last two parts: a result names no
    machine's folders."""
    if isinstance(x, dict):
        return {k: portable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [portable(v) for v in x]
    if isinstance(x, str) and x.startswith("/") and "\n" not in x and " " not in x:
        path = Path(x)
        if path == ROOT or ROOT in path.parents:
            return str(path.relative_to(ROOT))
        return "/".join(["<scratch>", *path.parts[-2:]])
    return x


def publish(name: str, result: dict, render, folder: Path = RESULTS) -> Path:
    """Render a finished result, print its markdown and write it (``write``)."""
    md, fig = render(result)
    print(md)
    path = write(name, result, md, fig, folder)
    print("->", path)
    return path


def replot(path: Path, render) -> Path:
    """Re-render NAME.md and NAME.png from the saved NAME.json; measures nothing."""
    result = json.loads(Path(path).read_text())
    result.pop("markdown", None)
    return write(Path(path).stem, result, *render(result), folder=Path(path).parent)


def result_options(ap, name: str) -> None:
    """--name (results/NAME.json) and --replot, for a benchmark that writes one result."""
    ap.add_argument("--name", default=name, help="results/NAME.json (another name keeps the committed one)")
    ap.add_argument("--replot", action="store_true", help="re-render NAME.md from NAME.json; measure nothing")


def parse(ap, argv, name: str, render):
    """Parse a benchmark's arguments (with --name and --replot); a --replot is done here and
    gives None: the caller then has nothing to measure."""
    result_options(ap, name)
    a = ap.parse_args(argv)
    if a.replot:
        replot(RESULTS / f"{a.name}.json", render)
        return None
    return a


def host_target():
    """This host's TVM target, its tensor intrinsics loaded: what the benchmarks tune and time for."""
    from schedb import load_intrinsics, parse_target

    target = parse_target(None)
    load_intrinsics(target)
    return target


def pyplot():
    """matplotlib without a display (pip install -e '.[bench]')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
