"""The run pages of ``schedb browse``: the runs, and one run task by task (where each
task's kernel came from, its time untuned and chosen, its share of the model's kernel
time as a bar chart) with the model's end-to-end latencies beside PyTorch's.

HTML and SVG drawn here, server-side, like the search chart: no script, nothing fetched."""

from __future__ import annotations

import html
import json
import math

from schedb.store.tables import Run

RUNS_PATH = "/-/schedb/runs"
# One colour per task source, the same in the table and the chart.
COLOURS = {"exact": "#2ca02c", "neighbor": "#1f77b4", "anchor": "#9467bd", "searched": "#ff7f0e",
           "untuned": "#7f7f7f", "tuned": "#ff7f0e", "transferred": "#1f77b4", "droplet": "#d62728",
           "stored": "#8c564b"}
VARIANTS = ("untuned", "transferred", "refined", "final", "pytorch")  # the end-to-end timings, in this order
# Numbers and links on one line each: a task table of 70 rows stays readable.
STYLE = "<style>table.tasks td, table.e2e td { white-space: nowrap } table.run th { text-align: left }</style>"


def runs_list(runs: list[Run]) -> str:
    """The runs, newest first, each linking to its page."""
    if not runs:
        return "<p>No runs yet: <code>schedb transfer</code>, <code>tune --db</code>, <code>droplet</code> and " \
               "<code>fast</code> keep theirs here.</p>"
    head = ["run", "kind", "model", "status", "started", "tasks", "records", "untuned", "TVM", "PyTorch",
            "TVM / PyTorch"]
    rows = [[f'<a href="{RUNS_PATH}/{r.id}">{r.id}</a>', _e(r.kind), _e(r.model or ""), _e(r.status),
             _e(r.started_at), r.n_tasks, r.records, fmt_ms(r.untuned_ms), fmt_ms(r.tvm_ms), fmt_ms(r.pytorch_ms),
             _ratio(r.tvm_ms, r.pytorch_ms)] for r in runs]
    return _table(head, rows)


def run_page(run: Run, db: str, label) -> str:
    """One run: what it was, its end-to-end latencies, and its tasks (``db``: the database's
    name in datasette, for links to records; ``label``: a target's short name)."""
    return "".join([STYLE, _summary(run, label), "<h2>End-to-end latency</h2>", e2e_section(run),
                    "<h2>Tasks</h2>", tasks_section(run, db)])


def _summary(run: Run, label) -> str:
    items = [("kind", run.kind), ("model", run.model), ("status", run.status + (f": {run.error}" if run.error else "")),
             ("target", label(run.target) if run.target else None), ("runner", run.runner),
             ("sources", ", ".join(run.sources) if run.sources is not None
              else "every model" if run.kind == "transfer" else None),
             ("started", run.started_at), ("finished", run.finished_at),
             ("TVM", run.tvm_version), ("schedb", run.schedb_version),
             ("records made", run.records)]
    rows = "".join(f"<tr><th scope='row'>{k}</th><td class='run-{k.replace(' ', '-')}'>{_e(v)}</td></tr>"
                   for k, v in items if v is not None)
    parent = (f"<p>Part of <a href='{RUNS_PATH}/{run.parent_run_id}'>run {run.parent_run_id}</a>.</p>"
              if run.parent_run_id else "")
    options = _e(json.dumps(run.options, indent=1, sort_keys=True))
    return (f"<table class='run'>{rows}</table>{parent}"
            f"<details><summary>options</summary><pre>{options}</pre></details>")


def e2e_section(run: Run) -> str:
    """The model's end-to-end latencies (medians, interquartile range) beside PyTorch's: a
    table and a bar chart."""
    timed = [(v, run.e2e[v]) for v in VARIANTS if v in run.e2e]
    if not timed:
        return "<p>This run timed no end-to-end latency.</p>"
    torch = run.e2e.get("pytorch", {}).get("median_ms")
    rows = [[f"<span class='variant'>{_e(v)}</span>", fmt_ms(lat["median_ms"]),
             f"{fmt_ms(lat.get('p25_ms'))} to {fmt_ms(lat.get('p75_ms'))}", _ratio(lat["median_ms"], torch)]
            for v, lat in timed]
    return (_table(["variant", "median", "interquartile range", "/ PyTorch"], rows, "e2e")
            + latency_svg([(v, lat["median_ms"]) for v, lat in timed]))


