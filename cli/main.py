"""The ``schedb`` command: a thin click layer over the :mod:`schedb` library."""

from __future__ import annotations

import functools
import json
import sys
import time

import click

from schedb.errors import SchedbError


def handle_errors(f):
    """User errors become one clean line on stderr and exit status 1, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except SchedbError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def quiet_tvm():
    """MetaSchedule logs every batch at INFO to the console; keep that in its log files."""
    import logging

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


model_option = click.option(
    "--model", "-m", "model_spec", required=True,
    help="Zoo name, model.onnx, program.pt2, file.py:factory or package.module:factory.",
)
shape_option = click.option("--input-shape", default=None, help="e.g. 1,3,224,224 (several: ';').")
target_option = click.option(
    "--target", default=None,
    help='TVM target: JSON/dict form or shorthand ("llvm -mcpu=skylake-avx512"). Default: this host.',
)


@click.group()
@click.version_option(package_name="schedb")
def cli():
    """schedb: a schedule database for Apache TVM."""


@cli.command()
@click.option("--tasks/--no-tasks", default=True, help="Count each model's tasks (imports every model).")
@handle_errors
def models(tasks):
    """The model zoo, with task counts."""
    from rich.console import Console
    from rich.table import Table

    from schedb.models import load_model
    from schedb.target import parse_target
    from schedb.tasks import extract_tasks, lower
    from schedb.zoo import ZOO

    table = Table("model", "input", "parameters", "tasks", "description")
    target = parse_target(None) if tasks else None
    for name, entry in ZOO.items():
        n = ""
        if tasks:
            n = str(len(extract_tasks(lower(load_model(name), target), target)))
        shapes = ";".join(",".join(map(str, s)) for s in entry.input_shapes)
        table.add_row(name, shapes, f"{entry.params:,}", n, entry.description)
    Console().print(table)


@cli.command()
@model_option
@shape_option
@target_option
@click.option("--trials", type=int, default=None, help="Global trial budget (default: per-task x tasks).")
@click.option("--trials-per-task", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Work dir to write.")
@handle_errors
def tune(model_spec, input_shape, target, trials, trials_per_task, seed, out):
    """Tune every task of a model with MetaSchedule into a standard work dir."""
    from rich.console import Console

    from schedb.models import load_model
    from schedb.target import parse_target
    from schedb.tune import tune as run_tune

    quiet_tvm()
    console = Console(stderr=True)
    tgt = parse_target(target)
    model = load_model(model_spec, input_shape)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(task, done, total, best, finished, n):
        now = time.perf_counter()
        if now - last[0] < 1.0 and done < total:
            return
        last[0] = now
        best_s = f"{best * 1e6:.1f} us" if best != float("inf") else "-"
        console.print(
            f"[{now - t0:7.1f}s] tasks {finished}/{n}  trials {done}/{total}  "
            f"{task}: best {best_s}", highlight=False,
        )

    meta = run_tune(model, tgt, out, trials=trials, trials_per_task=trials_per_task, seed=seed,
                    progress=progress)
    click.echo(f"tuned {model.name}: {len(meta['tasks'])} tasks, {meta['trials']} trials, "
               f"{meta['wall_time_s']} s -> {out}")


@cli.command()
@model_option
@shape_option
@target_option
@click.option("--logs", type=click.Path(exists=True), default=None,
              help="MetaSchedule work dir or schedb database with schedules (default: untuned).")
@click.option("--repeat", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def bench(model_spec, input_shape, target, logs, repeat, as_json):
    """Compile a model, check it against PyTorch, time it next to PyTorch eager."""
    from schedb.compile import compile_model, time_torch, time_vm
    from schedb.models import load_model
    from schedb.target import canonical, parse_target
    from schedb.tasks import lower

    quiet_tvm()
    tgt = parse_target(target)
    lowered = lower(load_model(model_spec, input_shape), tgt)
    database = open_schedules(logs) if logs else None
    compiled = compile_model(lowered, tgt, database)
    tvm_lat = time_vm(compiled, lowered, repeat=repeat)
    torch_lat = time_torch(lowered, repeat=repeat)
    result = {
        "model": lowered.model.name,
        "target": json.loads(canonical(tgt)),
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


def open_schedules(path):
    """A MetaSchedule database for a work dir or a schedb database file."""
    from pathlib import Path

    from schedb.workdir import open_workdir

    p = Path(path)
    if p.is_dir():
        return open_workdir(p)
    from schedb.database import Database

    return Database(p)


def main():
    cli(prog_name="schedb")


if __name__ == "__main__":
    sys.exit(main())
