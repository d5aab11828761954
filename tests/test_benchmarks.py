"""The benchmarks run: hparams_targets.py's results report is made from the runs themselves, sweep_overhead.py times
the sweep driver's calls, replay_checkpoint.py measures segmented checkpoints, actor_scaling.py actors on waiting
envs and learner_alone.py a learner without actors (each would otherwise rot unseen between its long runs)."""

import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_rlkube

# The benchmarks' smoke runs belong to the full tier (make test-all).
pytestmark = pytest.mark.full

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "hparams_targets.py"


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result


def _rows(report: Path) -> dict[str, list[str]]:
    text = (report / "results.md").read_text()
    return {line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| `")}


def _measurement_commands(report: Path) -> list[str]:
    """The numbered list under the table: `N. date on machine, device D: `command``, as its commands."""
    lines = (report / "results.md").read_text().splitlines()
    return [line.split("`")[1] for line in lines if line[:1].isdigit()]


def test_the_results_report_tables_each_set_over_its_seeds_and_plots_it(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _report("--hparams", "dqn_cartpole,vpg_cartpole", "--seeds", "3,5", "--train-steps", "1024",
                     "--report", str(report))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["hparams"], r["seed"]) for r in records] == [("dqn_cartpole", 3), ("dqn_cartpole", 5),
                                                             ("vpg_cartpole", 3), ("vpg_cartpole", 5)]
    assert (report / "results.jsonl").read_text().splitlines() == result.stdout.splitlines()
    for record in records:  # the best is the run's own best policy: of equal evaluations, the later
        best = max(mean for _, mean in record["evals"])
        assert record["best_eval"] == best
        assert record["best_eval_step"] == max(step for step, mean in record["evals"] if mean == best)

    assert len(_measurement_commands(report)) == 1
    assert "--seeds 3,5" in _measurement_commands(report)[0]  # the command that made it
    rows = _rows(report)
    assert list(rows) == ["dqn_cartpole", "vpg_cartpole"]
    for name, (budget, target, final, best, reaching, _wall, _sps, run) in rows.items():
        assert run == "1"
        runs = [r for r in records if r["hparams"] == name]
        assert budget.startswith("1024 (")
        finals, bests = [r["final_eval"] for r in runs], [r["best_eval"] for r in runs]
        assert final == f"{statistics.fmean(finals):.1f} ± {statistics.pstdev(finals):.1f}"
        assert best == f"{statistics.fmean(bests):.1f} ± {statistics.pstdev(bests):.1f}"
        if runs[0]["target_return"] is None:
            assert (target, reaching) == ("-", "-")
        else:
            assert reaching == f"{sum(b >= runs[0]['target_return'] for b in bests)}/2"
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # What `rlkube hparams` reads back as the measured column.
    listed = run_rlkube("hparams", "--results", str(report / "results.jsonl"))
    assert listed.returncode == 0, listed.stderr
    measured = {line.split()[0]: line.split(None, 5)[5] for line in listed.stdout.splitlines()[1:]}
    assert measured["dqn_cartpole"].startswith("best ")


