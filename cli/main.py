"""The ``schedb`` command: a thin click layer over the :mod:`schedb` library."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time

import click

from schedb.errors import SchedbError, printable
from schedb_cli.output import emit, emit_json, output_options, pick_format, print_table
from schedb_cli.params import Duration, duration_help, model_list


def handle_errors(f):
    """A failure is one clean line on stderr and exit status 1; the traceback only with
    SCHEDB_DEBUG=1."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            result = f(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return result
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`schedb sql ... | head -1`): no error line, no "Exception
            # ignored" at exit. (Python's documented way: stdout onto /dev/null.)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except Exception as e:
            if os.environ.get("SCHEDB_DEBUG") == "1":
                raise
            raise click.ClickException(error_line(e)) from None

    return wrapper


# Library messages name the parameters in backticks (`resume`); here they are the flags.
FLAGS = {"database": "--db", "resume": "--resume", "model": "--model", "workload_ids": "--workload",
         "input_shape": "--input-shape", "sources": "--sources", "exclude": "--exclude-model",
         "same_target_only": "--same-target-only", "force": "--force", "readonly=False": "--write",
         "trials": "--trials", "trials_per_task": "--trials-per-task", "trials_per_iter": "--trials-per-iter",
         "time_limit": "--time-limit", "pvalue": "--pvalue", "timeout": "--timeout", "tasks": "--tasks",
         "runner": "--runner"}


def as_flags(text: str) -> str:
    return re.sub(r"`([\w=]+)`", lambda m: FLAGS.get(m[1], m[0]), text)


def error_line(e: Exception) -> str:
    if isinstance(e, SchedbError):
        return printable(as_flags(str(e)))
    if isinstance(e, OSError) and e.strerror:
        return printable(f"{e.filename}: {e.strerror}" if e.filename else e.strerror)
    # Not foreseen (TVM's errors span many lines): one line, and how to see the rest.
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]} (SCHEDB_DEBUG=1 shows the traceback)"


def quiet_tvm():
    """MetaSchedule logs every batch at INFO to the console; keep that in its log files."""
    import logging

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


ROW_ID = click.IntRange(1, 2**63 - 1)  # an SQLite rowid


def check_first(model_spec: str | None = None, input_shape: str | None = None, target: str | None = None,
                report_path: str | None = None):
    """Fail fast: what the user named, checked before TVM or PyTorch is imported (seconds)
    and, for a report, before the run whose end writes it."""
    from pathlib import Path

    from schedb.spec import check_model_spec
    from schedb.tir.target import check_target

    if model_spec is not None:
        check_model_spec(model_spec, input_shape)
    check_target(target)
    if report_path is not None and not Path(report_path).absolute().parent.is_dir():
        raise click.BadParameter(f"{report_path}: no such folder {str(Path(report_path).parent)!r}",
                                 param_hint="'--report'")


class Reporter:
    """Progress on stderr, stamped with the seconds since the command started. On a terminal
    a rich status line shows the phase in flight; otherwise (a log file) plain lines, never
    wrapped, with each phase's start and end and a heartbeat every HEARTBEAT_S seconds
    (tvm.compile of a model is a minute of silence otherwise)."""

    HEARTBEAT_S = 3.0  # no phase silent for longer, in a log file too

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True, soft_wrap=True, highlight=False)
        self.t0 = time.perf_counter()
        self._stop = None

    def line(self, text: str):
        self.console.print(f"[{time.perf_counter() - self.t0:7.1f}s] {text}", markup=False)

    def phase(self, name: str, event: str, seconds: float):
        """A schedb.pipeline.phases callback."""
        if event != "start":
            self._stop.set()
            self._thread.join()
            if event == "end":  # a failure is told by the error line that follows
                self.line(f"{name}: done in {seconds:.1f} s")
            return
        self.line(f"{name} ...")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(name, time.perf_counter(), self._stop), daemon=True)
        self._thread.start()

    def _beat(self, name, started, stop):
        if self.console.is_terminal:
            with self.console.status(name) as status:
                while not stop.wait(1.0):
                    status.update(f"{name} ({time.perf_counter() - started:.0f} s)")
        else:
            while not stop.wait(self.HEARTBEAT_S):
                self.line(f"{name}: still running, {time.perf_counter() - started:.0f} s")


model_option = click.option(
    "--model", "-m", "model_spec", required=True,
    help="Zoo name, model.onnx, program.pt2, file.py:factory or package.module:factory.",
)
shape_option = click.option("--input-shape", default=None, help="e.g. 1,3,224,224 (several: ';').")
params_option = click.option(
    "--params-as-inputs", is_flag=True,
    help="Keep the weights as runtime inputs (default: bound as constants and folded, an inference build).")
target_option = click.option(
    "--target", default=None,
    help='TVM target: JSON/dict form or shorthand ("llvm -mcpu=skylake-avx512"). Default: this host.',
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="schedb")
def cli():
    """schedb: a schedule database for Apache TVM."""


@cli.command()
@click.option("--tasks/--no-tasks", default=False, show_default=True,
              help="Count each model's tasks (imports and lowers every model: minutes).")
