"""Checkpoints are atomic and resume is exact, across SIGKILL at random moments and SIGTERM.

A resume may change the hparams its agent declares mutable (HParams.mutable_on_resume), and only those.
"""

import json
import pickle
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rlkube.chunked import ArrayChunks, Chunks
from rlkube.errors import UserError
from rlkube.rl.agents import continuous, dqn, impala, on_policy
from rlkube.rl.agents.base import AgentState
from rlkube.rl.agents.compiled import compile_learner
from rlkube.rl.hparams import RUN_LOOP_MUTABLE, get_hparams, to_dict
from rlkube.rl.networks import param_leaves
from rlkube.run.resume import check_same_hparams
from rlkube.run.runner import Runner, RunOptions
from rlkube.run.workers import OFF_POLICY_CHUNK
from rlkube.rundir import checkpoint, layout
from tests.conftest import rlkube_command, run_rlkube, scalar_steps
from tests.test_agents import run_steps, smoke_overrides, trained_agent

DQN_OVERRIDES = "eval_every=1500,checkpoint_every=500,log_every=256"
TRAIN = ["train", "--hparams", "dqn_cartpole", "--train-steps", "6000", "--eval-episodes", "2",
         "--test-episodes", "1", "--hparam-override", DQN_OVERRIDES]

# One set per agent, small enough that a run trains for seconds, checkpointed often enough to be killed
# three times: train_steps and overrides. Steps and periods are multiples of what one learner iteration
# adds with workers (32 off-policy steps, n_steps x num_envs = 128 on-policy), except DQN's, kept as they were.
RESUMED: dict[str, tuple[int, str]] = {
    # Its memory of 1024 slots is 4 chunks (rlkube.chunked), and the 6000 steps wrap it round 5 times: its checkpoints
    # keep some segments and write others, and a resume reads them back.
    "dqn_cartpole": (6000, f"{DQN_OVERRIDES},memory_size=1024"),
    "vpg_cartpole": (20480, f"{smoke_overrides('vpg_cartpole')},eval_every=10240,checkpoint_every=2048,log_every=1024"),
    "ppo_cartpole": (20480, f"{smoke_overrides('ppo_cartpole')},eval_every=10240,checkpoint_every=2048,log_every=1024"),
    "impala_cartpole": (20480,
                        f"{smoke_overrides('impala_cartpole')},eval_every=10240,checkpoint_every=2048,log_every=1024"),
    "ddpg_pendulum": (2048, f"{smoke_overrides('ddpg_pendulum')},eval_every=512,checkpoint_every=256,log_every=256"),
    "td3_pendulum": (2048, f"{smoke_overrides('td3_pendulum')},eval_every=512,checkpoint_every=256,log_every=256"),
    "sac_pendulum": (2048, f"{smoke_overrides('sac_pendulum')},eval_every=512,checkpoint_every=256,log_every=256"),
}
# Tags logged once per ended episode: episodes of several environments, or of one actor's rollout, end at the
# same step.
PER_EPISODE_TAGS = {"charts/episodic_return", "charts/episodic_length"}


def resumed_command(name: str, num_workers: int) -> list[str]:
    train_steps, overrides = RESUMED[name]
    return ["train", "--hparams", name, "--train-steps", str(train_steps), "--eval-episodes", "2",
            "--test-episodes", "1", "--hparam-override", overrides, "--num-workers", str(num_workers)]


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "copy-0" / "checkpoints").glob("ckpt-*"))


def final_weights(run: Path) -> list[np.ndarray]:
    """The weights in the run's last checkpoint, every owner's and targets included, whatever the agent."""
    return param_leaves(checkpoint.load(checkpoint.latest(run / "copy-0" / "checkpoints"))["agent"]["params"])


def assert_same_state(actual: Any, expected: Any, where: str = "state") -> None:
    """Equal through nested dicts, sequences and arrays, arrays bit for bit and of the same dtype. A replay's chunked
    array (in memory or in segments) equals its rows, and other chunks of the same rows and versions."""
    if isinstance(expected, Chunks) or isinstance(actual, Chunks):
        if isinstance(expected, Chunks) and isinstance(actual, Chunks):
            np.testing.assert_array_equal(actual.versions, expected.versions, err_msg=f"{where} versions")
        assert_same_state(chunked_rows(actual), chunked_rows(expected), where)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), where
        # An array of no rows holds nothing to restore (an empty rollout buffer makes its arrays on its first step).
        expected = {key: value for key, value in expected.items()
                    if key in actual or not (isinstance(value, np.ndarray) and value.size == 0)}
        assert actual.keys() == expected.keys(), where
        for key, value in expected.items():
            assert_same_state(actual[key], value, f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for index, (got, value) in enumerate(zip(actual, expected, strict=True)):
            assert_same_state(got, value, f"{where}[{index}]")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected, err_msg=where, strict=True)
    else:
        assert actual == expected, where