def latency_svg(bars: list[tuple[str, float]], width: int = 720) -> str:
    """Horizontal bars of median latency, on a log axis (the untuned model is often tens of
    times slower than the others), each labelled with its value."""
    left, right, top, row = 110, 90, 10, 28
    height = top + row * len(bars) + 45
    lo = 10 ** math.floor(math.log10(min(ms for _, ms in bars)))
    hi = 10 ** math.ceil(math.log10(max(ms for _, ms in bars)))
    hi = hi if hi > lo else lo * 10
    span = width - left - right

    def x(ms):
        return left + math.log10(ms / lo) / math.log10(hi / lo) * span

    parts = [f'<svg class="latency" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="end-to-end latency of each variant">']
    for i, (name, ms) in enumerate(bars):
        y = top + i * row
        colour = "#ff7f0e" if name == "pytorch" else "#1f77b4"
        parts.append(f'<text x="{left - 6}" y="{y + 17}" text-anchor="end" font-size="12">{_e(name)}</text>'
                     f'<rect class="bar" x="{left}" y="{y + 4}" width="{max(x(ms) - left, 1):.1f}" height="{row - 8}" '
                     f'fill="{colour}"><title>{_e(name)}: {fmt_ms(ms)}</title></rect>'
                     f'<text x="{x(ms) + 4:.1f}" y="{y + 17}" font-size="12">{fmt_ms(ms)}</text>')
    axis = top + row * len(bars)
    parts.append(f'<line x1="{left}" y1="{axis}" x2="{left + span}" y2="{axis}" stroke="#333"/>')
    for k in range(round(math.log10(hi / lo)) + 1):
        tick = lo * 10 ** k
        parts.append(f'<line x1="{x(tick):.1f}" y1="{axis}" x2="{x(tick):.1f}" y2="{axis + 4}" stroke="#333"/>'
                     f'<text x="{x(tick):.1f}" y="{axis + 16}" text-anchor="middle" font-size="11">{fmt_ms(tick)}</text>')
    parts.append(f'<text x="{left + span / 2}" y="{height - 6}" text-anchor="middle" font-size="12">'
                 "median latency, ms (log scale)</text></svg>")
    return "".join(parts)


def tasks_section(run: Run, db: str) -> str:
    """Per task: its share of the model's kernel time as a bar chart (the largest first), then
    a table in the model's order: source, where from, the records (linked), untuned and
    chosen kernel time, share."""
    if not run.tasks:
        return "<p>No task outcome kept (the run failed or was stopped before its end).</p>"
    shares = task_shares(run)
    counts = {}
    for t in run.tasks:
        counts[t.source] = counts.get(t.source, 0) + 1
    summary = ", ".join(f"{n} {_e(s)}" for s, n in counts.items())
    rows = []
    for t in run.tasks:
        speedup = t.untuned_us / t.chosen_us if t.untuned_us and t.chosen_us else None
        rows.append([_e(t.task), t.weight if t.weight is not None else "",
                     f"<span class='source' style='color:{COLOURS.get(t.source, '#000')}'>{_e(t.source)}</span>",
                     _e(t.source_model or ""), _record_links(t.source_record_id, db), _record_links(t.record_id, db),
                     _workload_link(t.workload_id), fmt_us(t.untuned_us), fmt_us(t.chosen_us),
                     "" if speedup is None else f"{speedup:.2f}x",
                     "" if shares.get(t.task) is None else f"{shares[t.task]:.1f}%"])
    head = ["task", "weight", "source", "from model", "source record", "chosen record", "workload",
            "untuned", "chosen", "speed-up", "share"]
    return (f"<p class='task-summary'>{len(run.tasks)} tasks: {summary}. Share: the task's weight x its chosen "
            "kernel time, of the sum over the tasks (the model's kernel time).</p>"
            + share_svg(run, shares) + _table(head, rows, "tasks"))


