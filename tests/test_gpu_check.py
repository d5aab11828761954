"""benchmarks/gpu_check.sh, the check for a GPU node, run on this CPU: end to end on tiny budgets, within its time,
and honest about a stage that runs out of its share."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
MACHINE_ROWS = ("GPU", "CPU", "TensorFlow", "rlkube", "device", "check's time")
# Each measurement's row, by the start of its label, and what its value must hold: a measured number with its unit.
NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
MEASUREMENT_ROWS = {
    "`dqn_pong` gradient step (batch 32,": rf"^{NUMBER} ms \(",
    "`ppo_pong` gradient step (minibatch 256,": rf"^{NUMBER} ms \(",
    "`ppo_pong` acting and learning per 1k env steps": rf"^{NUMBER} s \(",
    "envpool on all": rf"{NUMBER} steps/s$",
    "`ppo_pong`'s training vector (8 envs,": rf"^{NUMBER} steps/s$",
    "`ppo_pong` trained by `rlkube train`":
        rf"^best evaluation {NUMBER} ± {NUMBER} at step {NUMBER} .*; {NUMBER} steps at {NUMBER} steps/s$",
}


def _check(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHON": sys.executable}, check=False)
    return result, time.monotonic() - started


def _table(stdout: str) -> dict[str, str]:
    """The table's rows, label to value: stdout holds the table and nothing else."""
    lines = stdout.splitlines()
    assert lines[:2] == ["| rlkube GPU check | measured |", "|---|---|"], stdout
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[2:]), stdout
    return dict(line[2:-2].rsplit(" | ", 1) for line in lines[2:])


def _row(table: dict[str, str], start: str) -> tuple[str, str]:
    found = [(label, value) for label, value in table.items() if label.startswith(start)]
    assert len(found) == 1, (start, table)
    return found[0]


def test_the_dry_run_measures_every_row_and_trains_through_rlkube_train() -> None:
    # A few seconds of each stage, and a training of two tiny rollouts evaluated once, on one episode.
    # The default 9 minutes leave each stage's share room for a busy machine.
    result, _ = _check("--measure-seconds", "0.5", "--dqn-learning-starts", "64", "--train-steps", "256",
                       "--evaluations", "1", "--eval-episodes", "1", "--hparam-override", "n_steps=16,n_epochs=1",
                       timeout=600)
    assert result.returncode == 0, result.stderr
    table = _table(result.stdout)
    assert len(table) == len(MACHINE_ROWS) + len(MEASUREMENT_ROWS)
    for start in MACHINE_ROWS:
        _row(table, start)
    assert re.fullmatch(rf"{os.cpu_count()} cores \(.+\)(, \d+ usable by this process)?", table["CPU"])
    assert re.fullmatch(r"\d+\.\d+\S* at \S+", table["rlkube"])
    for start, value_pattern in MEASUREMENT_ROWS.items():
        label, value = _row(table, start)
        assert re.search(value_pattern, value), (label, value)
    label, _ = _row(table, "`ppo_pong` trained by `rlkube train`")
    assert "256 steps (--train-steps), evaluated every 256 steps on 1 episode; finished" in label


def test_a_stage_that_runs_out_of_its_share_is_stopped_and_its_rows_say_so() -> None:
    # 3 s in all: the learner stage gets 0.6 s, too little to load TensorFlow, and the env stage 0.3 s.
    result, seconds = _check("--minutes", "0.05", timeout=60)
    assert result.returncode == 1
    table = _table(result.stdout)
    assert _row(table, "`dqn_pong` gradient step")[1] == "did not finish in its 0.6 s share"
    assert _row(table, "`ppo_pong`'s training vector")[1] == "did not finish in its 0.3 s share"
    assert _row(table, "`ppo_pong` trained by")[1] == "skipped: no measured rate to size it by (see the stages' rows)"
    assert seconds < 3 + 10  # the budget, and the driver's own start (rlkube's imports, no TensorFlow)


def test_a_bad_override_is_one_line_before_any_stage_starts() -> None:
    result, _ = _check("--hparam-override", "n_steps", timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("gpu_check: bad override 'n_steps'")
    assert result.stderr.count("\n") == 1