def test_a_milestone_reports_each_seeds_first_step_and_wall_time_at_or_above_it(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _report("--hparams", "dqn_cartpole", "--seeds", "0,1", "--train-steps", "1024", "--milestone", "9",
                     "--report", str(report))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record in records:
        first = next((step for step, mean in record["evals"] if mean >= 9), None)
        assert (record["milestone"], record["first_step_reaching_milestone"]) == (9, first)
        assert (record["wall_s_to_milestone"] is None) == (first is None)
    cell = _rows(report)["dqn_cartpole"][-1]
    assert cell.startswith("≥ 9: ")
    assert len(cell.removeprefix("≥ 9: ").split(", ")) == 2


def test_a_benchmark_run_again_in_its_workdir_continues_its_runs_rather_than_starting_afresh(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    first = json.loads(_report("--hparams", "dqn_cartpole", "--train-steps", "1024", "--workdir", str(workdir)).stdout)
    assert (workdir / "dqn_cartpole" / "copy-0" / "summary.json").exists()  # kept, not in a temporary directory

    continued = json.loads(_report("--hparams", "dqn_cartpole", "--train-steps", "2048", "--workdir",
                                   str(workdir)).stdout)
    # A fresh 2048-step run would evaluate once, at its end (dqn_cartpole evaluates every 2500 steps); the
    # continued one keeps the first run's evaluation at 1024 as it was.
    assert [step for step, _ in continued["evals"]] == [1024, 2048]
    assert continued["evals"][0] == first["evals"][0]
    assert continued["steps"] == 2048


def test_a_benchmark_stopped_by_a_signal_lets_its_runs_checkpoint_and_says_how_to_resume(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    # ddpg_mountaincar_continuous checkpoints every 50k steps, far beyond where this stops it: a checkpoint found
    # afterwards is the one the stop wrote.
    running = subprocess.Popen([sys.executable, str(SCRIPT), "--hparams", "ddpg_mountaincar_continuous", "--workdir",
                                str(workdir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = workdir / "ddpg_mountaincar_continuous" / "copy-0" / "progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and running.poll() is None:
        if progress.exists() and progress.read_text().endswith("}\n") and json.loads(progress.read_text())["step"] > 0:
            break
        time.sleep(0.1)
    running.send_signal(signal.SIGINT)  # to the script alone, as `kill -INT` sends it: it passes it on
    _, stderr = running.communicate(timeout=300)

    assert running.returncode != 0
    assert stderr == (f"stopped while training ddpg_mountaincar_continuous: its runs checkpointed; the same command "
                      f"resumes them from {workdir}\n")
    stopped_at = json.loads(progress.read_text())["step"]
    checkpoints = list((workdir / "ddpg_mountaincar_continuous" / "copy-0").glob("checkpoints/*/COMPLETE"))
    assert len(checkpoints) == 1, "the run was killed before it could checkpoint"
    assert 0 < stopped_at < 50_000


def test_a_report_accumulates_sets_and_a_set_trained_again_replaces_its_rows(tmp_path: Path) -> None:
    report = tmp_path / "report"
    _report("--hparams", "dqn_cartpole,vpg_cartpole", "--seeds", "0", "--train-steps", "512", "--report", str(report))
    first = _rows(report)
    _report("--hparams", "vpg_cartpole", "--seeds", "1,2", "--train-steps", "768", "--report", str(report))

    rows = _rows(report)
    assert rows["dqn_cartpole"] == first["dqn_cartpole"]  # kept, still credited to the first measurement
    assert rows["vpg_cartpole"][0].startswith("768 (")
    assert rows["vpg_cartpole"][-1] == "2"
    assert [" --seeds 0 " in command for command in _measurement_commands(report)] == [True, False]
    assert [" --seeds 1,2 " in command for command in _measurement_commands(report)] == [False, True]
    kept = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert [(r["hparams"], r["seed"]) for r in kept] == [("dqn_cartpole", 0), ("vpg_cartpole", 1), ("vpg_cartpole", 2)]


def test_a_run_ending_keeps_the_rows_another_run_wrote_to_its_report_meanwhile(tmp_path: Path) -> None:
    report, results = tmp_path / "report", tmp_path / "report" / "results.jsonl"
    running = subprocess.Popen([sys.executable, str(SCRIPT), "--hparams", "dqn_cartpole,vpg_cartpole", "--seeds", "0",
                                "--train-steps", "512", "--report", str(report)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    # Until its first set's row is whole: the file exists, empty, for a moment before it is written.
    while not (results.exists() and results.read_text().endswith("\n")) and time.monotonic() < deadline:
        time.sleep(0.02)
    # Another run retrains dqn_cartpole while this one trains vpg_cartpole (its rows written in milliseconds,
    # while vpg_cartpole's `rlkube train` is still importing TensorFlow).
    (other,) = [json.loads(line) for line in results.read_text().splitlines()]
    results.write_text(json.dumps({**other, "seed": 7, "measured": {**other["measured"], "command": "another"}}) + "\n")
    assert running.wait(timeout=600) == 0, running.stderr.read() if running.stderr else ""

    kept = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["hparams"], r["seed"]) for r in kept] == [("dqn_cartpole", 7), ("vpg_cartpole", 0)]
    assert _measurement_commands(report)[0] == "another"


def test_the_sweep_overhead_benchmark_times_every_driver_call_it_names() -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / "sweep_overhead.py"), "--trials", "3", "--parallel", "2",
                             "--train-steps", "1024", "--eval-every", "512", "--poll", "0.2",
                             # No pruner: a median pruner may stop the third trial (it did on CI), and the
                             # assertions count every trial to its end.
                             "--pruner", "none"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "trials: 3 (3 complete)" in result.stdout
    table = result.stdout.split("\n\n", 1)[1].splitlines()[1:]  # below the header: operation, calls, ...
    calls = {row.rsplit(None, 4)[0]: row.rsplit(None, 4)[1] for row in table}
    for label in ("ask (Optuna proposes params)", "provenance (git)", "build spec", "submit", "tell (trial ends)"):
        assert calls[label] == "3", result.stdout  # once per trial
    assert int(calls["poll: describe copies"]) > 3, result.stdout


def test_the_replay_checkpoint_benchmark_writes_only_what_was_added_after_its_first_checkpoint() -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / "replay_checkpoint.py"), "--sizes", "4000",
                             "--added", "500"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = {row["checkpoint"]: row for row in map(json.loads, result.stdout.splitlines()) if "checkpoint" in row}
    assert list(rows) == ["before (whole pickle)", "first segmented", "periodic (+500)", "SIGTERM (+1,000)"]
    first, periodic = rows["first segmented"], rows["periodic (+500)"]
    assert periodic["local_MB"] < first["local_MB"] / 2, rows
    assert periodic["bucket_MB"] == periodic["local_MB"], rows  # the bucket gets what the disk got, once


def test_the_actor_scaling_benchmark_measures_steady_steps_per_second_against_the_ideal_line() -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / "actor_scaling.py"), "--actors", "2", "--transports",
                             "processes", "--seconds", "8"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(row["learner"], row["transport"], row["actors"], row["ideal"]) for row in rows] == [
        ("none", "processes", 2, 1_600), ("impala", "processes", 2, 1_600)]  # 2 actors x 8 envs x 100 steps/s
    assert all(0 < row["sps"] <= row["ideal"] * 1.05 for row in rows), rows  # no faster than the line
    assert "| processes | 2 | 1,600 |" in result.stdout, result.stdout  # the table


def test_the_learner_alone_benchmark_times_the_learner_with_and_without_its_gradient_step() -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / "learner_alone.py"), "--hparams", "impala_cartpole",
                             "--rollouts", "3"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert row["hparams"] == "impala_cartpole", row
    assert 0 < row["with_updates_sps"] < row["without_updates_sps"], row  # the gradient step costs something
