"""How the commands print rows: a table that fits the terminal on one, the full values
everywhere else, or JSON / newline-delimited JSON / CSV / TSV (sqlite-utils' output
options and its JSON writer)."""

from __future__ import annotations

import csv
import sys

import click

FORMATS = ("table", "csv", "tsv", "json", "nl")


def output_options(f):
    """sqlite-utils' output flags for a command that prints rows: ``fmt`` and ``json_cols``."""
    for flags, help_text in reversed([
        (("-t", "--table"), "Output as a table (the default): it fits the terminal on one, values in full elsewhere."),
        (("--json",), "Output JSON: a list of objects."),
        (("--nl",), "Output newline-delimited JSON: one object per line."),
        (("--csv",), "Output CSV."),
        (("--tsv",), "Output TSV."),
    ]):
        name = flags[-1].lstrip("-")
        f = click.option(*flags, f"fmt_{name}", is_flag=True, help=help_text)(f)
    f = click.option("--json-cols", is_flag=True,
                     help="Decode JSON text columns into JSON values (implies --json unless --nl).")(f)
    return f


def pick_format(kwargs: dict) -> str:
    """The one format the flags ask for (pops them from ``kwargs``); two are a usage error."""
    chosen = [name for name in FORMATS if kwargs.pop(f"fmt_{name}", False)]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join('--' + c for c in chosen)} exclude each other")
    if not chosen:
        return "json" if kwargs.get("json_cols") else "table"
    return chosen[0]


def emit(cols: list[str], rows, fmt: str = "table", json_cols: bool = False, overflow: str = "ellipsis") -> None:
    """Print rows in ``fmt``. BLOBs are hex in every format."""
    rows = [tuple(v.hex() if isinstance(v, bytes) else v for v in r) for r in rows]
    if fmt in ("json", "nl"):
        from sqlite_utils.cli import output_rows

        for line in output_rows(rows, cols, fmt == "nl", False, json_cols):
            click.echo(line)
    elif fmt in ("csv", "tsv"):
        w = csv.writer(sys.stdout, dialect="excel-tab" if fmt == "tsv" else "excel", lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
    elif cols:
        print_table(cols, rows, overflow=overflow)


def emit_json(data) -> None:
    """One JSON document (a command's --json)."""
    import json

    click.echo(json.dumps(data, indent=1, default=str))


def print_table(cols, rows, overflow: str = "ellipsis", console=None) -> None:
    """On a terminal a table as wide as the terminal (cells cut with an ellipsis, or folded
    over lines with ``overflow="fold"``); anywhere else (a pipe, a file) every value in full."""
    from rich.console import Console

    console = console or Console(highlight=False)
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    if not console.is_terminal:
        from tabulate import tabulate

        click.echo(tabulate(cells, headers=list(cols), tablefmt="simple", disable_numparse=True))
        return
    from rich.table import Column, Table

    table = Table(*[Column(c, overflow=overflow) for c in cols])
    for r in cells:
        table.add_row(*r)
    console.print(table)
