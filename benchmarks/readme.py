"""Put the committed results into README.md: every block

    <!-- results:NAME -->
    ...
    <!-- /results:NAME -->

is replaced by benchmarks/results/NAME.md (and its plot, if NAME.png exists).

    python benchmarks/readme.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"<!-- results:([\w/]+) -->\n.*?<!-- /results:\1 -->", re.S)


def fill(text: str) -> str:
    def block(m):
        name = m[1]
        md = RESULTS / f"{name}.md"
        if not md.exists():
            sys.exit(f"README.md names results:{name}, but {md.relative_to(ROOT)} does not exist")
        # A result's own "# Title" is a caption here: the README section has its heading.
        body = re.sub(r"\A# (.+)", r"**\1**", md.read_text().rstrip())
        if (RESULTS / f"{name}.png").exists():
            body += f"\n\n![{name}](benchmarks/results/{name}.png)"
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    return BLOCK.sub(block, text)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(fill(readme.read_text()))
