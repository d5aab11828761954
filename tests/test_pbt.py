"""`rlkube pbt`: bad input refused in one line, decisions drawn from the seed alone, an exploit that copies the
donor's whole state while the member keeps its own random streams and logs, a replay that is exact, and a controller
that survives `kill -9`.

Whole runs go on two targets: the local one, whose members train for real (the full tier), and the fake one
(tests/fake_target.py), whose members wait at each boundary and take exploits in virtual time (the per-change tier)."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import yaml

from rlkube.chunked import Chunks
from rlkube.launch.pbt import controller
from rlkube.launch.pbt.config import PBTConfig, check_mutations, decide, hparam_limits, initial_params
from rlkube.launch.pbt.exploit import copy_member_state
from rlkube.launch.sweep.space import check_space
from rlkube.rl.hparams import get_hparams
from rlkube.run.options import TrainOptions
from rlkube.run.runner import Runner, RunOptions
from rlkube.rundir import checkpoint, layout
from rlkube.storage.pbt_decisions import write_decision
from tests.conftest import rlkube_command, run_rlkube, scalar_steps
from tests.fake_target import fake_env, fake_profile
from tests.test_agents import trained_agent
from tests.test_resume import ONE_SET_PER_AGENT, chunked_rows

# Three generations of 1000 steps, four members, half of them exploited at each boundary.
QUICK = ["--hparams", "dqn_cartpole", "--train-steps", "3000", "--eval-episodes", "2", "--test-episodes", "1",
         "--hparam-override", "eval_every=500,checkpoint_every=500,learning_starts=200",
         "--population", "4", "--interval", "1000", "--quantile", "0.5",
         "--mutate", "lr=log_uniform:1e-4:1e-2", "--mutate", "epsilon_end=uniform:0.01:0.2"]
# Where whole runs go: for real on the local target (the full tier), in virtual time on the fake one.
TARGETS = [pytest.param("local", marks=pytest.mark.full), "fake"]


def is_random_stream(path: tuple[str, ...]) -> bool:
    """Whether a path in an agent's state (AgentState) holds a random stream: the learner's, in its `rng` group, or
    what its policy and its memory keep under `rng`."""
    return path[0] == "rng" or path[-1] == "rng"


def rlkube(data_dir: Path, *args: str) -> Any:
    return run_rlkube(*args, env={"RLKUBE_DATA_DIR": str(data_dir)}, cwd=data_dir.parent)


def status(data_dir: Path, name: str) -> dict[str, Any]:
    shown = rlkube(data_dir, "pbt", "status", name, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.fixture(scope="module", params=TARGETS)
def finished_run(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One uninterrupted run, followed to its end. Afterwards every run of the module is cancelled: a failed test
    leaves no controller or member running."""
    root = tmp_path_factory.mktemp("pbt")
    data = root / "data"
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "fake":
            fake_profile(root)
            patch.setenv("PYTHONPATH", fake_env()["PYTHONPATH"])
            # A generation in about a second: a controller killed after the first is killed mid-run.
            patch.setenv("RLKUBE_FAKE_STEPS_PER_SECOND", "1000")
        try:
            started = rlkube(data, "pbt", "start", *QUICK, "--cluster", request.param, "--name", "base", "--follow")
            assert started.returncode == 0, started.stdout + started.stderr
            assert "PBT base done" in started.stdout
            yield data, "base"
        finally:
            for run in (data / "pbt").glob("*"):
                rlkube(data, "pbt", "cancel", run.name)


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


def test_a_config_written_by_an_older_rlkube_reads_back_without_its_removed_settings() -> None:
    config = _config(seed=3)
    written_then = {**json.loads(json.dumps(config.to_dict())), "poll_seconds": 1.0}
    assert PBTConfig.from_dict(written_then) == config