@click.option("--json", "as_json", is_flag=True, help="Print the zoo as JSON: one object per model.")
@handle_errors
def models(tasks, as_json):
    """The model zoo (with task counts: --tasks)."""
    from schedb.models import load_model
    from schedb.models.zoo import ZOO
    from schedb.pipeline.phases import phase
    from schedb.tir.target import parse_target
    from schedb.tir.tasks import extract_tasks, lower

    report = Reporter() if tasks else None
    target = parse_target(None) if tasks else None
    rows = []
    for name, entry in ZOO.items():
        n = None
        if tasks:
            with phase(report.phase, f"counting the tasks of {name}"):
                n = len(extract_tasks(lower(load_model(name), target), target))
        rows.append({"model": name, "input_shapes": [list(s) for s in entry.input_shapes], "parameters": entry.params,
                     "tasks": n, "description": entry.description})
    if as_json:
        emit_json(rows)
        return
    print_table(["model", "input", "parameters", "tasks", "description"],
                [[r["model"], ";".join(",".join(map(str, s)) for s in r["input_shapes"]), f"{r['parameters']:,}",
                  r["tasks"], r["description"]] for r in rows])


@cli.command()
@model_option
@shape_option
@target_option
@click.option("--trials", type=int, default=None, help="Global trial budget (default: per-task x tasks).")
@click.option("--trials-per-task", type=int, default=32, show_default=True, help="Trials per task.")
@click.option("--trials-per-iter", type=int, default=32, show_default=True,
              help="Candidates per measured batch.")
@click.option("--time-limit", type=Duration("s", zero=True), default=None,
              help=duration_help("Stop after this long (the batches in flight finish). With a global --trials below "
                                 "the per-task budgets, MetaSchedule's gradient scheduler picks the tasks and looks at "
                                 "the clock only after every task has had its first batch.", "s"))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the search.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Work dir to write.")
@click.option("--db", "db_path", default=None, type=click.Path(dir_okay=False),
              help="Tune into this schedb database: its records of the model's workloads (transferred ones "
                   "too) seed the search; at the end each task's best records and its untuned kernel run side "
                   "by side and the fastest is what the database serves. Default: the work dir's JSON files.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out: its trials count against the budget, its records seed the search.")
@click.option("--tasks", "task_spec", default=None,
              help="Tune only these tasks: name patterns (fnmatch, comma-separated), or i/n, the i-th of n "
                   "shards of about equal estimated cost (the same split on every machine: n machines tune "
                   "disjoint parts, and one `schedb ingest` of their work dirs brings them together).")
@click.option("--runner", default="local", show_default=True,
              help="local, or rpc://host:port/key: measure on the servers a TVM RPC tracker has for the key, "
                   "one candidate per server at a time; builds stay on this machine.")
@params_option
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@handle_errors
def tune(model_spec, input_shape, target, trials, trials_per_task, trials_per_iter, time_limit, seed, out,
         db_path, resume, task_spec, runner, params_as_inputs, as_json):
    """Tune every task of a model with MetaSchedule into a standard work dir."""
    from schedb.pipeline.phases import phase

    check_first(model_spec, input_shape, target)
    report = Reporter()
    with phase(report.phase, "loading TVM and PyTorch"):  # seconds of imports, the first thing a user waits for
        from schedb.models import load_model
        from schedb.pipeline.tune import TuneBudget, tune as run_tune
        from schedb.tir.target import parse_target

        target = parse_target(target)
    quiet_tvm()
    with phase(report.phase, "importing the model"):
        model = load_model(model_spec, input_shape)
    last = [0.0]

    def progress(task, done, total, best, finished, n):
        now = time.perf_counter()
        if now - last[0] < 1.0 and done < total:
            return
        last[0] = now
        best_s = f"{best * 1e6:.1f} us" if best != float("inf") else "-"
        report.line(f"tasks {finished}/{n}  trials {done}/{total}  {task}: best {best_s}")

    budget = TuneBudget(trials, trials_per_task, trials_per_iter, time_limit)
    meta = run_tune(model, target, out, budget, seed=seed, progress=progress, bind_params=not params_as_inputs,
                    resume=resume, database=db_path, on_phase=report.phase, tasks=task_spec, runner=runner)
    if as_json:
        emit_json(meta)
        return
    of = f" of {meta['task_selection']['of']}" if "task_selection" in meta else ""
    click.echo(f"tuned {model.name}: {len(meta['tasks'])}{of} tasks, {meta['measured']} of {meta['trials']} "
               f"trials, {meta['wall_time_s']} s -> {out}")
    if meta["runner_retries"]:
        click.echo(f"note: {len(meta['runner_retries'])} candidates ran again after a failed RPC session", err=True)
    if "choices" in meta:
        c = meta["choices"]
        click.echo(f"chose each task's schedule side by side: {c['measured_tasks']} tasks measured, "
                   f"{c['untuned']} keep the untuned kernel ({c['wall_s']} s) -> {db_path}")


@cli.command()
@model_option
@shape_option
@target_option
@click.option("--logs", type=click.Path(exists=True), default=None,
              help="MetaSchedule work dir or schedb database with schedules (default: untuned).")
