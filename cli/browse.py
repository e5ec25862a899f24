"""``schedb browse``: datasette over a schedb file, with the provenance questions as
canned queries (schedb.store.queries), a chart of a workload's search and a page per run
(browse_runs.py).

The chart is an SVG drawn here, server-side: the page needs no script and nothing from
the network (there may be none where the database is browsed)."""

from __future__ import annotations

import html
import sys
from pathlib import Path

from datasette import hookimpl

from schedb.errors import SchedbError
from schedb.store import Store
from schedb.store.queries import CANNED
from schedb_cli import browse_runs

CHART_PATH = "/-/schedb/chart"


def metadata(db_name: str) -> dict:
    """datasette metadata: the canned queries, under the database's name."""
    return {
        "title": "schedb",
        "description_html": (
            "Schedules and where they came from. Canned queries answer the provenance questions; "
            f'<a href="{CHART_PATH}">{CHART_PATH}?workload=ID</a> charts a workload\'s search; '
            f'<a href="{browse_runs.RUNS_PATH}">{browse_runs.RUNS_PATH}</a> shows each transfer, tune, droplet and '
            "fast run, task by task."),
        "databases": {db_name: {"queries": {
            name: {"title": title, "description": text, "sql": sql.strip(), "hide_sql": True}
            for name, (title, text, sql) in CANNED.items()}}},
    }


def app(db_path):
    """The ASGI application: datasette over ``db_path`` (read-only), with the chart page."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    path = Path(db_path)
    Store(path, readonly=True).close()  # a clear error for a missing or foreign file, before serving
    if not pm.has_plugin(ChartPlugin.name):
        pm.register(ChartPlugin, name=ChartPlugin.name)
    ds = Datasette([str(path)], metadata=metadata(path.stem), settings={"sql_time_limit_ms": 10_000})
    return ds.app()


async def chart(request, datasette):
    from datasette.utils.asgi import Response

    try:
        workload = int(request.args.get("workload", ""))
    except ValueError:
        return Response.html(_page("Search chart", "<p>Give a workload: ?workload=ID</p>"), status=400)
    path = next(db.path for db in datasette.databases.values() if db.path)
    rows = Store(path, readonly=True).workloads.search_history(workload)
    return Response.html(_page(f"Search of workload {workload}", chart_svg(rows, workload)))


async def runs(request, datasette):
    from datasette.utils.asgi import Response

    _, path = _database(datasette)
    return Response.html(_page("Runs", browse_runs.runs_list(Store(path, readonly=True).runs.list())))


async def run(request, datasette):
    from datasette.utils.asgi import Response

    from schedb.tir.target import label

    name, path = _database(datasette)
    run_id = int(request.url_vars["run_id"])
    found = Store(path, readonly=True).runs.get(run_id)
    if found is None:
        return Response.html(_page(f"Run {run_id}", "<p>No such run.</p>"), status=404)
    title = f"Run {run_id}: {found.kind}" + (f" of {found.model}" if found.model else "")
    return Response.html(_page(title, f"<p><a href='{browse_runs.RUNS_PATH}'>all runs</a></p>"
                               + browse_runs.run_page(found, name, label)))


def _database(datasette) -> tuple[str, str]:
    """The served database: (its name in datasette's URLs, its path)."""
    return next((name, db.path) for name, db in datasette.databases.items() if db.path)


class ChartPlugin:
    """The chart page, as a datasette plugin (registered once per process)."""

    name = "schedb-chart"

    @staticmethod
    @hookimpl
    def register_routes():
        return [(rf"^{CHART_PATH}$", chart), (rf"^{browse_runs.RUNS_PATH}$", runs),
                (rf"^{browse_runs.RUNS_PATH}/(?P<run_id>[0-9]+)$", run)]


def serve(db_path, host: str = "127.0.0.1", port: int = 8001):
    """Serve ``app(db_path)`` until interrupted."""
    import socket

    import uvicorn

    application = app(db_path)
    try:  # uvicorn logs a failed bind and exits: say it in one line first
        socket.create_server((host, port)).close()
    except OSError as e:
        raise SchedbError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    print(f"schedb browse: http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        uvicorn.run(application, host=host, port=port, log_level="warning")
    except SystemExit as e:  # the port was taken meanwhile
        raise SchedbError(f"cannot serve on {host}:{port}") from e


def chart_svg(rows: list[dict], workload: int, width: int = 720, height: int = 320) -> str:
    """Each measurement's time (dots; failed ones as crosses on the axis) and the best so
    far (a step line) against the order of measurement; log-scaled time."""
    import math

    valid = [r for r in rows if r["valid"] and r["us"]]
    if not valid:
        return f"<p>No valid measurement of workload {workload}.</p>"
    left, right, top, bottom = 90, 20, 20, 40
    n = rows[-1]["n"]
    lo, hi = math.log10(min(r["us"] for r in valid)), math.log10(max(r["us"] for r in valid))
    hi = hi if hi > lo else lo + 1

    def x(i):
        return left + (i - 1) / max(n - 1, 1) * (width - left - right)

    def y(us):
        return top + (hi - math.log10(us)) / (hi - lo) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="measured times of workload {workload}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#999"/>']
    for v in sorted({lo, hi, (lo + hi) / 2}):
        parts.append(f'<text x="{left - 6}" y="{y(10 ** v) + 4:.1f}" text-anchor="end" font-size="11">'
                     f"{_us(10 ** v)}</text>")
    parts.append(f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" font-size="12">'
                 f"measurement (1 to {n}, in the order made)</text>")
    best = [(x(r["n"]), y(r["best_us"])) for r in rows if r["best_us"]]
    steps = " ".join(f"{px:.1f},{py:.1f}" for i, (px, py) in enumerate(best)
                     for px, py in ([(px, best[i - 1][1]), (px, py)] if i else [(px, py)]))
    parts.append(f'<polyline class="best" points="{steps}" fill="none" stroke="#d62728" stroke-width="2"/>')
    for r in rows:
        tip = html.escape(f"record {r['id']} ({r['origin']}): " + (f"{r['us']:.2f} us" if r["valid"] else "failed"))
        if r["valid"] and r["us"]:
            parts.append(f'<circle class="measured" cx="{x(r["n"]):.1f}" cy="{y(r["us"]):.1f}" r="3" '
                         f'fill="#1f77b4"><title>{tip}</title></circle>')
        else:
            cx, cy = x(r["n"]), height - bottom
            parts.append(f'<path class="failed" d="M{cx - 3:.1f},{cy - 3} l6,6 m0,-6 l-6,6" stroke="#999">'
                         f"<title>{tip}</title></path>")
    parts.append("</svg>")
    final = valid and min(r["us"] for r in valid)
    return ("".join(parts) + f"<p>{len(rows)} measurements, {len(rows) - len(valid)} failed; "
            f"best {_us(final)} (red: best so far, blue: each measurement).</p>")


def _us(value: float) -> str:
    return f"{value:,.0f} us" if value >= 100 else f"{value:.3g} us"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family: sans-serif'><p><a href='/'>home</a></p><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>")
