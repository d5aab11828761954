"""The documentation site and the README: the site builds strictly, and neither can point at what is not there.

`mkdocs build --strict` fails on a page missing from the nav, a link to a missing page or anchor, and a broken
mkdocs-click or mkdocstrings directive; the CLI reference is generated from the click group itself, so a command
renamed without its docs fails here.
"""

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from rlkube.cli.main import cli
from rlkube.rl.hparams import hparams_registry
from tests.docs_commands import KINDS, command_blocks

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _nav_pages(nav: list) -> set[str]:
    pages = set()
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages |= _nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_the_site_builds_strictly_with_the_cli_reference_and_the_api(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    reference = (site / "reference/cli/index.html").read_text()
    for name in cli.commands:
        assert f"rlkube {name}" in reference, f"the CLI reference lacks rlkube {name}"
    assert 'id="rlkube.launch.targets.base.Target"' in (site / "reference/api/index.html").read_text()


def test_the_readme_is_short_and_its_relative_links_resolve_to_files_and_site_pages() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    nav = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    relative = [m["target"] for m in _LINK.finditer(readme) if not re.match(r"[a-z]+://|#|mailto:", m["target"])]
    assert relative, "the README links none of the site's pages"
    for target in relative:
        path = target.split("#")[0]
        assert (REPO / path).exists(), f"README links {target}, which does not exist"
        if path.startswith("docs/") and path.endswith(".md"):
            assert path.removeprefix("docs/") in nav, f"README links {target}, which is not a page of the site"


def _sets_by_agent() -> dict[str, list[str]]:
    sets = defaultdict(list)
    for name in hparams_registry:
        sets[hparams_registry[name]().agent].append(name)
    return sets


@pytest.mark.parametrize(("agent", "sets"), sorted(_sets_by_agent().items()))
def test_each_agents_page_names_every_registered_set_of_that_agent(agent: str, sets: list[str]) -> None:
    page = REPO / "docs/agents" / f"{agent}.md"
    assert page.exists(), f"agent {agent} has no page: docs/agents/{agent}.md"
    text = page.read_text()
    missing = [name for name in sets if f"`{name}`" not in text]
    assert not missing, f"docs/agents/{agent}.md does not name {missing}"


def test_every_command_on_getting_started_is_tagged_for_the_test_that_runs_it() -> None:
    blocks = command_blocks(REPO)
    assert blocks
    untagged = [block.script for block in blocks if block.kind not in KINDS]
    assert not untagged, f"docs/getting-started.md: blocks with no `<!-- tested: {'|'.join(KINDS)} -->` tag: {untagged}"
    assert all(len(block.script.splitlines()) == 1 for block in blocks if block.kind == "serves")
