"""Put the committed results into README.md and docs/*.md: every block

    <!-- results:NAME -->
    ...
    <!-- /results:NAME -->

is replaced by benchmarks/results/NAME.md (and its plot, if NAME.png exists), or, for the
names in COMPUTED, by a table computed from the committed JSON results. A result without
full provenance (commit, dirty flag, CPU and LLVM mcpu, start and end time), one whose
parts were measured on different CPUs, or a page whose blocks come from different CPUs is
refused: such numbers do not compare.

    python benchmarks/readme.py
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"<!-- results:([\w/]+) -->\n.*?<!-- /results:\1 -->", re.S)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def headline() -> str:
    """Per seed model: transferred, own fixture and PyTorch eager (bench_deep), the
    transferred model's latency over PyTorch's judged against 1.0x on its whole interval."""
    res = json.loads((RESULTS / "deep.json").read_text())
    rows = ["| model | transferred from the other two | own fixture | PyTorch eager | transferred / PyTorch "
            "| <= 1.0x PyTorch |", "| --- | --- | --- | --- | --- | --- |"]
    for m in res["models"]:
        c, r = m["cells"], m["over_pytorch"]["transferred from the other two"]
        rows.append(f"| {m['model']} | {report.fmt_ci(c['transferred from the other two'])} "
                    f"| {report.fmt_ci(c['own fixture'])} | {report.fmt_ci(c['pytorch eager'])} "
                    f"| {report.fmt_ci(r, 'x', 2)} | {report.verdict(r, 1.0)} |")
    return "\n".join([report.machine_line(res["machine"]), "", *rows])


def hour() -> str:
    """Per seed model: the last step of its time-to-latency run (an hour of ``schedb fast``
    from the other two models' fixtures) beside PyTorch eager, ONNX Runtime and OpenVINO,
    judged against 1.0x PyTorch on its whole interval. Each model's row is its own run."""
    rows = ["| model | schedb fast, 60 min | PyTorch eager | ONNX Runtime | OpenVINO | schedb / PyTorch "
            "| <= 1.0x PyTorch | schedb |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in HOUR:
        res = json.loads((RESULTS / f"{name}.json").read_text())
        (model, m), = res["models"].items()
        last = max((k for k in m["cells"] if k.startswith("schedb ")), key=lambda k: float(k.split()[1]))
        c, r = m["cells"], m["x_pytorch"][last]
        rows.append(f"| {model} | {report.fmt_ci(c[last])} | {report.fmt_ci(c['pytorch eager'])} "
                    f"| {report.fmt_ci(c['onnx runtime'])} | {report.fmt_ci(c['openvino'])} "
                    f"| {report.fmt_ci(r, 'x', 2)} | {report.verdict(r, 1.0)} | {res['machine']['schedb_commit']} |")
    m = res["machine"]
    return "\n".join([f"Machine: {m['cpu']} ({m['cores']} cores, LLVM mcpu {m['llvm_mcpu']}), TVM {m['tvm']}, "
                      f"Python {m['python']}.", "", *rows])


HOUR = ("time_to_latency_resnet50", "time_to_latency_alexnet", "time_to_latency_googlenet")
COMPUTED = {"headline": (("deep",), headline), "hour": (HOUR, hour)}
REQUIRED = ("schedb_commit", "dirty", "cpu", "llvm_mcpu")


def machines(x, found=None) -> set:
    """Every (cpu, llvm mcpu) a result records, its nested parts' included."""
    found = set() if found is None else found
    if isinstance(x, dict):
        if "cpu" in x and "llvm_mcpu" in x:
            found.add((x["cpu"], x["llvm_mcpu"]))
        for v in x.values():
            machines(v, found)
    elif isinstance(x, list):
        for v in x:
            machines(v, found)
    return found


def provenance_problems(result: dict) -> list[str]:
    m = result.get("machine") or {}
    out = [f"machine.{k} missing" for k in REQUIRED if m.get(k) is None]
    out += [f"{k} time missing" for k in ("started", "finished") if not result.get(k)]
    cpus = machines(result)
    if len(cpus) > 1:
        out.append("measured on several CPUs: " + ", ".join(f"{c} ({mcpu})" for c, mcpu in sorted(cpus)))
    return out


def checked(name: str, page: Path) -> tuple:
    """The (cpu, mcpu) of results/NAME.json; exits naming the page when it fails provenance."""
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    problems = provenance_problems(result)
    if problems:
        sys.exit(f"{page.name}: results:{name} is refused: {'; '.join(problems)}")
    return next(iter(machines(result)))


def fill(text: str, page: Path = ROOT / "README.md") -> str:
    up = os.path.relpath(ROOT, page.parent)
    prefix = "" if up == "." else up + "/"

    cpus: dict = {}

    def block(m):
        name = m[1]
        sources, compute = COMPUTED.get(name, ((name,), None))
        found = {checked(source, page) for source in sources}
        if len(found) > 1:
            sys.exit(f"{page.name}: results:{name} comes from several CPUs: {sorted(found)}")
        cpus[name] = found.pop()
        if compute is not None:
            return f"<!-- results:{name} -->\n{compute()}\n<!-- /results:{name} -->"
        md = RESULTS / f"{name}.md"
        if not md.exists():
            sys.exit(f"{page.name} names results:{name}, but {md.relative_to(ROOT)} does not exist")
        # A result's own "# Title" is a caption here: the page's section has its heading.
        body = re.sub(r"\A# (.+)", r"**\1**", md.read_text().rstrip())
        if (RESULTS / f"{name}.png").exists():
            body += f"\n\n![{name}]({prefix}benchmarks/results/{name}.png)"
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    out = BLOCK.sub(block, text)
    if len(set(cpus.values())) > 1:
        sys.exit(f"{page.name}: its results come from several CPUs: "
                 + ", ".join(f"{n} {c[1]}" for n, c in cpus.items()))
    return out


if __name__ == "__main__":
    for page in PAGES:
        page.write_text(fill(page.read_text(), page))
