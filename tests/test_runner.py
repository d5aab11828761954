"""The runner's outputs: run layout, copies, the best policy, --no-training, videos, checkpoint round trips."""

import io
import json
from dataclasses import replace
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkube.rl.agents import make_agent
from rlkube.rl.envs import make_env
from rlkube.rl.hparams import get_hparams
from rlkube.run.evaluation import episodes
from rlkube.run.progress import Progress
from rlkube.run.runner import Runner, RunOptions
from rlkube.rundir import checkpoint, layout
from tests.conftest import run_rlkube, scalar_steps

SHORT = ["train", "--hparams", "dqn_cartpole", "--train-steps", "1500", "--eval-episodes", "2",
         "--test-episodes", "2", "--hparam-override", "eval_every=750,log_every=256"]


# The module's tests share one worker, so that trained_run trains once rather than once per xdist worker.
pytestmark = pytest.mark.xdist_group("trained_run")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    result = run_rlkube(*SHORT, "--output-dir", str(run), "--copies", "2", "--record-video")
    assert result.returncode == 0, result.stderr
    assert f"TensorBoard logdir: {run}" in result.stderr
    return run


def test_copies_have_their_own_seed_and_directory(trained_run: Path) -> None:
    seeds = [yaml.safe_load((trained_run / f"copy-{i}" / "hparams.yaml").read_text())["seed"] for i in (0, 1)]
    assert seeds == [0, 1]
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["copies"] == 2
    assert summary["total_steps"] == {"mean": 1500, "std": 0.0}
    returns = [copy["eval_mean_return"] for copy in summary["per_copy"]]
    assert summary["eval_mean_return"]["mean"] == pytest.approx(np.mean(returns))