def test_decisions_depend_only_on_the_seed_and_copy_the_top_quantile_into_the_bottom() -> None:
    config = _config()
    hp = get_hparams("dqn_cartpole")
    space = check_mutations(config.mutations, hp, "test")
    limits = hparam_limits(hp, space)
    params = initial_params(config, space)
    member_scores = [10.0, 80.0, 30.0, 500.0, 20.0, 470.0, 60.0, 5.0]
    decided = decide(config, space, limits, 3, 20000, member_scores, params)
    assert decide(config, space, limits, 3, 20000, member_scores, params) == decided
    assert [e.member for e in decided] == [0, 7]  # the bottom quarter, lowest scores
    assert {e.donor for e in decided} <= {3, 5}  # the top quarter
    for exploit in decided:
        donor_lr, new_lr = params[exploit.donor]["lr"], exploit.new["lr"]
        perturbed = new_lr in (pytest.approx(donor_lr * 0.8, rel=1e-3), pytest.approx(donor_lr * 1.2, rel=1e-3))
        assert perturbed or 1e-4 <= new_lr <= 1e-2  # else resampled from the distribution
        assert exploit.new["epsilon_end"] in (0.01, 0.05, 0.1, 0.2)
        assert exploit.old == params[exploit.member]
    other_seed = _config(seed=1)
    other = initial_params(other_seed, space)
    assert other != params
    assert decide(other_seed, space, limits, 3, 20000, member_scores, other) != decided
    assert decide(replace(config, ready_after=25000), space, limits, 3, 20000, member_scores, params) == []


def test_perturbing_leaves_the_first_range_but_not_the_hparams_own() -> None:
    config = _config(resample_prob=0.0, perturb=(1.5, 1.5))
    hp = get_hparams("dqn_cartpole")
    space = check_space({"lr": {"log_uniform": [0.1, 0.5]}}, hp, "test")
    params = [{"lr": 0.5} for _ in range(8)]
    for generation in range(3):
        higher_lr_scores_higher = [p["lr"] + member * 1e-6 for member, p in enumerate(params)]
        for exploit in decide(config, space, hparam_limits(hp, space), generation, 5000, higher_lr_scores_higher,
                              params):
            assert exploit.new["lr"] == min(params[exploit.donor]["lr"] * 1.5, 1.0)
            params[exploit.member] = exploit.new
    assert max(p["lr"] for p in params) == 1.0  # lr's own upper bound


def test_exploring_a_choice_moves_to_a_neighbour_without_resampling() -> None:
    config = _config(resample_prob=0.0)
    hp = get_hparams("dqn_cartpole")
    space = check_space({"epsilon_end": {"choice": [0.01, 0.05, 0.1, 0.2]}}, hp, "test")
    params = [{"epsilon_end": 0.05} for _ in range(8)]
    for generation in range(20):
        for exploit in decide(config, space, hparam_limits(hp, space), generation, 5000, [float(i) for i in range(8)],
                              params):
            assert exploit.new["epsilon_end"] in (0.01, 0.1)


# -- the exploit ---------------------------------------------------------------------------------------------------

