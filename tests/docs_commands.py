"""The commands on the Getting started page, as its tests read them.

Each fenced `bash` block there follows a tag that says how a test runs it:

    <!-- tested: finishes -->   run to the end, every line, and exit 0
    <!-- tested: serves -->     a server that prints its URL and keeps running: serve, then be stopped

so that a command added to the page without a tag fails the per-change tier (tests/test_docs.py), and the full tier
(tests/k8s/test_getting_started.py) runs every tagged block in order.
"""

import re
from dataclasses import dataclass
from pathlib import Path

GETTING_STARTED = Path("docs/getting-started.md")
KINDS = ("finishes", "serves")
_BLOCK = re.compile(r"(?:<!-- tested: (?P<kind>[\w-]+) -->\n)?```bash\n(?P<script>.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Block:
    kind: str | None  # None: the block carries no tag
    script: str


def command_blocks(repo: Path) -> list[Block]:
    """Every bash block on the page, in order, with its tag."""
    text = (repo / GETTING_STARTED).read_text()
    return [Block(match["kind"], match["script"]) for match in _BLOCK.finditer(text)]
