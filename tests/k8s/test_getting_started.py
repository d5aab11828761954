"""Getting started as a newcomer follows it: every command on docs/getting-started.md, from a fresh clone.

The page's bash blocks run in order in a clone of this repository's HEAD (what a newcomer clones; uncommitted changes
are not in it), as a terminal runs them: a `finishes` block in bash with `set -e`, to exit 0; a `serves` block
started, read until it prints its URL, asked which runs have evaluations, and stopped. What `source
.venv/bin/activate` sets carries over to the blocks after it, as in the newcomer's shell.

`make run` builds the clone's own virtualenv (pip, which needs PyPI or its cache), then trains and tests
dqn_cartpole. The submit `--cluster kube` goes to the test cluster's real node: the clone's ./rlkube.yaml points the
`kube` profile at it (the e2e fixture's namespace and S3 bucket, the node's registry for `--build cpu`), as a user's
own file points it at their cluster. In the full tier: the install alone takes minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs_commands import command_blocks

pytestmark = pytest.mark.xdist_group("k8s")
REPO = Path(__file__).resolve().parents[2]
BLOCK_TIMEOUT_S = 2400  # make run installs the clone's virtualenv first
SERVE_TIMEOUT_S = 300
_URL = re.compile(r"(http://[\w.-]+:\d+/)")


def _newcomers_env() -> dict[str, str]:
    """This process's environment (the e2e fixture's cluster, bucket and Docker settings) without what would point
    Python at this checkout or its virtualenv rather than the clone's."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _activated(env: dict[str, str], clone: Path) -> dict[str, str]:
    """What `source .venv/bin/activate` changes in a shell."""
    venv = clone / ".venv"
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}


def _run_to_the_end(script: str, clone: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-e", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=BLOCK_TIMEOUT_S, check=False)
    assert result.returncode == 0, (f"{script}\nexit {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def _runs_with_evaluations(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}data/plugin/scalars/tags", timeout=30) as response:
        tags = json.loads(response.read())
    return sorted(run for run, run_tags in tags.items() if "eval/mean_return" in run_tags)


def _serve_then_stop(script: str, clone: Path, env: dict[str, str]) -> list[str]:
    """Start the server, wait for its URL and for runs with evaluations behind it; return those runs."""
    with subprocess.Popen(["bash", "-c", f"exec {script}"], cwd=clone, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as server:
        try:
            assert server.stdout is not None
            seen: list[str] = []
            deadline = time.monotonic() + SERVE_TIMEOUT_S
            while not (found := _URL.search("".join(seen))):
                line = server.stdout.readline()
                assert line or server.poll() is None, f"{script} ended: {''.join(seen)[-3000:]}"
                assert time.monotonic() < deadline, f"{script} printed no URL: {''.join(seen)[-3000:]}"
                seen.append(line)
            runs: list[str] = []
            while not runs:
                assert time.monotonic() < deadline, f"{script} served no evaluations at {found.group(1)}"
                with contextlib.suppress(OSError):  # not serving yet
                    runs = _runs_with_evaluations(found.group(1))
                time.sleep(2)
            return runs
        finally:
            server.terminate()
            server.wait(timeout=60)


def _point_kube_at_the_test_cluster(e2e: dict[str, Any], clone: Path) -> None:
    test_profile = yaml.safe_load((e2e["dir"] / "rlkube.yaml").read_text())["real"]
    (clone / "rlkube.yaml").write_text(yaml.safe_dump({"kube": {**test_profile, "pvc": None}}))


@pytest.mark.full
def test_a_newcomer_following_getting_started_from_a_fresh_clone_trains_sees_tensorboard_and_submits(
        e2e: dict[str, Any]) -> None:
    clone = e2e["dir"] / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    _point_kube_at_the_test_cluster(e2e, clone)
    blocks = command_blocks(clone)
    scripts = "".join(block.script for block in blocks)
    for step in ("make run", "tensorboard", "rlkube submit", "rlkube submit --cluster kube"):
        assert step in scripts, f"docs/getting-started.md no longer shows {step}"

    env = _newcomers_env()
    for block in blocks:
        if block.kind == "serves":
            assert _serve_then_stop(block.script.strip(), clone, env), block.script
            continue
        output = _run_to_the_end(block.script, clone, env)
        if "source .venv/bin/activate" in block.script:
            env = _activated(env, clone)
        if "make run" in block.script:
            assert "TensorBoard logdir:" in output
            assert "test return (best policy)" in output
        if "rlkube logs" in block.script:
            assert "copy-0 |" in output
            assert "copy-1 |" in output
        if "--cluster kube" in block.script:
            assert re.search(r"^submitted \S+ to kube", output, re.MULTILINE), output[-3000:]
