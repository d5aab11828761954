"""`rlkube train` with IMPALA's learner less its gradient step: the actors' ceiling (benchmarks/actor_scaling.py).

The learner takes in each rollout as IMPALA's does (observe, V of its last observation), publishes its weights after
it as IMPALA's does (unchanged, so the same bytes travel to the actors), logs its SPS and lag, and drops the rollout
without learning from it. Actors, rollouts, pacing and transport are IMPALA's, so a run goes as fast as its actors and
their transport can, and the gap to IMPALA's own learner is the gradient step alone.

It lives here, not in rlkube: a learner that learns nothing is a measuring tool, not an agent or an hparam a user
should meet.

    python benchmarks/impala_without_updates.py train --hparams impala_cartpole --num-workers 4 ...  (rlkube train's)
"""

import contextlib
from collections.abc import Iterator
from unittest import mock


@contextlib.contextmanager
def without_updates() -> Iterator[None]:
    """IMPALA agents made meanwhile take rollouts in and drop them, and their weights stay as they were."""
    # Imported here: actor processes start by importing this file as their __main__, and must not load TensorFlow.
    from rlkube.rl.agents.impala import IMPALAAgent  # noqa: PLC0415

    def drop_rollout(agent: IMPALAAgent) -> dict[str, float]:
        if not agent.buffer.full:
            return {}
        agent.buffer.clear()
        return {"charts/policy_lag": float(agent.policy_lag)}  # non-empty: the runner publishes weights, logs SPS

    with mock.patch.object(IMPALAAgent, "update", drop_rollout):
        yield


if __name__ == "__main__":
    from rlkube.cli.main import cli

    with without_updates():
        cli(prog_name="rlkube")
