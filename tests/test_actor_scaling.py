"""benchmarks/actor_scaling.py: its arithmetic (the ideal line, the steady rate, where the learner saturates), and its
learner without updates (benchmarks/impala_without_updates.py), which takes every step in and learns nothing."""

import contextlib
import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from rlkube.rl.envs import STEP_WAIT_SECONDS, WAITING_CARTPOLE
from rlkube.rl.hparams import get_hparams
from rlkube.run.runner import Runner, RunOptions
from tests.conftest import scalar_steps

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scaling = _benchmark("actor_scaling")
impala_without_updates = _benchmark("impala_without_updates")


def test_the_ideal_line_is_every_actors_envs_stepping_side_by_side_once_a_beat() -> None:
    assert scaling.STEP_SECONDS == STEP_WAIT_SECONDS  # the benchmark's copy of the env's beat
    assert scaling.ideal_sps(4, 8) == 3_200
    assert scaling.ideal_sps(1, 1, step_seconds=0.02) == 50


def test_the_steady_rate_is_steps_over_time_past_the_start_up_not_the_median_of_the_logged_sps() -> None:
    # (step, SPS of the interval that ends there): a slow start-up, then 1,000 steps at 1,000 SPS, 1,000 at 500 and
    # 2,000 at 1,000: 4,000 steps in 1 + 2 + 2 seconds. The median of the logged SPS would say 1,000.
    logged = [(1_000, 50.0), (2_000, 1_000.0), (3_000, 500.0), (5_000, 1_000.0)]
    assert scaling.steady_sps(logged) == pytest.approx(800.0)
    with pytest.raises(ValueError, match="too few SPS logs"):
        scaling.steady_sps([(5_000, 1_000.0)])


def test_the_learner_saturates_at_the_first_actor_count_where_it_falls_below_80_percent_of_no_update() -> None:
    none = {1: 800.0, 2: 1_600.0, 4: 3_100.0, 8: 6_000.0}
    assert scaling.saturation(none, {1: 790.0, 2: 1_500.0, 4: 2_400.0, 8: 2_500.0}) == 4  # 2,400 < 0.8 x 3,100
    assert scaling.saturation(none, {1: 790.0, 2: 1_500.0, 4: 2_500.0, 8: 4_800.0}) is None


def test_the_table_gives_each_run_against_the_ideal_line_and_where_each_transports_learner_saturates() -> None:
    measured = {1: (790.0, 780.0), 2: (1_580.0, 1_500.0), 4: (3_100.0, 2_000.0)}  # actors: (no update, IMPALA)
    runs = [scaling.Run(transport, learner, actors, sps * (1 if transport == "processes" else 0.5))
            for transport in ("processes", "ray") for actors, pair in measured.items()
            for learner, sps in zip(("none", "impala"), pair, strict=True)]
    lines = scaling.table(runs, envs_per_actor=8).splitlines()
    assert "| processes | 4 | 3,200 | 3,100 | 97% | 2,000 | 62% |" in lines
    assert "| ray | 2 | 1,600 | 790 | 49% | 750 | 47% |" in lines
    assert ("- processes: IMPALA's learner >= 80% of linear up to 2 actors; no update >= 80% of linear up to 4 actors; "
            "the actors' ceiling ~3,100 SPS (the most without updates); IMPALA's learner saturates at 4 actors (under "
            "80% of the no-update SPS), its limit ~2,000 SPS") in lines
    assert lines[-1].startswith("- ray: IMPALA's learner >= 80% of linear at no actor count; "), lines


def test_linear_holds_up_to_the_last_actor_count_before_the_first_that_falls_short() -> None:
    assert scaling.linear_up_to({1: 800.0, 2: 1_500.0, 4: 2_000.0, 8: 6_000.0}, envs_per_actor=8) == 2
    assert scaling.linear_up_to({1: 800.0, 2: 1_500.0}, envs_per_actor=8) == 2
    assert scaling.linear_up_to({1: 500.0, 2: 1_500.0}, envs_per_actor=8) is None


@pytest.mark.parametrize(("learner", "learns"), [("none", False), ("impala", True)])
def test_the_learner_without_updates_takes_in_every_step_and_its_weights_stay_as_they_were(
        learner: str, learns: bool, tmp_path: Path) -> None:
    """IMPALA's own learner beside it, on the same run, shows that the weights would have moved."""
    hp = dataclasses.replace(get_hparams("impala_cartpole"), env=WAITING_CARTPOLE, train_steps=1_024, log_every=256)
    with impala_without_updates.without_updates() if learner == "none" else contextlib.nullcontext():
        runner = Runner(hp, tmp_path, RunOptions(num_workers=2, eval_episodes=0, test_episodes=0, live_progress=False))
        initial = runner.agent.params.numpy()
        summary = runner.run()
    assert summary["total_steps"] == hp.train_steps
    assert np.array_equal(runner.agent.params.numpy(), initial) is not learns
    assert scalar_steps(tmp_path)["charts/SPS"], "no SPS logged: the benchmark could not read this run's rate"
