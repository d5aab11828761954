"""`--render` on a real X server (Xvfb): frames reach a window in a process without TensorFlow."""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rlkube.run.viewer import Viewer
from tests.conftest import run_rlkube

DISPLAY = ":97"


@pytest.fixture(scope="module")
def x_display() -> Iterator[str]:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb, the virtual X server these tests open the --render window on, is not on PATH; "
                    "install it with `apt-get install xvfb` (make test does, where it runs as root)")
    server = subprocess.Popen([xvfb, DISPLAY, "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket_path = Path(f"/tmp/.X11-unix/X{DISPLAY[1:]}")
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        assert server.poll() is None, "Xvfb exited"
        assert time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.05)
    yield DISPLAY
    server.terminate()
    server.wait()


def test_viewer_displays_every_frame_it_is_sent(x_display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", x_display)
    viewer = Viewer("rlkube test")
    for shade in range(12):
        viewer.show(np.full((40, 60, 3), shade * 20, np.uint8))
    assert viewer.close() == 12


def test_train_with_render_shows_evaluation_episodes(x_display: str, tmp_path: Path) -> None:
    result = run_rlkube("train", "--hparams", "dqn_cartpole", "--train-steps", "400", "--eval-episodes", "1",
                        "--test-episodes", "1", "--render", "--hparam-override", "eval_every=400",
                        "--output-dir", str(tmp_path), env={"DISPLAY": x_display})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test at step 400" in result.stderr
    assert os.path.exists(tmp_path / "copy-0" / "summary.json")
