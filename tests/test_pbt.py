"""`rlkube pbt` on the local target: bad input refused in one line, decisions drawn from the seed alone, an exploit
that copies the donor's whole state while the member keeps its own random streams and logs, a replay that is
exact, and a controller that survives `kill -9`."""

import json
import os
import pickle
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from rlkube.launch.pbt import controller
from rlkube.launch.pbt.config import PBTConfig, check_mutations, decide, initial_params
from rlkube.launch.pbt.exploit import copy_member_state
from rlkube.launch.sweep.space import check_space
from rlkube.rl.hparams import get_hparams
from rlkube.run.options import TrainOptions
from rlkube.run.runner import Runner, RunOptions
from rlkube.rundir import checkpoint, layout
from tests.conftest import run_rlkube, scalar_steps
from tests.test_agents import trained_agent
from tests.test_resume import ONE_SET_PER_AGENT

# Three generations of 1000 steps, four members, half of them exploited at each boundary.
QUICK = ["--hparams", "dqn_cartpole", "--train-steps", "3000", "--eval-episodes", "2", "--test-episodes", "1",
         "--hparam-override", "eval_every=500,checkpoint_every=500,learning_starts=200",
         "--population", "4", "--interval", "1000", "--quantile", "0.5",
         "--mutate", "lr=log_uniform:1e-4:1e-2", "--mutate", "epsilon_end=uniform:0.01:0.2"]
RANDOM_STREAM_KEYS = {"rng", "minibatch_rng", "noise_generator", "generator"}


def rlkube(data_dir: Path, *args: str) -> Any:
    return run_rlkube(*args, env={"RLKUBE_DATA_DIR": str(data_dir)}, cwd=data_dir.parent)


