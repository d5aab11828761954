"""Nothing a user downloads runs code when loaded: policies are arrays, and old pickles load only behind a flag.

Every agent's acting policy goes through an array file (rlkube.rundir.policy_file) and acts the same once loaded,
without a pickle being touched; a pickle dressed as a policy file is refused unrun; a run directory of format 3 or
older, whose policies are pickles, is tested (--no-training) only with --allow-pickle, which says what it reads.
"""

import json
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rlkube.errors import UserError
from rlkube.rl.agents import make_agent
from rlkube.rl.envs import make_env
from rlkube.rl.hparams import get_hparams
from rlkube.rl.networks import param_leaves
from rlkube.run.runner import Runner, RunOptions
from rlkube.rundir import checkpoint, layout, pickles
from rlkube.storage import ownership
from tests.conftest import run_rlkube
from tests.test_agents import small_sets, smoke_overrides
from tests.test_cli import heavy_imports_after
from tests.test_resume import FORMAT_1_OVERRIDES, FORMAT_1_RUNS

# Every small set, plus the policies no small set has: PPO's shared torso (its Atari set's) and PPO's plain Gaussian
# on Box actions (its Pendulum set explores with gSDE).
POLICIES = [pytest.param(name, "", id=name) for name in small_sets()] + [
    pytest.param("ppo_cartpole", "shared_torso=true", id="ppo_shared_torso"),
    pytest.param("ppo_pendulum", "use_sde=false", id="ppo_pendulum_gaussian"),
]


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling from here on fails the test."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        pytest.fail("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