def chunked_rows(value: Chunks | np.ndarray) -> np.ndarray:
    return np.concatenate([value.chunk(index) for index in range(value.count)]) if isinstance(value, Chunks) else value


def read_segments(state: Any) -> Any:
    """A loaded checkpoint's state with its chunks read: the segments go when later checkpoints no longer list them."""
    if isinstance(state, dict):
        return {key: read_segments(value) for key, value in state.items()}
    if isinstance(state, Chunks):
        return ArrayChunks(chunked_rows(state), state.versions, state.chunk_rows)
    return state


def evaluation_steps(train_steps: int, eval_every: int, stride: int) -> list[int]:
    """The steps a run evaluates at when its step advances `stride` at a time.

    The first step at or past each multiple of eval_every, and the last step.
    """
    past_multiples = {min(-(-multiple // stride) * stride, train_steps)
                      for multiple in range(eval_every, train_steps, eval_every)}
    return sorted(past_multiples | {train_steps})


def wait_for_checkpoint_after(run: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if run.joinpath("copy-0", "checkpoints").exists() and max(checkpoint_steps(run), default=0) > step:
            return True
        time.sleep(0.02)
    return False


def kill_at_random_moments(command: list[str], run: Path) -> list[dict[str, Any]]:
    """Start `command` again and again, SIGKILLing it at a random moment after each new checkpoint.

    Returns the checkpoint each rerun would resume from, as it stood after each kill.
    """
    rng = random.Random(0)
    resumed_from: list[dict[str, Any]] = []
    last_step = 0
    while len(resumed_from) < 2:
        process = subprocess.Popen(rlkube_command(*command, "--output-dir", str(run)),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_checkpoint_after(run, last_step, process):
            break
        time.sleep(rng.uniform(0.0, 0.6))
        if process.poll() is not None:
            break  # it finished meanwhile: nothing left to kill
        process.send_signal(signal.SIGKILL)
        process.wait()
        latest = checkpoint.latest(run / "copy-0" / "checkpoints")
        resumed_from.append(read_segments(checkpoint.load(latest)))
        last_step = max(checkpoint_steps(run))
    assert len(resumed_from) >= 2, "the run finished before it could be killed twice"
    return resumed_from


# make test kills one set per family in process (off-policy discrete, on-policy, off-policy continuous), and with
# workers one per way actors keep pace (dqn streams transitions as sac does; ppo waits for weights); make test-all
# kills all of them both ways.
KILLED_PER_CHANGE = {("dqn_cartpole", 0), ("ppo_cartpole", 0), ("sac_pendulum", 0), ("dqn_cartpole", 2),
                     ("ppo_cartpole", 2)}


@pytest.mark.parametrize(("name", "num_workers"), [
    pytest.param(name, workers, marks=() if (name, workers) in KILLED_PER_CHANGE else pytest.mark.full)
    for name in RESUMED for workers in (0, 2)])
def test_sigkill_at_random_moments_then_rerun_resumes_exactly(name: str, num_workers: int, tmp_path: Path) -> None:
    command = resumed_command(name, num_workers)
    train_steps, overrides = RESUMED[name]
    hp = get_hparams(name, f"{overrides},train_steps={train_steps}")
    reference = tmp_path / "reference"
    if not num_workers:
        assert run_rlkube(*command, "--output-dir", str(reference)).returncode == 0

    run = tmp_path / "killed"
    resumed_from = kill_at_random_moments(command, run)
    finished = run_rlkube(*command, "--output-dir", str(run))
    assert finished.returncode == 0, finished.stderr
    assert "resumed from" in finished.stderr
    summary = json.loads((run / "copy-0" / "summary.json").read_text())
    assert summary["total_steps"] == train_steps

    episodes_end_together = hp.num_envs > 1 or num_workers > 0
    logged = scalar_steps(run / "copy-0")
    for tag, steps in logged.items():
        if tag not in PER_EPISODE_TAGS or not episodes_end_together:
            assert len(steps) == len(set(steps)), f"{tag} has duplicated steps"
        assert steps == sorted(steps), f"{tag} goes back in time"
    # Every episode logged once: none lost to a kill, none logged again by the rerun.
    assert len(logged["charts/episodic_return"]) == summary["episodes"]
    evaluations = [json.loads(line) for line in (run / "copy-0" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [evaluation["step"] for evaluation in evaluations]
    # The best policy kept is the best evaluation's, whatever evaluations the kills undid.
    best = max(reversed(evaluations), key=lambda evaluation: evaluation["mean_return"])  # the last of equals
    kept = checkpoint.load_best(run / "copy-0")
    assert (kept["step"], kept["mean_return"]) == (best["step"], best["mean_return"])
    if not num_workers:
        assert_same_state(kept, checkpoint.load_best(reference / "copy-0"), "best policy")
        assert evaluated == evaluation_steps(train_steps, hp.eval_every, hp.num_envs)
        # Exact: the same weights, bit for bit, as the run that was never interrupted.
        for resumed, uninterrupted in zip(final_weights(run), final_weights(reference), strict=True):
            np.testing.assert_array_equal(resumed, uninterrupted)
        assert scalar_steps(run / "copy-0") == scalar_steps(reference / "copy-0")
    else:
        # Actors start new episodes on resume (their environments live in their processes, and checkpoints hold
        # the learner only), so what the learner sees after a resume differs from an uninterrupted run's, and
        # bit equality with one is not asserted. What is: each resume restores the learner as checkpointed,
        # checked here by restoring each checkpoint a rerun started from as the runner does.
        runner = Runner(hp, run / "copy-0", RunOptions(eval_episodes=0, test_episodes=0, live_progress=False,
                                                       num_workers=num_workers))
        for saved in resumed_from:
            runner._restore(saved)
            assert_same_state(runner.agent.state_dict(), saved["agent"], f"agent at step {saved['loop'].step}")
        # Each rollout a worker sends moves the step on by its length.
        rollout = hp.num_envs * (runner.agent.rollout_steps or OFF_POLICY_CHUNK)
        assert evaluated == evaluation_steps(train_steps, hp.eval_every, rollout)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_rerunning_a_finished_run_evaluates_it_no_more(num_workers: int, tmp_path: Path) -> None:
    hp = get_hparams("vpg_cartpole",
                     f"{smoke_overrides('vpg_cartpole')},train_steps=256,eval_every=128,checkpoint_every=128")
    options = RunOptions(eval_episodes=1, test_episodes=1, live_progress=False, num_workers=num_workers)
    Runner(hp, tmp_path, options).run()
    evaluations = (tmp_path / "metrics.jsonl").read_text()
    assert len(evaluations.splitlines()) == 2
    Runner(hp, tmp_path, options).run()
    assert (tmp_path / "metrics.jsonl").read_text() == evaluations


def test_sigterm_writes_a_checkpoint_at_the_current_step_and_exits(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen(rlkube_command(*TRAIN, "--output-dir", str(run)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_checkpoint_after(run, 0, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "checkpoint saved" in stderr
    assert "Traceback" not in stderr
    stopped_at = max(checkpoint_steps(run))
    assert 0 < stopped_at < 6000
    resumed = run_rlkube(*TRAIN, "--output-dir", str(run))
    assert f"at step {stopped_at}" in resumed.stderr


def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint.save(tmp_path, 100, {"step": 100})

    def dies_midway(_state: object, handle: object, **_: object) -> None:
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pickle, "dump", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 200, {"step": 200})
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path).name == "ckpt-100"
    assert checkpoint.load(checkpoint.latest(tmp_path)) == {"step": 100}
    checkpoint.save(tmp_path, 300, {"step": 300})
    assert not list(tmp_path.glob(".tmp-*")), "leftovers of the killed save are cleaned up"


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, {"step": step})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-3", "ckpt-4"]


def test_resuming_with_other_hparams_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    short = [*TRAIN[:4], "600", *TRAIN[5:]]
    assert run_rlkube(*short, "--output-dir", str(run)).returncode == 0
    changed = "eval_every=1500,checkpoint_every=500,log_every=256,batch_size=32"
    other = run_rlkube(*short[:-1], changed, "--output-dir", str(run))
    assert other.returncode == 2
    assert "holds a run with other hparams (batch_size: 64 -> 32)" in other.stderr


# -- hparams that may change on resume (HParams.mutable_on_resume) ---------------------------------------------------

ONE_SET_PER_AGENT = ["dqn_cartpole", "vpg_cartpole", "ppo_cartpole", "impala_cartpole", "ddpg_pendulum", "sac_pendulum"]


@pytest.mark.parametrize("name", ONE_SET_PER_AGENT)
def test_a_resume_may_change_only_the_hparams_its_agent_declares_mutable(name: str, tmp_path: Path) -> None:
    saved = get_hparams(name)
    (tmp_path / "hparams.yaml").write_text(yaml.safe_dump({"hparams": to_dict(saved), "seed": 0}))
    lr = saved.lr / 2
    assert check_same_hparams(tmp_path, replace(saved, lr=lr, train_steps=10**6)) == {"lr": (saved.lr, lr)}
    with pytest.raises(UserError) as refused:
        check_same_hparams(tmp_path, replace(saved, lr=lr, hidden_sizes=(8,)))
    mutable = ", ".join(sorted(saved.mutable_on_resume() | RUN_LOOP_MUTABLE))
    assert str(refused.value) == (
        f"{tmp_path} holds a run with other hparams (hidden_sizes: {list(saved.hidden_sizes)} -> [8]); "
        f"use a new --output-dir or the same hparams to resume (a resume may change {mutable})")


def trained_weights(agent_state: AgentState) -> list[np.ndarray]:
    """From an agent's checkpointed state, the weights its optimizers move."""
    return [leaf for owner in agent_state["optimizers"] for leaf in param_leaves(agent_state["params"][owner])]


def train_in_process(hp: Any, copy_dir: Path) -> dict[str, Any]:
    Runner(hp, copy_dir, RunOptions(eval_episodes=0, test_episodes=0, live_progress=False)).run()
    return checkpoint.load(checkpoint.latest(copy_dir / "checkpoints"))["agent"]


@pytest.mark.parametrize("name", ONE_SET_PER_AGENT)
def test_a_resume_with_a_new_learning_rate_and_checkpoint_interval_uses_them_and_records_the_change(
        name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    hp = get_hparams(name, f"{smoke_overrides(name)},train_steps=256,checkpoint_every=256,log_every=64")
    before = train_in_process(hp, tmp_path)
    after = train_in_process(replace(hp, lr=0.0, train_steps=512, checkpoint_every=128), tmp_path)
    # Learning went on after the resume, but with a learning rate of 0 it moved no weight.
    assert after["counters"]["steps"] == 512
    for resumed, saved in zip(trained_weights(after), trained_weights(before), strict=True):
        np.testing.assert_array_equal(resumed, saved)
    # Every agent's run may save more often after a resume (RUN_LOOP_MUTABLE): the two newest checkpoints are kept.
    assert sorted(int(path.name.split("-")[1]) for path in (tmp_path / "checkpoints").glob("ckpt-*")) == [384, 512]
    record = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    assert (record["hparams"]["lr"], record["hparams"]["checkpoint_every"]) == (0.0, 128)
    assert record["changes"] == [{"step": 256, "checkpoint_every": {"from": 256, "to": 128},
                                  "lr": {"from": hp.lr, "to": 0.0}}]
    assert f"hparams changed at step 256: lr: {hp.lr} -> 0.0, checkpoint_every: 256 -> 128" in capfd.readouterr().err


@pytest.fixture
def traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the learning function behind each trace of a compiled learner, as they happen."""
    traced: list[str] = []

    def counting_compile_learner(strategy: Any, learn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def counted(*arrays: Any) -> Any:
            traced.append(learn.__name__)  # Python runs only while tracing
            return learn(*arrays)

        return compile_learner(strategy, counted, *args, **kwargs)

    for module in (dqn, on_policy, impala, continuous):
        monkeypatch.setattr(module, "compile_learner", counting_compile_learner)
    return traced


@pytest.mark.parametrize("name", ONE_SET_PER_AGENT)
def test_a_new_learning_rate_takes_effect_without_a_retrace(name: str, traces: list[str]) -> None:
    agent, envs, obs, learned = trained_agent(name)
    assert learned, "the agent never learned"
    traced = list(traces)
    assert traced, "no learner was traced"
    weights = [w.copy() for w in param_leaves(agent.policy.params)]
    agent.set_hparams(replace(agent.hp, lr=0.0))
    assert run_steps(agent, envs, obs, 100)[1], "nothing was learned after the change"
    assert traces == traced
    for now, before in zip(param_leaves(agent.policy.params), weights, strict=True):
        np.testing.assert_array_equal(now, before)
    assert agent.scalars()["charts/learning_rate"] == 0.0


# Per set, mutable hparams to change and where the learner or the policy reads them back.
READ_BACK: list[tuple[str, dict[str, Any], Callable[[Any], dict[str, Any]]]] = [
    ("dqn_cartpole", {"lr": 0.01, "epsilon_start": 0.5, "epsilon_end": 0.2},
     lambda agent: {"lr": agent.learning_rate.numpy(), "epsilon_start": agent.policy.epsilon(0),
                    "epsilon_end": agent.policy.epsilon(agent.hp.train_steps)}),
    ("ppo_cartpole", {"lr": 0.01, "clip_range": 0.1, "ent_coef": 0.01, "vf_coef": 1.0, "gamma": 0.9, "gae_lambda": 0.5},
     lambda agent: {"lr": agent.coefficients()["learning_rate"], "clip_range": agent.coefficients()["clip_range"],
                    "ent_coef": agent._graph_coefficients()["ent_coef"],
                    "vf_coef": agent._graph_coefficients()["vf_coef"], **vars(agent.advantage_estimator())}),
    ("impala_cartpole", {"lr": 0.01, "ent_coef": 0.01, "vf_coef": 1.0, "gamma": 0.9, "rho_bar": 2.0, "c_bar": 0.5},
     lambda agent: {name: value for name, value in agent._graph_coefficients().items() if name != "learning_rate"}
     | {"lr": agent.coefficients()["learning_rate"]}),
    ("sac_pendulum", {"lr": 0.01, "target_entropy": -3.0},
     lambda agent: {"lr": agent.learning_rate.numpy(), "target_entropy": agent.target_entropy.numpy()}),
    ("sac_mountaincar_continuous", {"init_ent_coef": 0.5},
     lambda agent: {"init_ent_coef": np.exp(agent.log_alpha.numpy())}),
    ("ddpg_pendulum", {"lr": 0.01, "action_noise_std": 0.3},
     lambda agent: {"lr": agent.learning_rate.numpy(), "action_noise_std": agent.policy.noise.std}),
]


@pytest.mark.parametrize(("name", "changes", "read_back"), READ_BACK, ids=[row[0] for row in READ_BACK])
def test_set_hparams_puts_each_mutable_value_where_the_agent_reads_it(
        name: str, changes: dict[str, Any], read_back: Callable[[Any], dict[str, Any]]) -> None:
    agent = trained_agent(name, steps=0)[0]
    assert set(changes) <= agent.hp.mutable_on_resume()
    agent.set_hparams(replace(agent.hp, **changes))
    assert read_back(agent) == pytest.approx(changes)
    with pytest.raises(ValueError, match="cannot change hidden_sizes mid-run"):
        agent.set_hparams(replace(agent.hp, hidden_sizes=(8,)))


# -- the agent's state and the run directory's format (rlkube.rundir.layout.FORMAT) ---------------------------------

@pytest.mark.parametrize("name", ONE_SET_PER_AGENT)
def test_every_agents_state_has_the_one_named_shape(name: str) -> None:
    state = trained_agent(name, steps=0)[0].state_dict()
    assert list(state) == list(AgentState.__annotations__)
    assert state["optimizers"].keys() <= state["params"].keys(), "an optimizer is keyed by the params it moves"
    assert all(isinstance(tree, dict) for tree in state["params"].values())


# Run directories an rlkube of format 1 wrote (tests/data/format-1/README.md says how), by set: the overrides.
FORMAT_1_RUNS = Path(__file__).parent / "data" / "format-1"
FORMAT_1_OVERRIDES = {
    "dqn_cartpole": "hidden_sizes=8;8,learning_starts=50,train_freq=20,gradient_steps=4,batch_size=16,memory_size=256",
    "ppo_cartpole": "hidden_sizes=8;8,n_steps=16,batch_size=32,n_epochs=2",
    "td3_pendulum": "hidden_sizes=8;8,learning_starts=50,batch_size=16,memory_size=256",
    "sac_pendulum": "hidden_sizes=8;8,learning_starts=50,batch_size=16,memory_size=256",
}


@pytest.mark.parametrize("name", sorted(FORMAT_1_OVERRIDES))
def test_a_run_directory_of_format_1_resumes_exactly(name: str, tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(FORMAT_1_RUNS / name / "run", run)
    assert layout.checkpoint_format(run / "checkpoints" / "ckpt-256") == 1
    hp = get_hparams(name, f"{FORMAT_1_OVERRIDES[name]},train_steps=512,checkpoint_every=256,log_every=128")
    runner = Runner(hp, run, RunOptions(eval_episodes=0, test_episodes=0, live_progress=False))
    runner.run()
    assert "resumed from" in capfd.readouterr().err
    latest = checkpoint.latest(run / "checkpoints")
    assert (latest.name, layout.checkpoint_format(latest)) == ("ckpt-512", layout.FORMAT)
    # Bit for bit where the format-1 rlkube's uninterrupted run ended, in today's shape.
    uninterrupted = pickle.loads((FORMAT_1_RUNS / name / "final-agent-state.pkl").read_bytes())
    assert_same_state(checkpoint.load(latest)["agent"], runner.agent.upgrade_state(uninterrupted))