@click.option("--repeat", type=int, default=10, show_default=True, help="Timed runs of each.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@params_option
@handle_errors
def bench(model_spec, input_shape, target, logs, repeat, as_json, params_as_inputs):
    """Compile a model, check it against PyTorch, time it next to PyTorch eager."""
    from pathlib import Path

    check_first(model_spec, input_shape, target)
    from schedb.pipeline.phases import phase

    report = Reporter()
    with phase(report.phase, "loading TVM and PyTorch"):
        from schedb.ingest.workdir import tuned_with_bound_params
        from schedb.models import load_model
        from schedb.pipeline.evaluate import compile_model, open_schedules, time_torch, time_vm
        from schedb.tir.target import canonical, parse_target
        from schedb.tir.tasks import lower

        target = parse_target(target)
    quiet_tvm()
    bind = not params_as_inputs
    if bind and logs and tuned_with_bound_params(Path(logs)) is False:
        # The work dir's kernels take the weights as inputs: compile the same way, or few match.
        click.echo(f"note: {logs} was tuned with the weights as runtime inputs: compiling the same way", err=True)
        bind = False
    with phase(report.phase, "importing and lowering the model"):
        lowered = lower(load_model(model_spec, input_shape), target, bind_params=bind)
    with phase(report.phase, "compiling"):
        database = open_schedules(logs, target) if logs else None
        compiled = compile_model(lowered, target, database)
    with phase(report.phase, f"timing TVM and PyTorch, {repeat} runs each"):
        tvm_lat = time_vm(compiled, lowered, repeat=repeat)
        torch_lat = time_torch(lowered, repeat=repeat)
    result = {
        "model": lowered.model.name,
        "target": json.loads(canonical(target)),
        "schedules": logs,
        **compiled.as_dict(),
        "tvm": tvm_lat.as_dict(),
        "pytorch": torch_lat.as_dict() if torch_lat else None,
    }
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"model      {result['model']}  ({compiled.tuned_tasks} kernels from {logs or 'no schedules'})")
    click.echo(f"check      max abs error {compiled.max_abs_err:.2e} vs the framework: ok")
    lo, hi = tvm_lat.spread
    click.echo(f"tvm        {tvm_lat.median:9.2f} ms  (IQR {lo:.2f}-{hi:.2f}, {repeat} runs)")
    if torch_lat:
        lo, hi = torch_lat.spread
        click.echo(f"pytorch    {torch_lat.median:9.2f} ms  (IQR {lo:.2f}-{hi:.2f}, eager)")


same_target_option = click.option(
    "--same-target-only", is_flag=True,
    help="Use only records tuned for this very target (default: every target of its kind, closest first).")
