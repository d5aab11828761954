"""`rlkube sweep`: spaces checked before anything runs, trials as multi-seed experiments that learn and are pruned, a
driver that survives `kill -9`, a failed trial retried, studies in a journal file and in a real PostgreSQL server
shared by two drivers, and the outputs (status, best, plot, confirm, TensorBoard).

The orchestration tests run each sweep on two targets: the local one, whose trials train for real (the full tier),
and the fake one (tests/fake_target.py), whose trials run in virtual time (the per-change tier)."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.image
import optuna
import pytest
import yaml

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.sweep import study as studies
from rlkube.launch.sweep.config import SweepConfig, copy_value, intermediate_values, per_seed_values
from rlkube.launch.sweep.driver import STD, VALUES, default_storage
from rlkube.launch.sweep.methods import PRUNERS, SAMPLERS
from rlkube.launch.sweep.space import check_space, default_space, overrides_of
from rlkube.rl.hparams import HParams, get_hparams, hparams_registry
from rlkube.run.options import TrainOptions
from tests.conftest import rlkube_command, run_rlkube
from tests.db_servers import PostgresServer
from tests.fake_target import fake_env, fake_profile, kill_copy

# Short PPO trials: an evaluation every 1000 steps, so intermediate values arrive for the pruner.
QUICK = ["--hparams", "ppo_cartpole", "--eval-episodes", "2", "--test-episodes", "1",
         "--hparam-override", "eval_every=1000,checkpoint_every=1000"]
SPACE = {"lr": {"log_uniform": ["1e-5", "3e-3"]}, "n_epochs": {"choice": [1, 20]}}
# Where a sweep's trials run: for real on the local target (the full tier), in virtual time on the fake one.
TARGETS = [pytest.param("local", marks=pytest.mark.full), "fake"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLKUBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return tmp_path


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The target the test's trials run on, known to every rlkube process the test starts (and those they start)."""
    use_target(request.param, workdir, monkeypatch)
    return request.param