def _leaves(state: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(state, Chunks):  # a replay's array, in memory or in segments: its rows and their versions
        yield path, chunked_rows(state)
        yield (*path, "versions"), state.versions
    elif isinstance(state, dict) and "bit_generator" not in state:
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
    streams = {path for path in before if is_random_stream(path)}
    assert streams
    assert changed == streams
    agent.reseed(1234)
    assert all(_equal(after[path], value) for path, value in _leaves(agent.state_dict()))


def _wait_for(condition: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_an_exploited_member_gets_the_donors_whole_state_with_its_own_streams_and_logs(tmp_path: Path) -> None:
    """Two members wait at their boundary; member 0 receives member 1's checkpoint and goes on from it."""
    output = tmp_path / "run"
    copies = tmp_path / "copies.json"
    copies.write_text(json.dumps([{"index": 0, "seed": 0, "overrides": "lr=0.001"},
                                  {"index": 1, "seed": 1, "overrides": "lr=0.003"}]))
    overrides = "eval_every=500,checkpoint_every=500,learning_starts=200"
    members = subprocess.Popen(rlkube_command(
        "train", "--hparams", "dqn_cartpole", "--train-steps", "2000", "--pbt-interval", "1000", "--hparam-override",
        overrides, "--eval-episodes", "2", "--test-episodes", "0", "--copies-file", str(copies), "--output-dir",
        str(output)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        receiver, donor = layout.copy_dir(output, 0), layout.copy_dir(output, 1)
        _wait_for(lambda: all((d / "checkpoints/ckpt-1000" / layout.COMPLETE_MARKER).exists()
                              for d in (receiver, donor)), "both members at the boundary")
        time.sleep(2)
        assert members.poll() is None  # they wait for the decision
        own_lengths = {p.name: p.stat().st_size for p in [*receiver.glob(layout.EVENTS_GLOB),
                                                           receiver / layout.METRICS_FILE]}
        hp = get_hparams("dqn_cartpole", overrides)
        space = check_mutations({"lr": {"log_uniform": [1e-4, 1e-2]}}, hp, "test")
        exploit = decide(replace(_config(), population=2, quantile=0.5), space, hparam_limits(hp, space), 0, 1000,
                         [1.0, 2.0], [{"lr": 0.001}, {"lr": 0.003}])[0]
        assert (exploit.member, exploit.donor) == (0, 1)
        copy_member_state(str(output), exploit, seed=99)
        copy_member_state(str(output), exploit, seed=99)  # a restarted controller redoing it changes nothing
        donor_file = donor / layout.CHECKPOINTS / "ckpt-1000" / layout.STATE_FILE
        assert (receiver / layout.CHECKPOINTS / "ckpt-1000" / layout.STATE_FILE).read_bytes() == \
            donor_file.read_bytes()
        assert json.loads((receiver / layout.EXPLOIT_FILE).read_text())["logs"] == own_lengths
        # What the member will restore, checked in this process on a copy of its directory as it is now.
        scratch, donor_checkpoint = tmp_path / "scratch", tmp_path / "donor-checkpoints" / "ckpt-1000"
        shutil.copytree(receiver, scratch)
        # The donor goes on and prunes its old checkpoints (and their segments).
        shutil.copytree(donor_file.parent.parent, donor_checkpoint.parent)
        for member, decision in ((0, {"donor": 1, "seed": 99}), (1, None)):
            write_decision(layout.copy_dir(output, member), {"generation": 0, "step": 1000,
                                                             "hparams": {"lr": exploit.new["lr"] if member == 0
                                                                         else 0.003}, "exploit": decision})
        assert members.wait(timeout=300) == 0, members.stderr.read()
    finally:
        members.terminate()  # forwarded to the copies, which stop even while waiting for a decision
        members.wait(timeout=120)
    write_decision(scratch, {"generation": 0, "step": 1000, "hparams": {"lr": exploit.new["lr"]},
                             "exploit": {"donor": 1, "seed": 99}})
    runner = Runner(replace(hp, train_steps=1000), scratch, RunOptions(seed=0, eval_episodes=2, test_episodes=0,
                                                                       pbt_interval=1000, live_progress=False))
    runner.run()  # restores at step 1000, the end here: nothing more is trained
    restored = dict(_leaves(runner.agent.state_dict()))
    expected = dict(_leaves(checkpoint.load(donor_checkpoint)["agent"]))
    differing = {path for path in expected if not _equal(expected[path], restored[path])}
    # Only the random streams differ; the new learning rate comes from the decision, not the checkpoint.
    assert differing == {path for path in expected if is_random_stream(path)}
    assert runner.agent.learning_rate.numpy() == pytest.approx(exploit.new["lr"])
    # The member went on from the donor's state with its own logs: one evaluation per step, in order.
    evaluations = [json.loads(line)["step"] for line in (receiver / layout.METRICS_FILE).read_text().splitlines()]
    assert evaluations == [500, 1000, 1500, 2000]
    changes = yaml.safe_load((receiver / layout.HPARAMS_FILE).read_text())["changes"]
    assert changes == [{"step": 1000, "lr": {"from": 0.001, "to": exploit.new["lr"]}}]


# -- lineage ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["--output-file", "-o", "--output"])
def test_lineage_draws_where_output_file_says_and_takes_the_old_spelling_for_a_release(tmp_path: Path,
                                                                                        spelling: str) -> None:
    """On a run's config and one generation's line, written as the controller writes them (no member trains)."""
    data = tmp_path / "data"
    config = _config(name="drawn")
    run = data / "pbt" / config.name
    run.mkdir(parents=True)
    (run / controller.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    generation = {"generation": 0, "step": 5000, "scores": [float(m) for m in range(config.population)],
                  "params": controller.current_params(config, [])}
    (run / controller.LINEAGE_FILE).write_text(json.dumps(generation) + "\n")
    drawn = rlkube(data, "pbt", "lineage", config.name, spelling, str(tmp_path / "lineage.png"))
    assert drawn.returncode == 0, drawn.stderr
    assert "member 7 scores best" in drawn.stdout
    assert matplotlib.image.imread(tmp_path / "lineage.png").shape[0] > 100
    notices = [] if spelling == "--output-file" else [
        "note: -o/--output is now --output-file; the old spelling goes in the next release"]
    assert drawn.stderr.strip().splitlines() == notices


# -- whole runs ----------------------------------------------------------------------------------------------------

def test_a_run_reports_status_and_lineage(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    data, name = finished_run
    shown = status(data, name)
    assert shown["generations_done"] == 3
    assert shown["controller"] is None
    assert [m["step"] for m in shown["members"]] == [3000] * 4
    assert sum(m["exploited"] for m in shown["members"]) == 4  # two per boundary, two boundaries
    lineage = [json.loads(line) for line in (data / "pbt" / name / "pbt.jsonl").read_text().splitlines()]
    assert [line["generation"] for line in lineage if "scores" in line] == [0, 1, 2]
    plot = tmp_path / "lineage.png"
    drawn = rlkube(data, "pbt", "lineage", name, "--output-file", str(plot))
    assert drawn.returncode == 0, drawn.stderr
    assert "ancestry" in drawn.stdout
    assert matplotlib.image.imread(plot).shape[0] > 100


@pytest.mark.parametrize("finished_run", [pytest.param("local", marks=pytest.mark.full)], indirect=True)
def test_a_runs_members_log_their_hparams_and_evaluations_as_scalars(finished_run: tuple[Path, str]) -> None:
    """On the local target only: the fake one writes no TensorBoard events."""
    data, name = finished_run
    run_dir = data.parent / "runs" / name
    for member in range(4):
        steps = scalar_steps(layout.copy_dir(run_dir, member))
        assert steps["hparams/lr"]
        assert steps["eval/mean_return"] == sorted(set(steps["eval/mean_return"]))


def test_a_replay_gives_the_same_decisions_and_weights(finished_run: tuple[Path, str]) -> None:
    data, name = finished_run
    replayed = rlkube(data, "pbt", "replay", name, "--wait")
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
        time.sleep(0.05)
    # At once, while generation 1 trains: the whole run takes seconds on an idle machine, and a pause here could
    # outlast it.
    pid = controller.controller_alive(killed)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    resumed = rlkube(data, "pbt", "resume", killed, "--follow")
    assert resumed.returncode == 0, resumed.stderr
    assert "adopted the members' experiment" in resumed.stdout
    assert controller.compare(name, killed) == []


@pytest.mark.full
def test_pbt_ends_a_population_from_a_poor_lr_range_higher_than_the_same_members_run_fixed() -> None:
    """The issue's first test, at a size make test affords: 4 members from learning rates 10-100x too low, 6
    generations. The benchmark at full size (8 members, 50k steps) is on docs/pbt.md."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "pbt_cartpole.py"
    result = subprocess.run([sys.executable, str(bench), "--population", "4", "--train-steps", "15000",
                             "--interval", "2500", "--lr-range", "1e-5:1e-4", "--seeds", "1"],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    arms = json.loads(result.stdout.splitlines()[0])
    assert arms["pbt"]["mean_final"] > arms["fixed"]["mean_final"], arms
    assert arms["pbt"]["controller_s"] < 1.0, arms  # ranking, copies and decisions, per generation
