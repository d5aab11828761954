"""The user's own three commands, as typed, against the test cluster's real node: submit, then logs, then tensorboard.

Nothing is named after `submit`: `logs` and `tensorboard` take the latest experiment. The profile is the e2e
fixture's `real` (runs in an S3 bucket on moto), with the pushed image as its own, so that `submit` needs no --image.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_real_node import RLKUBE, read_url, rlkube

pytestmark = pytest.mark.xdist_group("k8s")


@pytest.mark.full
def test_the_users_three_commands_work_as_typed_on_a_cluster(e2e: dict[str, Any], pushed_image: str) -> None:
    profiles = yaml.safe_load(Path("rlkube.yaml").read_text())
    profiles["real"]["image"] = pushed_image
    Path("rlkube.yaml").write_text(yaml.safe_dump(profiles))

    submitted = rlkube("submit", "--cluster", "real", "--hparams", "dqn_cartpole", "--copies", "2",
                       "--train-steps", "2500")
    assert submitted.returncode == 0, submitted.stderr
    name = re.search(r"^submitted (\S+) to real", submitted.stdout, re.MULTILINE).group(1)

    followed = rlkube("logs", timeout=900)  # follows until both copies end
    assert followed.returncode == 0, followed.stderr
    assert followed.stderr.splitlines()[0] == f"experiment: {name} (latest)"
    for copy in (0, 1):
        assert f"copy-{copy} | test at step 2500" in followed.stdout, followed.stdout[-3000:]

    # Runs in a bucket: synced here from the bucket, with the cluster not needed at all.
    with subprocess.Popen([*RLKUBE, "tensorboard"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as board:
        try:
            url = read_url(board, timeout=300)
            query = urllib.parse.urlencode({"run": "copy-1", "tag": "eval/mean_return"})
            with urllib.request.urlopen(f"{url}data/plugin/scalars/scalars?{query}", timeout=60) as response:
                steps = [step for _wall_time, step, _value in json.loads(response.read())]
        finally:
            board.terminate()
    assert steps == [2500]

    # The in-cluster TensorBoard cannot read s3://, so asking for it gets one line rather than an empty page.
    in_cluster = rlkube("tensorboard", name, "--in-cluster")
    assert in_cluster.returncode == 2
    assert in_cluster.stderr.splitlines() == [
        f"error: the in-cluster TensorBoard cannot read {e2e['output']} (its TensorFlow has no s3:// file system); "
        f"leave out --in-cluster to sync {name} from the bucket here"]