def task_shares(run: Run) -> dict[str, float]:
    """Each task's share of the model's kernel time, in percent: weight x chosen kernel time
    over the sum (tasks with no time left out)."""
    cost = {t.task: (t.weight or 1) * t.chosen_us for t in run.tasks if t.chosen_us}
    total = sum(cost.values())
    return {k: 100 * c / total for k, c in cost.items()} if total else {}


def share_svg(run: Run, shares: dict[str, float], width: int = 820) -> str:
    """The shares as horizontal bars, the largest first, coloured by the task's source."""
    if not shares:
        return ""
    source = {t.task: t.source for t in run.tasks}
    order = sorted(shares, key=lambda k: -shares[k])
    left, right, top, row = 260, 60, 30, 18
    span, height = width - left - right, top + row * len(order) + 45
    hi = max(10.0, math.ceil(max(shares.values()) / 10) * 10)

    def x(p):
        return left + p / hi * span

    parts = [f'<svg class="shares" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="share of the model\'s kernel time per task">']
    for i, s in enumerate(dict.fromkeys(source[k] for k in order)):  # legend
        parts.append(f'<rect x="{left + i * 100}" y="6" width="10" height="10" fill="{COLOURS.get(s, "#000")}"/>'
                     f'<text x="{left + i * 100 + 14}" y="15" font-size="11">{_e(s)}</text>')
    for i, name in enumerate(order):
        y, p = top + i * row, shares[name]
        short = name if len(name) <= 38 else name[:36] + "..."
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="11">{_e(short)}</text>'
                     f'<rect class="share" x="{left}" y="{y + 3}" width="{max(x(p) - left, 0.5):.1f}" '
                     f'height="{row - 5}" fill="{COLOURS.get(source[name], "#000")}">'
                     f"<title>{_e(name)} ({_e(source[name])}): {p:.1f}%</title></rect>"
                     f'<text x="{x(p) + 4:.1f}" y="{y + 13}" font-size="11">{p:.1f}%</text>')
    axis = top + row * len(order)
    parts.append(f'<line x1="{left}" y1="{axis}" x2="{left + span}" y2="{axis}" stroke="#333"/>')
    for tick in range(0, int(hi) + 1, int(hi) // 5):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{axis}" x2="{x(tick):.1f}" y2="{axis + 4}" stroke="#333"/>'
                     f'<text x="{x(tick):.1f}" y="{axis + 16}" text-anchor="middle" font-size="11">{tick}%</text>')
    parts.append(f'<text x="{left + span / 2}" y="{height - 6}" text-anchor="middle" font-size="12">'
                 "share of the model's kernel time (weight x chosen kernel time), %</text>"
                 f'<text x="12" y="{top + row * len(order) / 2}" font-size="12" '
                 f'transform="rotate(-90 12 {top + row * len(order) / 2})" text-anchor="middle">task</text></svg>')
    return "".join(parts)


def _record_links(record_id: int | None, db: str) -> str:
    if record_id is None:
        return ""
    return (f'<a class="record" href="/{db}/records/{record_id}">{record_id}</a> '
            f'(<a class="lineage" href="/{db}/lineage?record={record_id}">lineage</a>)')


def _workload_link(workload_id: int | None) -> str:
    if workload_id is None:
        return ""
    return f'<a class="workload" href="/-/schedb/chart?workload={workload_id}">{workload_id}</a>'


def _table(head: list[str], rows: list[list], cls: str = "runs") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table class='{cls}' border='1' cellpadding='4' style='border-collapse: collapse'>" \
           f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def fmt_us(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f} us" if value >= 100 else f"{value:.3g} us"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.3g} ms"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}x" if a and b else ""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))