def status(data_dir: Path, name: str) -> dict[str, Any]:
    shown = rlkube(data_dir, "pbt", "status", name, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One uninterrupted run, followed to its end."""
    root = tmp_path_factory.mktemp("pbt")
    started = rlkube(root / "data", "pbt", "start", *QUICK, "--name", "base", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "PBT base done" in started.stdout
    return root / "data", "base"


# -- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--mutate", "hidden_sizes=choice:64,128"], "hidden_sizes cannot change mid-run, so PBT cannot mutate it; "
                                                 "dqn can mutate epsilon_end, epsilon_start, lr"),
    (["--mutate", "gamma=choice:0.98,0.99"], "gamma cannot change mid-run"),
    (["--mutate", "lr=log_uniform:1e-4"], "bad --mutate 'lr=log_uniform:1e-4': write NAME=log_uniform:LOW:HIGH"),
    (["--mutate", "lr=log_uniform:1e-2:1e-4"], "'lr': low must be below high"),
    (["--mutate", "lr=log_uniform:1e-4:1e-2", "--population", "1"], "--population must be at least 2"),
    (["--mutate", "lr=log_uniform:1e-4:1e-2", "--quantile", "0.6"], "--quantile must be in (0, 0.5]"),
    (["--mutate", "lr=log_uniform:1e-4:1e-2", "--population", "2", "--quantile", "0.25"],
     "--quantile 0.25 of --population 2 is no member: use a population of at least 4"),
    (["--mutate", "lr=log_uniform:1e-4:1e-2", "--interval", "1234"], "must be a multiple of the set's eval_every"),
    ([], "what does PBT mutate?"),
])
def test_bad_input_is_one_line_and_starts_nothing(flags: list[str], message: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shown = rlkube(data, "pbt", "start", "--hparams", "dqn_cartpole", "--interval", "5000", "--name", "bad", *flags)
    assert shown.returncode != 0
    lines = shown.stderr.strip().splitlines()
    assert len(lines) == 1, shown.stderr
    assert message in lines[0]
    assert not (data / "pbt" / "bad").exists()


# -- decisions ---------------------------------------------------------------------------------------------------

def _config(seed: int = 0, **changes: Any) -> PBTConfig:
    train = TrainOptions("dqn_cartpole", seed=seed)
    mutations = {"lr": {"log_uniform": [1e-4, 1e-2]}, "epsilon_end": {"choice": [0.01, 0.05, 0.1, 0.2]}}
    return replace(PBTConfig("p", "local", train, mutations, population=8, interval=5000), **changes)


def test_decisions_depend_only_on_the_seed_and_copy_the_top_quantile_into_the_bottom() -> None:
    config = _config()
    space = check_mutations(config.mutations, get_hparams("dqn_cartpole"), "test")
    params = initial_params(config, space)
    member_scores = [10.0, 80.0, 30.0, 500.0, 20.0, 470.0, 60.0, 5.0]
    decided = decide(config, space, 3, 20000, member_scores, params)
    assert decide(config, space, 3, 20000, member_scores, params) == decided
    assert [e.member for e in decided] == [0, 7]  # the bottom quarter, lowest scores
    assert {e.donor for e in decided} <= {3, 5}  # the top quarter
    for exploit in decided:
        donor = params[exploit.donor]
        assert 1e-4 <= exploit.new["lr"] <= 1e-2
        resampled_or_perturbed = exploit.new["lr"] in (pytest.approx(donor["lr"] * 0.8, rel=1e-3),
                                                       pytest.approx(donor["lr"] * 1.2, rel=1e-3))
        assert resampled_or_perturbed or exploit.new["lr"] != donor["lr"]
        assert exploit.new["epsilon_end"] in (0.01, 0.05, 0.1, 0.2)
    other_seed = _config(seed=1)
    assert decide(other_seed, space, 3, 20000, member_scores, params) != decided or \
        initial_params(other_seed, space) != params
    assert decide(replace(config, ready_after=25000), space, 3, 20000, member_scores, params) == []


def test_exploring_a_choice_moves_to_a_neighbour_without_resampling() -> None:
    config = _config(resample_prob=0.0)
    space = check_space({"epsilon_end": {"choice": [0.01, 0.05, 0.1, 0.2]}}, get_hparams("dqn_cartpole"), "test")
    params = [{"epsilon_end": 0.05} for _ in range(8)]
    for generation in range(20):
        for exploit in decide(config, space, generation, 5000, [float(i) for i in range(8)], params):
            assert exploit.new["epsilon_end"] in (0.01, 0.1)


# -- the exploit ---------------------------------------------------------------------------------------------------

def _leaves(state: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(state, dict) and "bit_generator" not in state:
        for key, value in state.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(state, list | tuple) and not isinstance(state, np.ndarray):
        for index, value in enumerate(state):
            yield from _leaves(value, (*path, str(index)))
    else:
        yield path, state


def _equal(a: Any, b: Any) -> bool:
    return pickle.dumps(a) == pickle.dumps(b)


@pytest.mark.parametrize("name", ONE_SET_PER_AGENT)
def test_reseeding_changes_every_random_stream_and_nothing_else(name: str) -> None:
    agent = trained_agent(name, steps=100)[0]
    before = dict(_leaves(agent.state_dict()))
    agent.reseed(1234)
    after = dict(_leaves(agent.state_dict()))
    changed = {path for path in before if not _equal(before[path], after[path])}
    streams = {path for path in before if path[-1] in RANDOM_STREAM_KEYS}
    assert streams
    assert changed == streams
    agent.reseed(1234)
    assert all(_equal(after[path], value) for path, value in _leaves(agent.state_dict()))


def test_an_exploited_member_gets_the_donors_whole_state_with_its_own_streams_and_logs(tmp_path: Path) -> None:
    output = tmp_path / "run"
    copies = tmp_path / "copies.json"
    copies.write_text(json.dumps([{"index": 0, "seed": 0, "overrides": "lr=0.001"},
                                  {"index": 1, "seed": 1, "overrides": "lr=0.003"}]))
    trained = run_rlkube("train", "--hparams", "dqn_cartpole", "--train-steps", "3000", "--pause-at-step", "1000",
                         "--hparam-override", "eval_every=500,checkpoint_every=500,learning_starts=200",
                         "--eval-episodes", "2", "--copies-file", str(copies), "--output-dir", str(output))
    assert trained.returncode == 0, trained.stderr
    receiver, donor = layout.copy_dir(output, 0), layout.copy_dir(output, 1)
    paused = json.loads((receiver / layout.SUMMARY_FILE).read_text())
    assert paused["total_steps"] == 1000
    assert paused["test_mean_return"] is None
    own_lengths = {p.name: p.stat().st_size for p in [*receiver.glob(layout.EVENTS_GLOB), receiver / "metrics.jsonl"]}

    config = _config()
    exploit = decide(replace(config, population=2, quantile=0.5), check_mutations(
        {"lr": {"log_uniform": [1e-4, 1e-2]}}, get_hparams("dqn_cartpole"), "test"), 0, 1000, [1.0, 2.0],
        [{"lr": 0.001}, {"lr": 0.003}])[0]
    assert (exploit.member, exploit.donor) == (0, 1)
    copy_member_state(str(output), exploit, seed=99)
    copied = checkpoint.latest(layout.checkpoints_dir(receiver))
    assert copied is not None
    assert copied.name == "ckpt-1000"
    donor_file = donor / layout.CHECKPOINTS / "ckpt-1000" / layout.STATE_FILE
    assert (copied / layout.STATE_FILE).read_bytes() == donor_file.read_bytes()
    copy_member_state(str(output), exploit, seed=99)  # a second controller redoing it changes nothing
    assert json.loads((receiver / layout.EXPLOIT_FILE).read_text())["logs"] == own_lengths

    hp = replace(get_hparams("dqn_cartpole", "eval_every=500,checkpoint_every=500,learning_starts=200"),
                 train_steps=3000, lr=exploit.new["lr"])
    runner = Runner(hp, receiver, RunOptions(seed=0, eval_episodes=2, test_episodes=0, pause_at_step=1000,
                                             live_progress=False))
    runner.run()  # restores at the boundary and stops there: nothing trained
    donor_state = checkpoint.load(donor / "checkpoints/ckpt-1000")
    restored, expected = dict(_leaves(runner.agent.state_dict())), dict(_leaves(donor_state["agent"]))
    differing = {path for path in expected if not _equal(expected[path], restored[path])}
    # Besides the random streams, only the new hparam differs (Adam keeps its learning rate in a variable).
    new_lr = {path for path in differing if isinstance(restored[path], np.ndarray | np.generic)
              and np.ndim(restored[path]) == 0 and float(restored[path]) == pytest.approx(exploit.new["lr"], rel=1e-5)}
    assert differing - new_lr == {path for path in expected if path[-1] in RANDOM_STREAM_KEYS}
    assert runner.agent.optimizer.learning_rate.numpy() == pytest.approx(exploit.new["lr"])
    assert runner.state.step == donor_state["loop"].step == 1000
    # The member's logs are its own, as long as they were at the boundary.
    assert {p.name: p.stat().st_size for p in receiver.glob(layout.EVENTS_GLOB)
            if p.name in own_lengths} == {k: v for k, v in own_lengths.items() if k != "metrics.jsonl"}
    assert (receiver / "metrics.jsonl").stat().st_size == own_lengths["metrics.jsonl"]


# -- whole runs ----------------------------------------------------------------------------------------------------

def test_a_run_reports_status_lineage_and_hparam_scalars(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    data, name = finished_run
    shown = status(data, name)
    assert shown["generations_done"] == 3
    assert shown["controller"] is None
    assert [m["step"] for m in shown["members"]] == [3000] * 4
    assert sum(m["exploited"] for m in shown["members"]) == 4  # two per boundary, two boundaries
    lineage = [json.loads(line) for line in (data / "pbt" / name / "pbt.jsonl").read_text().splitlines()]
    assert [line["generation"] for line in lineage if "scores" in line] == [0, 1, 2]
    plot = tmp_path / "lineage.png"
    drawn = rlkube(data, "pbt", "lineage", name, "-o", str(plot))
    assert drawn.returncode == 0, drawn.stderr
    assert "ancestry" in drawn.stdout
    assert matplotlib.image.imread(plot).shape[0] > 100
    run_dir = data.parent / "runs" / name
    for member in range(4):
        steps = scalar_steps(layout.copy_dir(run_dir, member))
        assert steps["hparams/lr"]
        assert steps["eval/mean_return"] == sorted(set(steps["eval/mean_return"]))


def test_a_replay_gives_the_same_decisions_and_weights(finished_run: tuple[Path, str]) -> None:
    data, name = finished_run
    replayed = rlkube(data, "pbt", "replay", name, "--follow")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"replay {name}-replay is identical to {name}" in replayed.stdout
    assert (data / "pbt" / name / "pbt.jsonl").read_bytes() == (data / "pbt" / f"{name}-replay" /
                                                                 "pbt.jsonl").read_bytes()


def test_a_controller_killed_mid_generation_resumes_to_the_same_result(
        finished_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    data, name = finished_run
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(data))
    killed = f"{name}-killed"
    started = rlkube(data, "pbt", "replay", name, "--name", killed)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 300
    while not controller.generations(controller.read_lineage(killed)) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # into generation 1's training
    pid = controller.controller_alive(killed)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    resumed = rlkube(data, "pbt", "resume", killed, "--follow")
    assert resumed.returncode == 0, resumed.stderr
    assert "adopted the members' experiment" in resumed.stdout
    assert controller.compare(name, killed) == []