def test_each_copy_logs_the_shared_metric_vocabulary(trained_run: Path) -> None:
    tags = set(scalar_steps(trained_run / "copy-0"))
    assert {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/learning_rate",
            "charts/SPS", "losses/td_loss", "losses/q_values", "eval/mean_return", "eval/std_return",
            "test/mean_return"} <= tags
    records = [json.loads(line) for line in (trained_run / "copy-0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [750, 1500]
    assert set(records[0]) == {"step", "wall_seconds", "mean_return", "std_return"}
    summary = json.loads((trained_run / "copy-0" / "summary.json").read_text())
    assert {"eval_mean_return", "eval_std_return", "test_mean_return", "test_std_return", "total_steps",
            "wall_seconds", "sps"} <= set(summary)


def test_resolved_hparams_are_recorded_and_shown_in_tensorboard(trained_run: Path) -> None:
    saved = yaml.safe_load((trained_run / "copy-0" / "hparams.yaml").read_text())
    assert saved["hparams"]["lr"] == 2.3e-3
    assert saved["hparams"]["_type"] == "DQNHParams"
    accumulator = EventAccumulator(str(trained_run / "copy-0"))
    accumulator.Reload()
    assert "_hparams_/session_start_info" in accumulator.PluginTagToContent("hparams")


def test_progress_is_a_live_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    terminal, pod_log = io.StringIO(), io.StringIO()
    for stream, live in ((terminal, True), (pod_log, False)):
        progress = Progress(100, stream=stream, live=live)
        progress.update(50, 12.5)
        progress.message("eval at step 50: return 12.50")
        progress.update(100, 20.0)
        progress.close()
    assert "\r[############............] 50/100" in terminal.getvalue()
    assert "\r" not in pod_log.getvalue()
    assert pod_log.getvalue().splitlines() == [
        line for line in pod_log.getvalue().splitlines() if line.startswith(("step ", "eval "))]
    assert "step 100/100" in pod_log.getvalue()


def test_videos_of_evaluation_and_test_episodes_are_written(trained_run: Path) -> None:
    videos = trained_run / "copy-1" / "videos"
    names = sorted(p.name for p in videos.iterdir())
    assert names == ["eval-step1500.gif", "eval-step1500.mp4", "eval-step750.gif", "eval-step750.mp4",
                     "test.gif", "test.mp4"]
    frames = imageio.mimread(videos / "test.mp4", memtest=False)
    assert len(frames) > 5
    assert frames[0].ndim == 3


def test_no_training_tests_the_checkpoint_with_frozen_weights(trained_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (trained_run / "copy-0" / "checkpoints").rglob("*")}
    result = run_rlkube(*SHORT, "--output-dir", str(trained_run), "--copies", "2", "--no-training")
    assert result.returncode == 0, result.stderr
    assert "test at step 1500" in result.stderr
    tested = json.loads((trained_run / "test-summary.json").read_text())
    assert tested["copies"] == 2
    assert tested["test_mean_return"]["mean"] == pytest.approx(
        np.mean([copy["test_mean_return"] for copy in tested["per_copy"]]))
    after = {p: p.stat().st_mtime_ns for p in (trained_run / "copy-0" / "checkpoints").rglob("*")}
    assert before == after


def test_copy_index_runs_one_copy_with_its_seed(tmp_path: Path) -> None:
    result = run_rlkube(*SHORT, "--output-dir", str(tmp_path), "--test-episodes", "0",
                        env={"JOB_COMPLETION_INDEX": "3"})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy-3"]
    assert yaml.safe_load((tmp_path / "copy-3" / "hparams.yaml").read_text())["seed"] == 3


@pytest.mark.parametrize("name", ["dqn_cartpole", "ppo_pendulum"])
def test_evaluation_side_by_side_scores_each_episode_as_if_it_ran_alone(name: str) -> None:
    hp = get_hparams(name)
    envs = [make_env(hp.env) for _ in range(3)]
    agent = make_agent(hp, envs[0].observation_space, envs[0].action_space, 0)
    seeds = [11, 12, 13]
    returns, lengths, _ = episodes(envs, agent, seeds, record=False, viewer=None)
    alone = [episodes(envs[:1], agent, [seed], record=False, viewer=None) for seed in seeds]
    # A batch's matmul may round differently from a single row's; nothing else differs.
    assert returns == pytest.approx([result[0][0] for result in alone], rel=1e-6)
    assert lengths == [result[1][0] for result in alone]
    assert len(set(returns)) > 1  # different seeds, different episodes


# A DQN run on CartPole that, on this seed, evaluates better midway than at its end (the test checks that it does).
UNSTABLE = "dqn_cartpole", "train_steps=8000,eval_every=1000"


def test_a_run_whose_last_evaluation_is_worse_than_its_best_tests_the_best(tmp_path: Path) -> None:
    hp = get_hparams(*UNSTABLE)
    options = RunOptions(eval_episodes=3, test_episodes=3, live_progress=False)
    trained = Runner(hp, tmp_path, options).run()
    evaluations = [json.loads(line) for line in (tmp_path / layout.METRICS_FILE).read_text().splitlines()]
    best = max(reversed(evaluations), key=lambda evaluation: evaluation["mean_return"])  # the last of equals
    assert evaluations[-1]["mean_return"] < best["mean_return"], "this run must end below its best to test anything"

    kept = checkpoint.load_best(tmp_path)
    assert (kept["step"], kept["mean_return"]) == (best["step"], best["mean_return"])
    assert (trained["best_eval_step"], trained["best_eval_mean_return"]) == (best["step"], best["mean_return"])
    assert trained["eval_mean_return"] == evaluations[-1]["mean_return"]
    assert trained["test_policy"] == "best"

    # The test ran the kept weights: testing them again gives its numbers, and the last weights give others.
    again = Runner(hp, tmp_path, replace(options, training=False)).run()
    last = Runner(hp, tmp_path, replace(options, training=False, test_policy="last")).run()
    assert again["test_mean_return"] == trained["test_mean_return"]
    assert (last["test_policy"], again["test_policy"]) == ("last", "best")
    assert last["test_mean_return"] != trained["test_mean_return"]


def test_without_an_evaluation_the_test_runs_the_last_policy_and_says_so(tmp_path: Path) -> None:
    result = run_rlkube("train", "--hparams", "dqn_cartpole", "--train-steps", "300", "--eval-episodes", "0",
                        "--test-episodes", "1", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "no evaluation has kept a best policy" in result.stderr
    assert "test return (last policy)" in result.stdout
    assert json.loads((tmp_path / "copy-0" / layout.SUMMARY_FILE).read_text())["test_policy"] == "last"
    assert not (tmp_path / "copy-0" / layout.BEST_POLICY).exists()