def use_target(target: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if target == "fake":
        fake_profile(directory)
        monkeypatch.setenv("PYTHONPATH", fake_env()["PYTHONPATH"])


def rlkube(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    return run_rlkube(*args, env={"RLKUBE_DATA_DIR": str(data_dir or os.environ["RLKUBE_DATA_DIR"])}, cwd=Path.cwd())


def sweep_state(name: str, *extra: str, data_dir: Path | None = None) -> dict[str, Any]:
    shown = rlkube("sweep", "status", name, "-o", "json", *extra, data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def wait_for(condition: Any, what: str, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_driver(name: str, timeout: float = 900, data_dir: Path | None = None) -> dict[str, Any]:
    return wait_for(lambda: (s := sweep_state(name, data_dir=data_dir))["driver"] == "not running" and s,
                    f"sweep {name}'s driver to end", timeout)


def trial_processes(run_dir: Path) -> list[int]:
    """Processes whose command line names this run directory: trials' copies still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(run_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_local_trainer(workdir: Path, experiment: str) -> None:
    worker = store.get(experiment).backend["pids"]["0"]
    trainer = [pid for pid in trial_processes(workdir / "runs" / experiment) if pid != worker]
    os.kill(trainer[0], signal.SIGKILL)


# How each target ends a trial's first copy as SIGKILL does, and what in its record says which copies it started.
KILL_FIRST_COPY = {"local": kill_local_trainer,
                   "fake": lambda _workdir, experiment: kill_copy(store.get(experiment), 0)}
STARTED_BY = {"local": "pids", "fake": "started"}


# The space and the objective: pure checks

def test_a_space_file_becomes_dimensions_of_each_kind() -> None:
    hp = get_hparams("ppo_cartpole")
    space = check_space({"lr": {"log_uniform": ["1e-5", 1e-2]}, "gamma": {"uniform": [0.9, 0.9999]},
                         "n_steps": {"int": [16, 256], "log": True}, "batch_size": {"choice": [32, 64]},
                         "hidden_sizes": {"choice": [[64, 64], [256]]}, "lr_schedule": {"choice": ["linear"]}},
                        hp, "space.yaml")
    assert (space["lr"].kind, space["lr"].low, space["lr"].log) == ("uniform", 1e-5, True)
    assert (space["gamma"].kind, space["gamma"].log) == ("uniform", False)
    assert (space["n_steps"].kind, space["n_steps"].low, space["n_steps"].high, space["n_steps"].log) == \
        ("int", 16, 256, True)
    assert space["batch_size"].choices == (32, 64)
    assert space["hidden_sizes"].choices == ("64;64", "256")  # tuples travel as override text
    assert space["lr_schedule"].choices == ("linear",)


@pytest.mark.parametrize("name", sorted(hparams_registry))
def test_every_set_has_a_default_space_that_fits_its_hparams(name: str) -> None:
    hp = get_hparams(name)
    assert set(default_space(hp)) == set(type(hp).sweep_space)


def test_an_agent_without_a_default_space_is_asked_for_a_space_file() -> None:
    with pytest.raises(UserError, match=r"^HParams \(dqn\) has no default search space: give one with --space FILE"):
        default_space(HParams())


@pytest.mark.parametrize(("entry", "message"), [
    ({"lrr": {"uniform": [0.1, 0.2]}}, "unknown PPOHParams hparam 'lrr'; did you mean lr?"),
    ({"batch_size": {"uniform": [1, 2]}}, "'batch_size' is int, so it takes int or choice, not uniform"),
    ({"gamma": {"uniform": [0.5, 2]}}, "'gamma': [0.5, 2] leaves its allowed range [0.0, 1.0]"),
    ({"n_epochs": {"choice": []}}, "'n_epochs': choice takes a non-empty list"),
    ({"lr": {"uniform": [0.1, 0.01]}}, "'lr': low must be below high"),
    ({"lr": {"log_uniform": [0, 0.1]}}, "'lr': a log scale needs low > 0"),
    ({"n_steps": {"int": [1.5, 8]}}, "'n_steps': int takes whole numbers"),
    ({"activation": {"choice": ["tanh", "gelu"]}}, "'activation': choice 'gelu': hparam 'activation' must be one of"),
    ({"env": {"choice": ["CartPole-v1"]}}, "'env' is fixed for the whole sweep"),
    ({"lr": [1e-4, 1e-3]}, "'lr': write one of {uniform: [lo, hi]}"),
    ({"lr": {"uniform": [1e-4, 1e-3], "step": 2}}, "'lr': write one of {uniform: [lo, hi]}"),
])
def test_a_bad_space_entry_is_named_with_what_would_be_right(entry: dict, message: str) -> None:
    with pytest.raises(UserError, match=r"^space\.yaml: ") as raised:
        check_space(entry, get_hparams("ppo_cartpole"), "space.yaml")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_every_mistake_of_a_space_gets_its_own_line() -> None:
    with pytest.raises(UserError) as raised:
        check_space({"lrr": {"uniform": [0.1, 0.2]}, "lr": {"log_uniform": [1e-4, 1e-2]},
                     "gamma": {"uniform": [0.5, 2]}, "n_epochs": {"choice": []}}, get_hparams("ppo_cartpole"), "s")
    assert len(str(raised.value).splitlines()) == 3


def test_a_trials_value_is_its_seeds_mean_under_the_objective() -> None:
    curve = [{"step": s, "mean_return": r} for s, r in ((1000, 10.0), (2000, 50.0), (3000, 30.0))]
    assert copy_value(curve, "final") == 30.0
    assert copy_value(curve, "best") == 50.0
    assert copy_value(curve, "last:2") == 40.0
    assert copy_value([], "final") is None
    # The pruner sees a step only once every seed has evaluated it.
    evaluations = {0: curve, 1: curve[:2]}
    assert intermediate_values(evaluations, 2) == {1000: 10.0, 2000: 50.0}
    assert per_seed_values({0: curve[:1], 1: [{"step": 1000, "mean_return": 4.0}]}, 2) == {2000: 10.0, 2001: 4.0}


# Optuna underneath: every sampler and pruner, as a sweep configures it

def _config(**changes: Any) -> SweepConfig:
    space = {"n_epochs": {"choice": [1, 5, 20]}, "n_steps": {"int": [16, 64]}, "gae_lambda": {"choice": [0.9, 0.95]}}
    return SweepConfig(**{"name": "s", "cluster": "local", "train": TrainOptions("ppo_cartpole", seed=3),
                          "space": space, "trials": 8, "parallel": 1, "seeds": 2, **changes})


def test_optuna_builds_every_sampler_and_pruner_a_sweep_may_name_and_no_other() -> None:
    assert studies.sampler_factories.names() == sorted(SAMPLERS)
    assert studies.pruner_factories.names() == sorted(PRUNERS)


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_each_sampler_proposes_runnable_params_inside_the_space_and_replays_from_its_seed(sampler: str) -> None:
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        pytest.skip("Optuna's GPSampler needs PyTorch, which rlkube does not install; "
                    "test_gp_without_pytorch_is_refused_in_one_line checks the refusal")
    config = _config(sampler=sampler)
    hp = get_hparams("ppo_cartpole")
    space = check_space(config.space, hp, "space")
    distributions = {name: studies.distribution(dim) for name, dim in space.items()}

    def proposals() -> list[dict[str, Any]]:
        study = optuna.create_study(direction="maximize", sampler=studies.sampler_for(config, space))
        asked = []
        for _ in range(config.trials):
            trial = study.ask(distributions)
            asked.append(trial.params)
            study.tell(trial, trial.params["n_steps"] * trial.params["n_epochs"])  # a landscape to climb
        return asked

    first = proposals()
    for params in first:
        assert params["n_epochs"] in (1, 5, 20)
        assert 16 <= params["n_steps"] <= 64
        TrainOptions("ppo_cartpole", overrides_of(params)).resolved_hparams()  # what a trial's copies run
    assert proposals() == first


def test_gp_without_pytorch_is_refused_in_one_line(workdir: Path) -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed here, so GPSampler works (the sampler test covers it)")
    result = rlkube("sweep", "start", *QUICK, "--space", "space.yaml", "--sampler", "gp")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --sampler gp is Optuna's GPSampler, which is built on PyTorch, and rlkube "
                                     "does not install PyTorch (see docs/sweeps.md); pip install torch, "
                                     "or use tpe")
    assert not (workdir / "data" / "sweeps").exists()


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_each_pruner_stops_a_trial_far_below_the_others_and_none_never_does(pruner: str) -> None:
    """Nine trials climb steadily (their two seeds apart); a tenth stays near zero. The pruner, configured as a sweep
    configures it (warm-up in environment steps, startup trials), stops the tenth before its last evaluation.
    The study is named as a sweep names it: Hyperband assigns trials to brackets by a hash of the study's name, and an
    unnamed study's random name put the tenth trial in a bracket without peers in about 3% of runs."""
    config = _config(pruner=pruner, trials=12)
    study = optuna.create_study(study_name=config.name, direction="maximize",
                                pruner=studies.pruner_for(config, train_steps=10_000, eval_every=1000))
    report = per_seed_values if PRUNERS[pruner].per_seed else intermediate_values
    steps = range(1000, 10_001, 1000)

    def curve(level: float) -> dict[int, list[dict[str, float]]]:
        return {k: [{"step": s, "mean_return": level * s / 100 + 3 * k} for s in steps] for k in range(2)}

    for good in range(9):
        trial = study.ask()
        for key, value in report(curve(1.0 + good / 10), 2).items():
            trial.report(value, key)
            assert not trial.should_prune()  # asked after every report, as the driver does (halving records rungs)
        study.tell(trial, 100.0 + good)
    bad = study.ask()
    stopped_at = None
    for key, value in report(curve(0.01), 2).items():
        bad.report(value, key)
        if bad.should_prune():
            stopped_at = key
            break
    if pruner == "none":
        assert stopped_at is None
    else:
        assert stopped_at is not None, f"{pruner} never stopped the bad trial"
        last_key = max(report(curve(0.01), 2))
        assert stopped_at < last_key


# Bad input: one line, exit 2, nothing started

@pytest.mark.parametrize(("args", "message"), [
    (["--sampler", "bayes"], "unknown sampler 'bayes'; use one of tpe, gp, cmaes, random, grid"),
    (["--pruner", "early"], "unknown pruner 'early'; use one of median, halving, hyperband, wilcoxon, none"),
    (["--parallel", "0"], "--parallel must be at least 1, got 0"),
    (["--trials", "0"], "--trials must be at least 1, got 0"),
    (["--objective", "mean"], "bad --objective 'mean'"),
    (["--space", "missing.yaml"], "--space missing.yaml: cannot read it"),
    (["--space", "bad.yaml"], "--space bad.yaml: unknown PPOHParams hparam 'lrr'; did you mean lr?"),
    (["--sampler", "grid"], "--sampler grid needs every dimension as choice or int"),
    (["--cluster", "nowhere"], "unknown cluster"),
    (["--name", "Bad_Name"], "bad experiment name 'Bad_Name'"),
    (["--storage", "postgresql://rlkube@127.0.0.1:1/none"], "cannot open the study storage postgresql://"),
])
def test_bad_sweep_input_gets_one_line_and_starts_nothing(workdir: Path, args: list[str], message: str) -> None:
    (workdir / "bad.yaml").write_text("lrr: {uniform: [0.1, 0.2]}\n")
    result = rlkube("sweep", "start", *QUICK, "--space", "space.yaml", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "data" / "sweeps").exists()
    assert not (workdir / "runs").exists()
    assert "no experiments yet" in rlkube("list").stdout


def test_a_taken_sweep_name_is_refused(target: str) -> None:
    first = rlkube("sweep", "start", *QUICK, "--cluster", target, "--space", "space.yaml", "--train-steps", "1000",
                   "--trials", "1", "--seeds", "1", "--name", "taken", "--poll", "0.5", "--follow")
    assert first.returncode == 0, first.stderr
    again = rlkube("sweep", "start", *QUICK, "--space", "space.yaml", "--name", "taken")
    assert again.returncode == 2
    assert "sweep 'taken' exists already; choose another --name, or rlkube sweep resume taken" in again.stderr


# A sweep that learns

def test_a_sweep_learns_and_its_pruned_trials_stop_early(workdir: Path, target: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """ppo_cartpole's lr and n_epochs over a space with bad values (lr 1e-5, one epoch): TPE finds a trial that
    reaches 475 on both seeds within the reduced budget, and the median pruner stops hopeless ones early."""
    budget = 50_000
    # 5 s a trial: an evaluation every 0.5 s, so that the driver (polling every 0.2 s) reports each one and can prune
    # before the end; at 25,000 steps/s it once read a trial's evaluations in one batch and pruned it at its last step.
    monkeypatch.setenv("RLKUBE_FAKE_STEPS_PER_SECOND", "10000")
    poll = {"local": "1", "fake": "0.2"}[target]
    started = rlkube("sweep", "start", "--hparams", "ppo_cartpole", "--eval-episodes", "5", "--test-episodes", "1",
                     "--hparam-override", "eval_every=5000", "--train-steps", str(budget), "--space", "space.yaml",
                     "--trials", "12", "--parallel", "2", "--seeds", "2", "--objective", "final",
                     "--sampler", "tpe", "--pruner", "median", "--poll", poll, "--name", "learns", "--cluster", target)
    assert started.returncode == 0, started.stderr
    state = wait_for_driver("learns", timeout=1500)
    trials = state["trials"]
    assert len(trials) == 12
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert best["value"] >= 475, trials
    assert len(best["values"]) == 2
    assert min(best["values"]) >= 475 - 2 * best["std"] - 1e-9
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert pruned, "no trial was pruned"
    for trial in pruned:
        assert trial["steps"] < budget, trial
        summary = workdir / "runs" / trial["experiment"] / "copy-0" / "summary.json"
        assert not summary.exists(), f"pruned {trial['experiment']} finished anyway"
    assert trial_processes(workdir / "runs") == []


# Driver death, failures, storage

def test_a_killed_driver_resumes_adopting_live_trials_and_counts_each_once(workdir: Path, target: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_FAKE_STEPS_PER_SECOND", "1000")  # 6 s a trial: the driver dies while two run
    started = rlkube("sweep", "start", *QUICK, "--cluster", target, "--space", "space.yaml", "--train-steps", "6000",
                     "--trials", "4", "--parallel", "2", "--seeds", "1", "--pruner", "none", "--poll", "0.5",
                     "--name", "phoenix")
    assert started.returncode == 0, started.stderr
    from rlkube.launch import store  # noqa: PLC0415  (reads this test's RLKUBE_DATA_DIR)

    def live() -> list[str]:
        return [t["experiment"] for t in sweep_state("phoenix")["trials"] if t["state"] == "RUNNING"]

    running = wait_for(lambda: len(names := live()) == 2 and all(store.exists(n) for n in names) and names,
                       "two live trials")
    started_by = STARTED_BY[target]
    pids_before = {name: store.get(name).backend[started_by] for name in running}
    os.kill(store.get_sweep("phoenix").driver_pid, signal.SIGKILL)
    wait_for(lambda: sweep_state("phoenix")["driver"] == "not running", "the driver to die")
    assert live() == running  # nothing ended them: their processes are detached from the driver

    resumed = rlkube("sweep", "resume", "phoenix")
    assert resumed.returncode == 0, resumed.stderr
    state = wait_for_driver("phoenix")
    assert sorted(t["trial"] for t in state["trials"]) == [0, 1, 2, 3]
    assert {t["state"] for t in state["trials"]} == {"COMPLETE"}
    for name, pids in pids_before.items():  # the same processes finished them: adopted, not started again
        assert store.get(name).backend[started_by] == pids
    log = (workdir / "data" / "sweeps" / "phoenix" / "driver.log").read_text()
    for name in running:
        assert f"adopted {name}" in log
        assert log.count(f"started {name} ") == 1


def test_a_failed_trial_is_marked_fail_and_retried_with_the_same_params(workdir: Path, target: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLKUBE_FAKE_STEPS_PER_SECOND", "5000")  # 40 s a trial: the retry runs until cancelled
    started = rlkube("sweep", "start", *QUICK, "--cluster", target, "--space", "space.yaml", "--train-steps",
                     "200000", "--trials", "1", "--parallel", "1", "--seeds", "1", "--retries", "1", "--pruner",
                     "none", "--poll", "0.5", "--name", "fragile")
    assert started.returncode == 0, started.stderr
    from rlkube.launch import store  # noqa: PLC0415

    wait_for(lambda: store.exists("fragile-t0") and (workdir / "runs/fragile-t0/copy-0/progress.json").exists(),
             "the first trial to make progress")
    # The copy dies as an out-of-memory kill would end it: SIGKILL, no checkpoint, a non-zero exit.
    KILL_FIRST_COPY[target](workdir, "fragile-t0")
    state = wait_for(lambda: len((s := sweep_state("fragile"))["trials"]) == 2 and s, "the retry")
    first, retry = state["trials"]
    assert first["state"] == "FAIL"
    assert first["reason"].startswith("copy-0 failed: ")
    assert retry["params"] == first["params"]
    table = rlkube("sweep", "status", "fragile").stdout
    assert "copy-0 failed" in table
    assert rlkube("sweep", "cancel", "fragile").returncode == 0
    state = sweep_state("fragile")
    assert [t["state"] for t in state["trials"]] == ["FAIL", "FAIL"]
    assert state["trials"][1]["reason"] == "cancelled by rlkube sweep cancel"
    assert trial_processes(workdir / "runs") == []
    assert len(state["trials"]) == 2  # a cancelled sweep retries nothing


def test_two_drivers_on_one_postgresql_study_split_the_trials(workdir: Path, target: str, postgres: PostgresServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The study in a real PostgreSQL server: a second machine (its own data dir) joins with resume --storage, and
    the two drivers run the 6 trials between them, none twice."""
    monkeypatch.setenv("RLKUBE_FAKE_STEPS_PER_SECOND", "250")  # 4 s a trial: the second driver joins in time
    other = workdir / "other-machine"
    common = ["--space", "space.yaml", "--train-steps", "1000", "--trials", "6", "--parallel", "1", "--seeds", "1",
              "--poll", "0.5", "--name", "shared", "--storage", postgres.url]
    assert rlkube("sweep", "start", *QUICK, "--cluster", target, *common).returncode == 0
    joined = rlkube("sweep", "resume", "shared", "--storage", postgres.url, data_dir=other)
    assert joined.returncode == 0, joined.stderr
    for data_dir in (None, other):
        wait_for_driver("shared", data_dir=data_dir)
    state = sweep_state("shared", "--storage", postgres.url, data_dir=other)
    assert sorted(t["trial"] for t in state["trials"] if t["state"] == "COMPLETE") == [
        t["trial"] for t in state["trials"]]
    assert len(state["trials"]) == 6
    from rlkube.launch import store  # noqa: PLC0415

    here = {r.name for r in store.all_records()}
    os.environ["RLKUBE_DATA_DIR"], mine = str(other), os.environ["RLKUBE_DATA_DIR"]
    try:
        there = {r.name for r in store.all_records()}
    finally:
        os.environ["RLKUBE_DATA_DIR"] = mine
    assert here, "the other driver ran every trial"
    assert there, "the first driver ran every trial"
    assert not here & there
    assert here | there == {t["experiment"] for t in state["trials"]}


# Outputs

def _post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def recorded_sweep(workdir: Path) -> str:  # noqa: ARG001  (the data directory the store writes in)
    """A sweep with two complete trials, as its study and the store hold them, made without running a trial."""
    config = _config(name="made", train=TrainOptions("ppo_cartpole", train_steps=3000))
    study = studies.create(config, default_storage(config.name))
    space = check_space(config.space, get_hparams("ppo_cartpole"), "space")
    distributions = {name: studies.distribution(dim) for name, dim in space.items()}
    for value, n_epochs, n_steps in ((100.0, 1, 16), (200.0, 5, 32)):
        study.add_trial(optuna.trial.create_trial(
            params={"n_epochs": n_epochs, "n_steps": n_steps, "gae_lambda": 0.95}, distributions=distributions,
            value=value, user_attrs={VALUES: [value - 1, value + 1], STD: 1.0}))
    store.save_sweep(store.SweepRecord(config.name, default_storage(config.name), "driver", None,
                                       datetime.now(UTC).isoformat(timespec="seconds")))
    return config.name


@pytest.mark.parametrize("spelling", ["--output-file", "-o", "--output"])
def test_best_writes_the_file_output_file_names_and_takes_the_old_spelling_for_a_release(
        recorded_sweep: str, workdir: Path, spelling: str) -> None:
    best = rlkube("sweep", "best", recorded_sweep, spelling, "winner.yaml")
    assert best.returncode == 0, best.stderr
    assert yaml.safe_load((workdir / "winner.yaml").read_text())["overrides"] == {
        "train_steps": 3000, "n_epochs": 5, "n_steps": 32, "gae_lambda": 0.95}
    notices = [] if spelling == "--output-file" else [
        "note: -o/--output is now --output-file; the old spelling goes in the next release"]
    assert best.stderr.strip().splitlines() == notices


@pytest.mark.parametrize("spelling", ["--output-dir", "-o"])
def test_plot_writes_in_the_directory_output_dir_names_and_takes_the_old_spelling_for_a_release(
        recorded_sweep: str, workdir: Path, spelling: str) -> None:
    plotted = rlkube("sweep", "plot", recorded_sweep, spelling, "plots")
    assert plotted.returncode == 0, plotted.stderr
    assert matplotlib.image.imread(workdir / "plots" / "history.png").shape[0] > 200
    notice = "note: -o is now --output-dir; the old spelling goes in the next release"
    assert (notice in plotted.stderr.splitlines()) == (spelling == "-o")


@pytest.fixture(scope="module", params=TARGETS)
def finished_sweep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small finished sweep in its own directory (with its own data dir), shared by the output tests."""
    directory = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLKUBE_DATA_DIR", str(directory / "data"))
        patch.chdir(directory)
        use_target(request.param, directory, patch)
        (directory / "space.yaml").write_text(yaml.safe_dump(SPACE))
        started = rlkube("sweep", "start", *QUICK, "--cluster", request.param, "--space", "space.yaml",
                         "--train-steps", "3000", "--trials", "3", "--parallel", "2", "--seeds", "2", "--pruner",
                         "none", "--poll", "0.5", "--name", "done", "--follow")
        assert started.returncode == 0, started.stderr
        assert "sweep done done: 3 complete" in started.stdout
        yield directory


def train_locally(hparams_file: Path, project: Path, scratch: Path) -> Path:  # noqa: ARG001
    trained = run_rlkube("train", "--hparams-file", str(hparams_file), "--hparam-override", "train_steps=500",
                         "--eval-episodes", "1", "--test-episodes", "1", "--output-dir", str(scratch / "run"),
                         cwd=scratch)
    assert trained.returncode == 0, trained.stderr
    return scratch / "run" / "copy-0"


def submit_to_fake(hparams_file: Path, project: Path, scratch: Path) -> Path:  # noqa: ARG001
    submitted = rlkube("submit", "--cluster", "fake", "--hparams-file", str(hparams_file), "--hparam-override",
                       "train_steps=500", "--name", "from-best", "--follow", data_dir=project / "data")
    assert submitted.returncode == 0, submitted.stderr
    return project / "runs" / "from-best" / "copy-0"


# How each target runs an hparams file, and the copy directory that ran it.
RUN_HPARAMS_FILE = {"local": train_locally, "fake": submit_to_fake}


def test_status_shows_every_trials_state_params_value_and_steps(finished_sweep: Path) -> None:
    table = rlkube("sweep", "status", "done", data_dir=finished_sweep / "data").stdout
    assert "driver not running  3 complete  (of 3; 2 seeds each, objective last:3)" in table
    rows = table.splitlines()[2:]
    assert len(rows) == 3
    for row in rows:
        assert "COMPLETE" in row
        assert " ± " in row
        assert "(2)" in row
        assert "3000" in row
        assert "lr=" in row


def test_best_writes_an_hparams_file_that_train_runs(finished_sweep: Path, tmp_path: Path) -> None:
    data = finished_sweep / "data"
    best = rlkube("sweep", "best", "done", "--output-file", str(tmp_path / "best.yaml"), data_dir=data)
    assert best.returncode == 0, best.stderr
    state = sweep_state("done", data_dir=data)
    winner = max(state["trials"], key=lambda t: t["value"])
    assert f"--hparam-override {winner['params']}" in best.stdout
    written = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert written["hparams"] == "ppo_cartpole"
    assert written["overrides"]["train_steps"] == 3000
    run_copy = RUN_HPARAMS_FILE[state["config"]["cluster"]](tmp_path / "best.yaml", finished_sweep, tmp_path)
    saved = yaml.safe_load((run_copy / "hparams.yaml").read_text())["hparams"]
    for key, value in written["overrides"].items():
        if key != "train_steps":
            assert saved[key] == value


def test_plot_writes_pngs_that_open(finished_sweep: Path, tmp_path: Path) -> None:
    plotted = rlkube("sweep", "plot", "done", "--output-dir", str(tmp_path / "plots"),
                     data_dir=finished_sweep / "data")
    assert plotted.returncode == 0, plotted.stderr
    for name in ("history.png", "importances.png", "parallel-coordinates.png"):
        image = matplotlib.image.imread(tmp_path / "plots" / name)
        assert image.shape[0] > 200
        assert image.shape[1] > 300


def test_confirm_reruns_the_best_params_on_fresh_seeds(finished_sweep: Path) -> None:
    data = finished_sweep / "data"
    confirmed = run_rlkube("sweep", "confirm", "done", "--seeds", "2", env={"RLKUBE_DATA_DIR": str(data)},
                           cwd=finished_sweep)
    assert confirmed.returncode == 0, confirmed.stderr
    said = re.search(r"scored (-?[\d.]+) ± ([\d.]+) over 2 seeds in the sweep; on 2 fresh seeds (-?[\d.]+) ± "
                     r"([\d.]+): (holds up|does not hold up)", confirmed.stdout)
    assert said, confirmed.stdout
    swept, swept_std, fresh, fresh_std = map(float, said.groups()[:4])
    margin = fresh - (swept - max(fresh_std, swept_std, 0.01 * abs(swept)))
    if abs(margin) > 0.02:  # the printed values are rounded to 0.01
        assert said.group(5) == ("holds up" if margin >= 0 else "does not hold up")
    copies = json.loads((finished_sweep / "runs" / "done-confirm" / "copies.json").read_text())
    assert [c["seed"] for c in copies] == [2, 3]  # the sweep's trials used seeds 0 and 1


@pytest.mark.parametrize("finished_sweep", [pytest.param("local", marks=pytest.mark.full)], indirect=True)
def test_tensorboard_of_a_sweep_serves_every_trial(finished_sweep: Path) -> None:
    """On the local target only: the fake one writes no TensorBoard events."""
    process = subprocess.Popen(rlkube_command("tensorboard", "done"), stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "RLKUBE_DATA_DIR": str(finished_sweep / "data")},
                               cwd=finished_sweep)
    try:
        line = process.stdout.readline()
        assert "TensorBoard for sweep done (3 trials)" in line, line
        url = line.split(": ", 1)[1].split()[0]
        runs = wait_for(lambda: json.loads(urllib.request.urlopen(f"{url}data/runs", timeout=10).read()),
                        "TensorBoard to list the runs", timeout=60)
        assert {run.split("/")[0] for run in runs} == {"done-t0", "done-t1", "done-t2"}
        # The HParams dashboard compares the trials: one session per copy, the searched hparams differing.
        experiment = _post_json(f"{url}data/plugin/hparams/experiment", {"experimentName": ""})
        searched = {info["name"]: info["differs"] for info in experiment["hparamInfos"]}
        assert searched["lr"] is True
        groups = _post_json(f"{url}data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": [],
            "startIndex": 0, "sliceSize": 100})
        assert groups["totalSize"] == 6  # 3 trials x 2 seeds
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)  # TensorBoard's shutdown took over 30 s on a loaded 2-core machine