@pytest.mark.parametrize(("name", "overrides"), POLICIES)
def test_a_policy_saved_as_arrays_acts_the_same_once_loaded_without_unpickling(
        name: str, overrides: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    hp = get_hparams(name, ",".join(filter(None, [smoke_overrides(name), overrides])))
    env = make_env(hp.env)
    saved, fresh = (make_agent(hp, env.observation_space, env.action_space, seed) for seed in (0, 1))
    assert any(not np.array_equal(mine, theirs) for mine, theirs in
               zip(param_leaves(saved.policy.params), param_leaves(fresh.policy.params), strict=True))
    checkpoint.save_best(tmp_path, {"step": 7, "mean_return": 1.5, "std_return": 0.25,
                                    "params": saved.policy.params})

    request.getfixturevalue("no_pickle")
    best = checkpoint.load_best(tmp_path)
    assert {key: value for key, value in best.items() if key != "params"} == {
        "step": 7, "mean_return": 1.5, "std_return": 0.25}
    fresh.policy.params = best["params"]
    env.observation_space.seed(0)
    obs = np.stack([env.observation_space.sample() for _ in range(32)])
    np.testing.assert_array_equal(fresh.act(obs, explore=False)[0], saved.act(obs, explore=False)[0])


class Planted:
    """What a planted pickle does when it is loaded: create a file (any code could run instead)."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple:
        return Path.touch, (self.proof,)


def plant_pickle(path: Path, proof: Path) -> None:
    path.write_bytes(pickle.dumps({"step": 1, "params": Planted(proof)}))


def plant_object_array(path: Path, proof: Path) -> None:
    """An npz whose one array is of objects, which numpy stores as a pickle."""
    np.savez(path, metadata=np.array("{}"), **{"params/w": np.array([Planted(proof)], dtype=object)})


def plant_lone_array(path: Path, proof: Path) -> None:
    del proof
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))


@pytest.mark.parametrize("plant", [plant_pickle, plant_object_array, plant_lone_array])
def test_a_file_posing_as_a_policy_file_is_refused_in_one_line_and_runs_nothing(plant, tmp_path: Path) -> None:
    proof = tmp_path / "code-ran"
    best = tmp_path / layout.BEST_POLICY
    best.parent.mkdir()
    plant(best, proof)
    refusal = r"is not an rlkube policy file \(arrays and JSON metadata in an npz\)"
    with pytest.raises(UserError, match=refusal) as error:
        checkpoint.load_best(tmp_path, allow_pickle=True)  # the flag is for old .pkl files, never for these
    assert "\n" not in str(error.value)
    assert not proof.exists()


def test_an_old_pickled_best_policy_is_read_only_with_the_flag(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / layout.PICKLED_BEST_POLICY
    old.parent.mkdir()
    old.write_bytes(pickle.dumps({"step": 5, "mean_return": 2.0, "std_return": 0.0, "params": {"w": np.ones(2)}}))
    with pytest.raises(UserError, match="pass --allow-pickle if you trust whoever wrote it") as error:
        checkpoint.load_best(tmp_path)
    assert f"{old} is a pickle, which runs code when it is loaded" in str(error.value)
    assert capsys.readouterr().err == ""

    assert checkpoint.load_best(tmp_path, allow_pickle=True)["step"] == 5
    assert capsys.readouterr().err == f"--allow-pickle: reading {old}, a pickle (which runs code when it is loaded)\n"


def test_a_new_best_policy_replaces_an_old_pickled_one(tmp_path: Path) -> None:
    old = tmp_path / layout.PICKLED_BEST_POLICY
    old.parent.mkdir()
    old.write_bytes(pickle.dumps({}))
    checkpoint.save_best(tmp_path, {"step": 1, "mean_return": 0.0, "std_return": 0.0, "params": {"w": np.ones(2)}})
    assert sorted(path.name for path in old.parent.iterdir()) == ["policy.npz"]


def test_a_pickle_needs_the_flag_unless_its_directory_was_already_this_copys(tmp_path: Path) -> None:
    copy = tmp_path / "copy-0"
    shutil.copytree(FORMAT_1_RUNS / "dqn_cartpole" / "run", copy)
    pickled = next(copy.glob(f"{layout.CHECKPOINTS}/*/{layout.STATE_FILE}"))
    assert not ownership.owns(copy, "exp@1", 0)  # an older rlkube's directory has no owner record
    with pytest.raises(UserError, match="--allow-pickle"):
        pickles.pickle_notice(pickled, allow_pickle=False, owned=False)
    assert "reading" in pickles.pickle_notice(pickled, allow_pickle=True, owned=False)
    first = ownership.claim(copy, "exp@1", 0)
    assert not first.inherited  # the first writer took a directory that was nobody's: not its own pickles
    assert ownership.owns(copy, "exp@1", 0)
    assert ownership.claim(copy, "exp@1", 0).inherited
    assert not ownership.owns(copy, "exp@2", 0)
    assert not ownership.owns(copy, "exp@1", 1)
    assert pickles.pickle_notice(pickled, allow_pickle=False, owned=True) is None


# -- --no-training ---------------------------------------------------------------------------------------------------

def test_no_training_tests_a_format_4_checkpoint_from_its_arrays_alone(tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    hp = get_hparams("dqn_cartpole", f"{smoke_overrides('dqn_cartpole')},train_steps=400,eval_every=200")
    options = RunOptions(eval_episodes=2, test_episodes=2, live_progress=False)
    trained = Runner(hp, tmp_path, options).run()
    latest = checkpoint.latest(tmp_path / layout.CHECKPOINTS)
    assert set(layout.read_marker(latest).files) == {layout.STATE_FILE, layout.CHECKPOINT_POLICY,
                                                     layout.CHECKPOINT_BEST_POLICY}

    request.getfixturevalue("no_pickle")
    tested = Runner(hp, tmp_path, replace(options, training=False)).run()
    same = ("total_steps", "episodes", "eval_mean_return", "best_eval_mean_return", "best_eval_step",
            "test_mean_return", "test_std_return", "test_policy")
    assert {key: tested[key] for key in same} == {key: trained[key] for key in same}
    assert json.loads((tmp_path / layout.TEST_SUMMARY_FILE).read_text()) == tested


def format_1_run(tmp_path: Path) -> tuple[Path, str]:
    """A run directory an rlkube of format 1 wrote (its copy-0), and the overrides it was trained with."""
    run = tmp_path / "run"
    shutil.copytree(FORMAT_1_RUNS / "dqn_cartpole" / "run", run / "copy-0")
    return run, f"{FORMAT_1_OVERRIDES['dqn_cartpole']},train_steps=512,checkpoint_every=256,log_every=128"


def test_no_training_refuses_an_old_run_directory_without_the_flag_before_tensorflow(tmp_path: Path) -> None:
    run, overrides = format_1_run(tmp_path)
    before = sorted(run.rglob("*"))
    args = ["train", "--hparams", "dqn_cartpole", "--hparam-override", overrides, "--no-training",
            "--test-episodes", "1", "--output-dir", str(run)]
    result = run_rlkube(*args)
    assert result.returncode == 2, result.stderr
    state = run / "copy-0" / "checkpoints" / "ckpt-256" / layout.STATE_FILE
    assert result.stderr == (f"error: {state} is a pickle, which runs code when it is loaded, from a run directory "
                             f"this writer does not own; pass --allow-pickle if you trust whoever wrote it\n")
    assert sorted(run.rglob("*")) == before
    assert heavy_imports_after(*args) == set()


def test_no_training_reads_an_old_run_directory_with_the_flag_and_says_which_file(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    run, overrides = format_1_run(tmp_path)
    hp = get_hparams("dqn_cartpole", overrides)
    options = RunOptions(eval_episodes=0, test_episodes=1, live_progress=False, training=False)
    with pytest.raises(UserError, match="pass --allow-pickle"):
        Runner(hp, run / "copy-0", options).run()

    tested = Runner(hp, run / "copy-0", replace(options, allow_pickle=True)).run()
    assert tested["total_steps"] == 256
    state = run / "copy-0" / "checkpoints" / "ckpt-256" / layout.STATE_FILE
    assert f"--allow-pickle: reading {state}, a pickle (which runs code when it is loaded)\n" in capfd.readouterr().err
