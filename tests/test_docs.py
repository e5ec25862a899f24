"""The README and docs/ say what the code does: the CLI reference is the commands' own
--help, every result block is what the generator renders from the committed JSON, and
the README's Python example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

import readme


def test_cli_reference_is_the_commands_help():
    from schedb_cli.docs import render

    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: python -m schedb_cli.docs > docs/cli.md"


def test_readme_is_a_short_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for heading in ("Install", "Quick start", "A five-minute tour", "From Python", "The command line",
                    "The database", "Architecture", "Results"):
        assert f"\n## {heading}\n" in text, heading
    assert "pip install -e '.[test]' && python -m pytest -q -p no:cacheprovider" in text  # what CI runs
    assert not re.search(r"issue #?\d|when this ran|since been", text, re.I)


@pytest.mark.parametrize("page", readme.PAGES, ids=lambda p: p.name)
def test_result_blocks_are_generated_from_the_committed_json(page):
    text = page.read_text()
    assert readme.fill(text, page) == text, f"{page.name} is stale: python benchmarks/readme.py"


def test_no_installed_top_level_cli_package():
    import importlib.metadata

    top = importlib.metadata.distribution("schedb").read_text("top_level.txt").split()
    assert "cli" not in top and "schedb_cli" in top


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\('\w+', '(exact|neighbor|anchor|searched|untuned)'\)", proc.stdout), proc.stdout
    assert (tmp_path / "demo.db").is_file() and (tmp_path / "tune-work").is_dir()
    logs = "".join(f.read_text() for f in (tmp_path / "tune-work" / "logs").glob("*task_*.log"))
    assert "Best GFLOPs" in logs and "Error in building" not in logs, logs[-3000:]  # TVM's tuning built and ran


def test_every_package_is_in_the_distribution():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "schedb").rglob("__init__.py")}
    assert found | {"schedb_cli"} == listed


def _result(tmp_path, name, cpu="Xeon", mcpu="rocketlake", **drop):
    import json

    machine = {"cpu": cpu, "llvm_mcpu": mcpu, "schedb_commit": "abc1234", "dirty": False}
    res = {"machine": machine, "started": "2026-12-05T10:00:00+00:00", "finished": "2026-12-05T10:05:00+00:00"}
    for k in drop:
        (machine if k in machine else res).pop(k)
    (tmp_path / f"{name}.json").write_text(json.dumps(res))
    (tmp_path / f"{name}.md").write_text(f"table of {name}\n")
    return res


def test_generator_refuses_results_without_provenance(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    page = tmp_path / "page.md"

    def block(*names):
        return "".join(f"<!-- results:{n} -->\n<!-- /results:{n} -->\n" for n in names)

    _result(tmp_path, "good")
    assert "table of good" in readme.fill(block("good"), page)
    for name, drop in (("nocommit", {"schedb_commit": 1}), ("nodirty", {"dirty": 1}), ("nostart", {"started": 1})):
        _result(tmp_path, name, **drop)
        with pytest.raises(SystemExit, match=f"results:{name} is refused"):
            readme.fill(block(name), page)
    mixed = _result(tmp_path, "mixed")
    mixed["parts"] = [{"machine": {"cpu": "EPYC", "llvm_mcpu": "znver4"}}]
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    with pytest.raises(SystemExit, match="several CPUs"):
        readme.fill(block("mixed"), page)
    _result(tmp_path, "other", cpu="EPYC", mcpu="znver2")
    with pytest.raises(SystemExit, match="several CPUs"):
        readme.fill(block("good", "other"), page)
    # A table computed from several results: each is checked, and they must share a CPU.
    monkeypatch.setitem(readme.COMPUTED, "both", (("good", "other"), lambda: "table of both"))
    with pytest.raises(SystemExit, match="results:both comes from several CPUs"):
        readme.fill(block("both"), page)
    monkeypatch.setitem(readme.COMPUTED, "both", (("good", "nostart"), lambda: "table of both"))
    with pytest.raises(SystemExit, match="results:nostart is refused"):
        readme.fill(block("both"), page)
