"""The architecture holds: every SQL statement lives in the storage package, no module
imports another's private names, and the layers import one way only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|WITH|BEGIN|VACUUM|ATTACH)\b")
LAYERS = ["errors", "models", "tir", "store", "ingest", "search", "pipeline"]  # each imports only earlier ones


def _modules(*trees):
    for tree in trees:
        for path in sorted((ROOT / tree).rglob("*.py")):
            yield path, ast.parse(path.read_text())


def test_no_sql_outside_the_storage_package():
    """The library's SQL lives in schedb/store; the benchmarks' own in benchmarks/queries.py."""
    found = []
    for path, tree in _modules("schedb", "cli", "benchmarks"):
        if (ROOT / "schedb" / "store") in path.parents or path == ROOT / "benchmarks" / "queries.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:40]}")
            if isinstance(node, ast.Attribute) and node.attr in ("conn", "execute", "executemany", "db"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not found, "\n".join(found)


def test_no_private_name_imported_across_modules():
    found = []
    for path, tree in _modules("schedb", "cli", "benchmarks", "tests"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("schedb", "cli")):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert not found, "\n".join(found)


def test_layers_import_one_way():
    found = []
    for path, tree in _modules("schedb"):
        parts = path.relative_to(ROOT / "schedb").with_suffix("").parts
        if parts[0] not in LAYERS:
            continue
        mine = LAYERS.index(parts[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("schedb."):
                layer = node.module.split(".")[1]
                if layer in LAYERS and LAYERS.index(layer) > mine:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {node.module}")
    assert not found, "\n".join(found)


def test_library_messages_name_parameters_not_flags():
    """The library is called from Python too: its messages name parameters (in backticks),
    and the CLI shows them as its flags (schedb_cli.main.as_flags)."""
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    found = []
    for path, tree in _modules("schedb"):
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and flag.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:60]}")
    assert not found, "\n".join(found)


def test_flags_the_cli_maps_are_its_own():
    from schedb_cli.main import FLAGS, cli

    flags = {o for c in [cli, *cli.commands.values()] for p in c.params for o in getattr(p, "opts", [])}
    assert set(FLAGS.values()) <= flags


def test_benchmark_scripts_stand_alone():
    """A benchmark script imports the shared modules (report, shared, layers, readme), never
    another script, and edits no import path; no machine's own paths in the code."""
    found = []
    for path, tree in _modules("benchmarks"):
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}:{node.lineno}: imports {n}" for n in names if n.startswith("bench_")]
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                found.append(f"{path.name}:{node.lineno}: sys.path")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.match(r"/(work|tmp|root|home)/", node.value):
                found.append(f"{path.name}:{node.lineno}: machine path {node.value!r}")
    assert not found, "\n".join(found)


def test_no_class_of_more_than_twenty_methods():
    found = []
    for path, tree in _modules("schedb"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                n = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                if n > 20:
                    found.append(f"{path.relative_to(ROOT)}: {node.name} has {n} methods")
    assert not found, "\n".join(found)


def test_benchmark_functions_read_without_scrolling():
    """No benchmark function over 60 lines; each script's main parses, runs and writes in 40."""
    found = []
    for path, tree in _modules("benchmarks"):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > (40 if node.name == "main" else 60):
                    found.append(f"{path.name}:{node.lineno}: {node.name} has {lines} lines")
    assert not found, "\n".join(found)


def test_results_name_no_machine_folders():
    """A committed result names no folder of the machine that ran it (report.portable)."""
    machine = re.compile(r'"/(work|tmp|root|home)/')
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sorted((ROOT / "benchmarks" / "results").glob("*.json"))
             for m in [machine.search(p.read_text())] if m]
    assert not found, "\n".join(found)
