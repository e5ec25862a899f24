"""Shared by the tests: CLI results explained, records relabelled to a foreign target."""

from __future__ import annotations

import json
import sqlite3
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