db_option = click.option(
    "--db", "db_path", default=None, type=click.Path(dir_okay=False),
    help="Database file (default: $SCHEDB_DB or ./schedb.db).",
)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--model", default=None, help="Model name for logs that do not say (default: folder / file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def ingest(paths, db_path, model, as_json):
    """Ingest tuning logs: MetaSchedule work dirs, Ansor logs, schedb databases."""
    from schedb.pipeline.phases import phase

    progress = Reporter()
    # One phase around it all: loading TVM and the first big file say nothing otherwise.
    with phase(progress.phase, "ingesting"):
        from schedb.ingest import ingest_into

        quiet_tvm()
        report, path = ingest_into(db_path, paths, model=model, on_file=lambda f, r: progress.line(
            printable(f"{f}: {_n(r.files, 'file')}, {_n(r.new_records, 'new record')} so far")))
    report.warnings = [printable(w) for w in report.warnings]  # file names of any bytes
    report.errors = [printable(e) for e in report.errors]
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    for e in report.errors:
        click.echo(f"error: {e}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    else:
        r = report
        invalid = _n(r.invalid, "invalid measurement")
        if r.invalid:  # stored, never chosen: say what they are
            invalid += (" (Ansor error records: build or run failures)" if r.invalid_ansor == r.invalid else
                        " (build or run failures" + (f", {r.invalid_ansor} of them Ansor error records"
                                                     if r.invalid_ansor else "") + ")")
        click.echo(
            f"{_n(r.files, 'file')} ingested ({r.already} already in the database), "
            f"{_n(r.new_workloads, 'new workload')}, {_n(r.new_records, 'new record')}, "
            f"{_n(r.duplicates, 'duplicate')}, {invalid}, "
            + (f"{_n(r.choices, 'standing choice')}, " if r.choices else "")
            + f"{_n(r.skipped_lines, 'line')} skipped, {_n(len(r.errors), 'file')} rejected"
            f" -> {path if path.exists() else 'no database written'}"
        )
    if report.rejected:
        sys.exit(1)


@cli.command()
@click.argument("query")
@db_option
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A named parameter of the query, :NAME (repeatable).")
@output_options
@click.option("--write", is_flag=True, help="Allow statements that change the database.")
@click.option("--timeout", type=Duration("s", zero=True), default="60s", show_default=True,
              help=duration_help("Stop the query after this long (0: never).", "s"))
@handle_errors
def sql(query, db_path, params, write, timeout, json_cols, **fmt_flags):
    """Run SQL against the database (read-only unless --write); QUERY "-" reads it from stdin."""
    from schedb.store import Store

    fmt = pick_format({**fmt_flags, "json_cols": json_cols})
    if query == "-":
        query = sys.stdin.read()
    cols, rows = Store(db_path, readonly=not write).query(query, dict(params), timeout=timeout or None)
    emit(cols, rows, fmt, json_cols)


@cli.group()
def show():
    """Show one workload or record in full."""


@show.command("workload")
@click.argument("workload_id", type=ROW_ID)
@db_option
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON (description parsed, no TIR).")
@handle_errors
def show_workload(workload_id, db_path, as_json):
    """A workload: its summary (models, best record, record count) and its TIR as TVM script."""
    from schedb.store import Store
    from schedb.store.records import workload_details

    store = Store(db_path, readonly=True)
    if as_json:
        click.echo(json.dumps(store.workloads.summary(workload_id), indent=1))
        return
    w = workload_details(store, workload_id)
    best = w["best"]
    print_grid([
        ("workload", w["id"], "kind", w["kind"]),
        ("shapes", w["shapes"], "dtypes", w["dtypes"]),
        ("models", ", ".join(w["models"]) or "-", "records", w["records"]),
        ("best", f"record {best['id']}: {best['mean_s'] * 1e6:.2f} us ({best['origin']})" if best else "-",
         "tvm", w["tvm_version"]),
        ("signature", w["signature"], "legacy key", w["legacy_key"] or "-"),
    ])
    click.echo(w["script"] if w["script"] else "(a legacy Ansor workload: no TIR stored)")


@show.command("record")
@click.argument("record_id", type=ROW_ID)
@db_option
@click.option("--json", "as_json", is_flag=True, help="The stored row as JSON: trace, run times, target parsed.")
@click.option("--full", is_flag=True, help="The whole trace, the postprocessing part too.")
@handle_errors
def show_record(record_id, db_path, as_json, full):
    """A record: where it came from, as a table, and its schedule in TVM's Python form."""
    from schedb.store import Store
    from schedb.store.records import record_details
    from schedb.tir.target import label

    from schedb.pipeline.phases import phase

    store = Store(db_path, readonly=True)
    if as_json:
        d = record_details(store, record_id, script=False)
    else:  # TVM renders the schedule: seconds to load
        with phase(Reporter().phase, "loading TVM to render the schedule"):
            d = record_details(store, record_id, script=True)
    if d is None:
        raise SchedbError(f"no record {record_id}")
    r, lin = d["row"], d["lineage"]
    if as_json:
        for k in ("trace", "run_secs", "args_info", "target"):
            r[k] = json.loads(r[k]) if r[k] else None
        click.echo(json.dumps(r, indent=1))
        return
    samples = json.loads(r["run_secs"]) if r["run_secs"] else []
    print_grid([
        ("record", r["id"], "workload", f"{r['workload_id']} ({lin['kind']})"),
        ("origin", r["origin"], "mean", f"{r['mean_s'] * 1e6:.2f} us over {len(samples)} run{'s' * (len(samples) != 1)}"
         if r["valid"] else f"invalid: {r['error']}"),
        ("target", label(r["target"]), "model", lin["model"] or "-"),
        ("file", f"{printable(lin['file'])}:{r['line']}" if lin["file"] else "-", "parent", r["parent_id"] or "-"),
        ("from workload", "-" if r["source_workload_id"] is None else
         f"{r['source_workload_id']} (distance {r['distance']:.3f})", "created", r["created_at"]),
        ("tvm", r["tvm_version"], "digest", r["digest"]),
    ])
    if d["script"] is None:
        click.echo(f"note: {d['script_note']}")
        insts, decisions = json.loads(r["trace"]) if r["format"] == "ms-trace" else (json.loads(r["trace"]), None)
        for inst in insts:
            click.echo(json.dumps(inst))
        if decisions is not None:
            click.echo(f"decisions: {json.dumps(decisions)}")
        return
    lines = d["script"].splitlines()
    cut = next((i for i, x in enumerate(lines) if x.strip() == "sch.enter_postproc()"), len(lines))
    if full or cut == len(lines):
        click.echo(d["script"])
    else:
        click.echo("\n".join(lines[:cut]))
        click.echo(f"  # then {len(lines) - cut} postprocessing instructions, re-derived for each CPU (--full)")


def print_grid(rows):
    """Label / value pairs, two per line."""
    from rich.console import Console
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    for _ in range(2):
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
    for row in rows:
        grid.add_row(*["-" if v is None else str(v) for v in row])
    Console(width=200, highlight=False).print(grid)


@cli.command()
@click.argument("record_id", type=ROW_ID)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the chain as JSON: one object per record.")
@handle_errors
def provenance(record_id, db_path, as_json):
    """The chain from a record back to the original log line."""
    from schedb.store import Store

    chain = Store(db_path, readonly=True).records.lineage(record_id)
    if not chain:
        raise SchedbError(f"no record {record_id}")
    cols = ["depth", "id", "origin", "workload_id", "kind", "mean_s", "model", "file", "line",
            "source_workload_id", "distance", "created_at"]
    rows = [[printable(r[c]) if c == "file" and r[c] is not None else r[c] for c in cols] for r in chain]
    if as_json:
        emit_json([dict(zip(cols, row)) for row in rows])
    else:
        print_table(cols, rows, overflow="fold")  # never cut the file path
    if chain[-1]["parent_id"] is not None:
        click.echo(f"note: record {chain[-1]['id']}'s parent {chain[-1]['parent_id']} is already in the chain: "
                   "the lineage loops (a damaged database); stopped there", err=True)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@db_option
@click.option("--format", "fmt", type=click.Choice(["metaschedule"]), default="metaschedule",
              show_default=True, help="Work dir format (JSONDatabase's).")
@click.option("--model", default=None, help="Only the workloads of this model.")
@click.option("--target", default=None, help="Only records tuned for this target (default: every target).")
@click.option("--force", is_flag=True, help="Replace FOLDER if it is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@handle_errors
def export(folder, db_path, fmt, model, target, force, as_json):
    """Write the database's schedules as a standard MetaSchedule work dir."""
    from schedb.store import Store
    from schedb.tir.target import canonical, parse_target
    from schedb.ingest.workdir import export_workdir

    target_key = canonical(parse_target(target)) if target else None
    n_wl, n_rec, bad = export_workdir(Store(db_path, readonly=True), folder, model=model, target=target_key,
                                      force=force)
    if as_json:
        emit_json({"folder": folder, "workloads": n_wl, "records": n_rec, "left_out": bad})
        return
    click.echo(f"wrote {_n(n_wl, 'workload')}, {_n(n_rec, 'record')} -> {folder}")
    if bad:
        click.echo(f"left out {len(bad)} records whose trace or run times do not parse "
                   f"(ids {', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''})", err=True)


@cli.command()
@model_option
@shape_option
@target_option
@db_option
@click.option("-k", type=int, default=5, show_default=True, help="Nearest workloads per task.")
@click.option("--exclude-model", multiple=True, callback=model_list,
              help="Never return workloads only these models tuned (repeatable, or comma-separated).")
@same_target_option
@params_option
@click.option("--json", "as_json", is_flag=True, help="Print the neighbours as JSON: one object per task.")
@handle_errors
def neighbors(model_spec, input_shape, target, db_path, k, exclude_model, same_target_only, params_as_inputs,
              as_json):
    """For every task of a model, the nearest tuned workloads in the database."""
    from schedb.pipeline.phases import phase
    from schedb.store import Store

    check_first(model_spec, input_shape, target)
    store = Store(db_path, readonly=True)
    report = Reporter()
    with phase(report.phase, "loading TVM and PyTorch"):
        from schedb.models import load_model
        from schedb.pipeline.neighbors import neighbors as find_neighbors
        from schedb.tir.target import canonical, label, parse_target

        target = parse_target(target)
    with phase(report.phase, "importing the model"):
        model = load_model(model_spec, input_shape)
    note, found = find_neighbors(store, model, target, k, exclude_model, same_target_only, not params_as_inputs,
                                 on_phase=report.phase)
    if note:
        click.echo(f"note: {as_flags(note)}", err=True)
    target_key = canonical(target)
    if as_json:
        emit_json([{"task": t.task, "kind": t.kind, "neighbors": [
            {"rank": i + 1, "workload_id": nb.workload_id, "distance": nb.distance, "exact": exact,
             "models": nb.models, "target": json.loads(nb.target) if nb.target else None,
             "same_target": nb.target == target_key}
            for i, (nb, exact) in enumerate(zip(t.neighbors, t.exact))]} for t in found])
        return
    rows = []
    for t in found:
        if not t.neighbors:
            rows.append([t.task, t.kind, "-", "-", "-", "-", "-"])
        for i, (nb, exact) in enumerate(zip(t.neighbors, t.exact)):
            rows.append([t.task if i == 0 else "", t.kind if i == 0 else "", nb.workload_id,
                         f"{nb.distance:.3f}" + (" (exact)" if exact else ""), ",".join(nb.models),
                         "this" if nb.target == target_key else label(nb.target), i + 1])
    print_table(["task", "kind", "workload", "distance", "models", "tuned for", "rank"], rows)


@cli.command()
@model_option
@shape_option
@target_option
@db_option
@click.option("--source", "--sources", "sources", multiple=True, callback=model_list,
              help="Use only schedules of these models (repeatable, or comma-separated; default: every model).")
@click.option("--exclude-model", multiple=True, callback=model_list,
              help="Never use schedules of these models (repeatable, or comma-separated).")
@click.option("-k", type=int, default=3, show_default=True, help="Nearest workloads per task.")
@click.option("--droplet/--no-droplet", default=False, show_default=True, help="Refine winners by droplet search.")
@click.option("--droplet-trials", type=int, default=16, show_default=True,
              help="Droplet measurements per task on average: one budget for all, spent where the latency is.")
@click.option("--droplet-share", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Droplet's time at most this share of the search time before it.")
@click.option("--search-trials", type=int, default=8, show_default=True,
              help="Schedules sampled from MetaSchedule's design space for a task nothing transfers to (0: none).")
@click.option("--adapt-isa/--no-adapt-isa", default=True, show_default=True,
              help="Also replay records of another vector ISA (e.g. AVX-512 on an AVX2 CPU) adapted to this "
                   "one's lanes and registers, measured beside them as tuned.")
@click.option("--native-trials", type=click.IntRange(min=0), default=16, show_default=True,
              help="MetaSchedule trials per task whose schedule came from another vector ISA, warm-started "
                   "from it (0: none).")
@click.option("--native-budget", type=Duration("m", zero=True), default="5m", show_default=True,
              help=duration_help("Time for that search when all of the model's latency is of another ISA; scaled "
                                 "by the share it is (under 30 s: skipped).", "m"))
@click.option("--native-per-iter", type=click.IntRange(min=1), default=8, show_default=True,
              help="Candidates per batch of that search: larger batches measure more in the same time, since "
                   "proposing a batch takes most of it.")
@click.option("--trials", type=int, default=None, help="Cap on measured candidates in all.")
@click.option("--budget", type=Duration("m"), default=None, help=duration_help("Cap on search time.", "m"))
@click.option("--e2e-repeat", type=click.IntRange(min=0), default=10, show_default=True,
              help="Rounds of the end-to-end timing, the model and PyTorch interleaved (an untuned model over "
                   "10x slower than the rest: 3 of them; 0: compile and check the model, time nothing).")
@click.option("--runner", default="local", show_default=True, help="local or rpc://host:port/key")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@same_target_option
@params_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (what --report writes).")
@handle_errors
def transfer(model_spec, input_shape, target, db_path, sources, exclude_model, k, droplet, droplet_trials,
             droplet_share, trials, budget, e2e_repeat, runner, report_path, same_target_only, params_as_inputs,
             search_trials, adapt_isa, native_trials, native_budget, native_per_iter, as_json):
    """Transfer-tune a model from the schedules in the database."""
    from schedb.pipeline.phases import phase
    from schedb.store import Store

    check_first(model_spec, input_shape, target, report_path)
    store = Store(db_path)
    report = Reporter()
    with phase(report.phase, "loading TVM and PyTorch"):  # seconds of imports, the first thing a user waits for
        from schedb.models import load_model
        from schedb.pipeline.native import NativeOptions
        from schedb.pipeline.transfer import Options, transfer as run_transfer
        from schedb.tir.target import parse_target

        target = parse_target(target)
    quiet_tvm()
    opts = Options(k=k, sources=sources or None, exclude=exclude_model,
                   droplet=droplet, droplet_trials=droplet_trials, droplet_share=droplet_share, trials=trials,
                   budget_s=budget, runner=runner,
                   same_target_only=same_target_only, bind_params=not params_as_inputs,
                   search_trials=search_trials, e2e_repeat=e2e_repeat, adapt_isa=adapt_isa,
                   native=NativeOptions(trials=native_trials, budget_s=native_budget,
                                         trials_per_iter=native_per_iter))

    def progress(done, total, r):
        best = r.refined_us or r.transferred_us
        report.line(f"task {done}/{total} {r.task}: {r.source}"
                    + (f" {r.untuned_us:.1f} -> {best:.1f} us" if best and r.untuned_us else
                       f" ({as_flags(r.reason)})" if r.reason else ""))

    with phase(report.phase, "importing the model"):
        model = load_model(model_spec, input_shape)
    rep = run_transfer(store, model, target, opts, progress, on_phase=report.phase)
    if _notes_and_report(report, rep, report_path, as_json):
        return
    cols = ["task", "weight", "source", "from", "distance", "untuned_us", "transferred_us", "refined_us"]
    rows = [[r.task, r.weight, r.source, _source(r, rep.target) or as_flags(r.reason or ""),
             "" if r.distance is None else f"{r.distance:.2f}",
             _fmt(r.untuned_us), _fmt(r.transferred_us), _fmt(r.refined_us)] for r in rep.tasks]
    if droplet:
        cols += ["droplet trials", "p", "gain"]
        for row, r in zip(rows, rep.tasks):
            gain = "" if r.refined_accepted is None else f"{r.droplet_speedup:.2f}x" if r.refined_accepted else "kept"
            row += [r.droplet_trials or "", _p(r.refined_pvalue), gain]
    print_table(cols, rows)
    counts = {s: sum(r.source == s for r in rep.tasks) for s in ("exact", "neighbor", "anchor", "searched", "untuned")}
    click.echo(f"tasks: {counts['exact']} exact, {counts['neighbor']} transferred, "
               f"{counts['anchor']} through their anchor block, {counts['searched']} searched, "
               f"{counts['untuned']} untuned; {rep.measured} candidates measured")
    if rep.isa:
        click.echo(isa_line(rep.isa, len(rep.tasks)))
    click.echo(f"search {rep.search_wall_s:.1f} s wall, lowering to the final model compiled "
               f"(of which the task search and droplet {rep.search_time_s:.1f} s"
               + ("" if rep.droplet_wall_s is None else f", droplet alone {rep.droplet_wall_s:.1f} s") + ")")
    if rep.e2e_wall_s is None:
        click.echo("end-to-end timing skipped (--e2e-repeat 0)")
    else:
        _print_e2e(rep)


@cli.command()
@model_option
@shape_option
@target_option
@db_option
@click.option("--budget", type=Duration("m"), required=True,
              help=duration_help("Time for the whole step: transfer, tuning and the final timing.", "m"))
@click.option("--transfer-share", type=click.FloatRange(0, 1, min_open=True), default=0.4, show_default=True,
              help="Share of the budget the transfer (droplet included) may take.")
@click.option("--latency-share", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True,
              help="Tune the heaviest tasks until they cover this share of the estimated latency.")
@click.option("--by-latency", is_flag=True,
              help="Give each tuning batch to the task with the largest share of the latency so far (halved per "
                   "batch since it last improved), not to the tasks in turn.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@params_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (what --report writes).")
@handle_errors
def fast(model_spec, input_shape, target, db_path, budget, transfer_share, latency_share, by_latency, report_path,
         params_as_inputs, as_json):
    """The fastest model a time budget buys: transfer, tune the heaviest tasks, choose, time."""
    from schedb.pipeline.phases import phase
    from schedb.store import Store

    check_first(model_spec, input_shape, target, report_path)
    store = Store(db_path)
    report = Reporter()
    with phase(report.phase, "loading TVM and PyTorch"):
        from schedb.models import load_model
        from schedb.pipeline.fast import FastOptions, fast as run_fast
        from schedb.tir.target import parse_target

        target = parse_target(target)
    quiet_tvm()
    opts = FastOptions(budget, transfer_share, latency_share, by_latency=by_latency,
                       bind_params=not params_as_inputs)
    with phase(report.phase, "importing the model"):
        model = load_model(model_spec, input_shape)
    rep = run_fast(store, model, target, opts,
                   lambda done, total, r: report.line(f"task {done}/{total} {r.task}: {r.source}"), report.phase)
    if _notes_and_report(report, rep, report_path, as_json):
        return
    counts = {s: sum(r.source == s for r in rep.transfer.tasks) for s in ("exact", "neighbor", "anchor", "untuned")}
    click.echo(f"transfer: {counts['exact']} exact, {counts['neighbor']} neighbour, {counts['anchor']} anchor, "
               f"{counts['untuned']} untuned of {len(rep.transfer.tasks)} tasks, {rep.transfer.search_wall_s:.0f} s")
    click.echo(f"tuned {len(rep.tuned_tasks)} heaviest tasks for {rep.tune_wall_s:.0f} s; {rep.wall_s:.0f} s in all")
    for name in ("final", "pytorch"):
        lat = rep.e2e.get(name)
        if lat:
            click.echo(f"{name:8s} {lat['median_ms']:9.2f} ms  (IQR {lat['p25_ms']:.2f}-{lat['p75_ms']:.2f})")


def _print_e2e(rep) -> None:
    """The end-to-end timing of a transfer report: latencies, speed-up, load around it."""
    click.echo(f"end-to-end timing {rep.e2e_wall_s:.1f} s (the other variants compiled, all timed)")
    for name in ("untuned", "unadapted", "transferred", "refined", "native", "pytorch"):
        lat = rep.e2e.get(name)
        if lat:
            click.echo(f"{name:12s} {lat['median_ms']:9.2f} ms  (IQR {lat['p25_ms']:.2f}-{lat['p75_ms']:.2f})")
    u = rep.e2e["untuned"]["median_ms"]
    click.echo("speed-up over untuned: " + ", ".join(f"{u / rep.e2e[n]['median_ms']:.2f}x ({n})" for n in
                                                     ("unadapted", "transferred", "refined", "native") if n in rep.e2e))
    load = rep.load_average
    click.echo(f"load average (1 min) {load['before'][0]:.2f} before timing, {load['after'][0]:.2f} after")


@cli.command()
@click.option("--model", "-m", "model_name", default=None, help="Refine the workloads of this stored model.")
@click.option("--workload", "workload_ids", type=int, multiple=True, help="Refine this workload (repeatable).")
@target_option
@db_option
@click.option("--trials", type=int, default=32, show_default=True,
              help="Measurements per workload on average: one budget for all, spent where the time is.")
@click.option("--budget", type=Duration("m"), default=None, help=duration_help("Cap on search time.", "m"))
@click.option("--starts", type=int, default=3, show_default=True, help="Start from this many best records.")
@click.option("--pvalue", type=float, default=0.05, show_default=True, help="t-test threshold for a move.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the search.")
@click.option("--save-path", is_flag=True, help="Store every measured point of the search.")
@click.option("--runner", default="local", show_default=True, help="local or rpc://host:port/key")
@same_target_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON: one object per workload.")
@handle_errors
def droplet(model_name, workload_ids, target, db_path, trials, budget, starts, pvalue, seed, save_path, runner,
            same_target_only, as_json):
    """Refine stored schedules by droplet search; commit improvements."""
    from schedb.store import Store

    from schedb.pipeline.phases import phase
    from schedb.pipeline.refine import refine_stored, workloads_to_refine

    check_first(target=target)
    store = Store(db_path)
    weights = workloads_to_refine(store, model_name, workload_ids)  # a wrong model name: before TVM loads
    report = Reporter()
    with phase(report.phase, "loading TVM"):
        from schedb.search.measure import Engine
        from schedb.tir.target import canonical, load_intrinsics, max_distance, parse_target

        target = parse_target(target)
        load_intrinsics(target)
    quiet_tvm()
    note = store.records.coverage_note(canonical(target), same_target_only)
    if note:
        click.echo(f"note: {as_flags(note)}", err=True)
    with phase(report.phase, f"droplet search on {len(weights)} workloads"):
        done = refine_stored(store, weights, target, Engine(target, runner=runner), trials=trials, starts=starts,
                             pvalue=pvalue, seed=seed, save_path=save_path, budget_s=budget,
                             max_distance=max_distance(same_target_only), model=model_name)
    if not done:
        raise SchedbError(f"nothing to refine: none of the {len(weights)} workloads has a MetaSchedule record "
                          "usable for this target")
    if as_json:
        from dataclasses import asdict

        emit_json([asdict(r) for r in done])
        return
    print_table(["workload", "kind", "weight", "start_us", "refined_us", "gain", "trials", "failed", "p",
                 "accepted", "record"],
                [[r.workload_id, r.kind, r.weight, _fmt(r.start_us), _fmt(r.best_us),
                  "" if r.speedup is None else f"{r.speedup:.2f}x",
                  r.trials, r.failed, _p(r.pvalue), "yes" if r.accepted else "no", r.record_id or ""]
                 for r in done])
    click.echo(f"{sum(r.accepted for r in done)} of {len(done)} workloads improved (p <= {pvalue}); "
               f"{sum(r.trials for r in done)} trials of {trials * len(weights)}")


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8001, show_default=True, help="Port to listen on.")
@handle_errors
def browse(db_path, host, port):
    """Browse the database in a web browser (datasette, read-only): provenance queries, search charts, runs."""
    try:
        import datasette  # noqa: F401 - an optional dependency: the `browse` extra
    except ImportError:
        raise SchedbError("schedb browse needs datasette: pip install 'schedb[browse]' "
                          "(or, in a clone, pip install -e '.[browse]')") from None
    from schedb_cli.browse import serve
    from schedb.store import default_path

    serve(db_path or default_path(), host=host, port=port)



def _notes_and_report(report, rep, report_path, as_json: bool) -> bool:
    """A run's notes on the console, its report written to --report; True when --json printed it."""
    for note in rep.notes:
        report.console.print(f"note: {as_flags(note)}", markup=False)
    if report_path:
        with open(report_path, "w") as f:
            json.dump(rep.as_dict(), f, indent=1)
    if as_json:
        emit_json(rep.as_dict())
    return as_json


def isa_line(isa: dict, n_tasks: int) -> str:
    """One line on the tasks that ran on records of another vector ISA (TransferReport.isa)."""
    text = (f"other vector ISA: {isa['tasks']} of {n_tasks} tasks use records of {', '.join(isa['sources'])} "
            f"on this {isa['host']} CPU; adapted schedules tried on {isa['adapted_tried']}, won on "
            f"{isa['adapted_won']}")
    if isa.get("adapting_gain"):
        text += f", {isa['adapting_gain']:.2f}x over them as tuned (weight x kernel time)"
    native = isa.get("native")
    if native:
        text += (f"; native search on {len(native['tasks'])} tasks ({native['share']:.0%} of the latency), "
                 f"{native['wall_s']:.0f} s" + (f", {native['gain']:.2f}x" if native.get("gain") else ""))
    return text


@cli.command()
@click.argument("run_id", type=ROW_ID, required=False)
@db_option
@click.option("--model", default=None, help="Only runs of this model.")
@click.option("--kind", type=click.Choice(["transfer", "tune", "droplet", "fast"]), default=None,
              help="Only runs of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs (or the run, with its tasks) as JSON.")
@handle_errors
def runs(run_id, db_path, model, kind, as_json):
    """The transfer, tune, droplet and fast runs, newest first; with RUN_ID, one run task by task."""
    from schedb.store import Store

    store = Store(db_path, readonly=True)
    if run_id is None:
        found = store.runs.list(model=model, kind=kind)
        if as_json:
            click.echo(json.dumps([r.as_json() for r in found], indent=1))
            return
        print_table(["id", "kind", "model", "status", "started", "took_s", "cpu", "tasks", "records",
                     "untuned_ms", "tvm_ms", "pytorch_ms", "tvm/pytorch"],
                    [[r.id, r.kind, r.model, r.status, r.started_at, _took(r), _cpu(r.target), r.n_tasks, r.records,
                      _fmt2(r.untuned_ms), _fmt2(r.tvm_ms), _fmt2(r.pytorch_ms),
                      f"{r.tvm_ms / r.pytorch_ms:.3g}x" if r.tvm_ms and r.pytorch_ms else ""] for r in found])
        return
    run = store.runs.get(run_id)
    if run is None:
        raise SchedbError(f"no run {run_id} in {store.path}")
    if as_json:
        click.echo(json.dumps(run.as_json(), indent=1))
        return
    click.echo(f"run {run.id}: {run.kind} {run.model or ''} on {_cpu(run.target)}, {run.status}"
               f" ({run.started_at} to {run.finished_at or '-'}){': ' + run.error if run.error else ''}")
    print_table(["task", "weight", "source", "from", "source_record", "record", "untuned_us", "chosen_us"],
                [[t.task, t.weight, t.source, t.source_model, t.source_record_id, t.record_id, _fmt(t.untuned_us),
                  _fmt(t.chosen_us)] for t in run.tasks])
    for name, lat in run.e2e.items():
        click.echo(f"{name:12s} {lat['median_ms']:9.2f} ms")


def _took(run) -> str:
    from datetime import datetime

    if not run.finished_at:
        return ""
    seconds = (datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)).total_seconds()
    return f"{seconds:.0f}"


def _cpu(target) -> str:
    from schedb.tir.target import label

    return label(target) if target else ""


def _fmt2(x):
    return "" if x is None else f"{x:.2f}"


def _source(r, target_key):
    """The source model, with the CPU its schedule was tuned for when that is not this one."""
    from schedb.tir.target import label

    if r.source_model is None or r.source_target in (None, target_key):
        return r.source_model
    return f"{r.source_model} ({label(r.source_target)})"


def _n(count: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fmt(x):
    return "" if x is None else f"{x:.1f}"


def _p(x):
    return "" if x is None else f"{x:.3g}"


def main():
    cli(prog_name="schedb")


if __name__ == "__main__":
    sys.exit(main())
