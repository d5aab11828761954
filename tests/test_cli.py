"""The `rlkube` command: bad input gets one clear line and exit 2; nothing is left behind."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_rlkube


def no_tensorflow_after(*cli_args: str) -> bool:
    """Run the CLI in a fresh interpreter and report whether TensorFlow stayed unimported."""
    code = ("import sys\nfrom rlkube.cli.main import cli\n"
            f"try:\n    cli({list(cli_args)!r})\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' not in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["--version"],
                                  ["train", "--hparams", "nope", "--output-dir", "/tmp/x"]])
def test_commands_that_do_not_train_never_import_tensorflow(args: list[str]) -> None:
    assert no_tensorflow_after(*args)


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = str(tmp_path / "run")
    return [
        (["--hparams", "dqn_cartpol", "--output-dir", out], "unknown hparams set 'dqn_cartpol'; did you mean"),
        (["--hparams", "dqn_cartpole", "--hparam-override", "lrr=1", "--output-dir", out],
         "unknown hparam 'lrr'; did you mean lr?"),
        (["--hparams", "dqn_cartpole", "--hparam-override", "lr=fast", "--output-dir", out],
         "hparam 'lr' must be float, got 'fast'"),
        (["--hparams", "dqn_cartpole", "--env", "CartPole-v9", "--output-dir", out], "unknown env 'CartPole-v9'"),
        (["--hparams", "dqn_cartpole", "--output-dir", str(a_file / "run")], "is a file, not a directory"),
        (["--hparams", "dqn_cartpole", "--output-dir", "/proc/rlkube-run"], "cannot write in /proc"),
        (["--hparams", "dqn_cartpole", "--no-training", "--output-dir", out], "--no-training needs a checkpoint"),
        (["--hparams", "dqn_cartpole", "--render", "--output-dir", out], "--render needs a display"),
        (["--hparams", "dqn_cartpole", "--env", "Pendulum-v1", "--output-dir", out],
         "agent 'dqn' needs a Discrete action space, but env 'Pendulum-v1' has Box"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_input_gets_one_clear_line_and_leaves_nothing(tmp_path: Path, case: int) -> None:
    args, message = bad_inputs(tmp_path)[case]
    before = sorted(tmp_path.iterdir())
    result = run_rlkube("train", *args, env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert message in error_lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == before
