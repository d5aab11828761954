"""How an agent's actors keep pace with its learner (`--num-workers`, rlkube.run.workers).

Each agent declares one mode; the worker loop and the learner's side of it branch on the mode, never on the
agent. Numpy side: actor processes unpickle the mode, and must not import TensorFlow to do so.
"""

from enum import Enum


class ActorPacing(Enum):
    # Off-policy (DQN, DDPG, TD3, SAC): actors send short chunks of transitions and keep acting; replay makes
    # any policy's data useful, and the bounded queue holds the replay ratio to the hparams'.
    STREAM_TRANSITIONS = "stream transitions"
    # On-policy (VPG, PPO): after each rollout an actor waits for weights newer than those it acted with, so
    # the learner learns from rollouts at most a few versions old, and drops older ones.
    WAIT_FOR_WEIGHTS = "wait for weights"
    # IMPALA-style: actors never wait; each rollout carries the weight version it was collected with, and the
    # learner corrects for the lag itself (V-trace, rlkube.rl.agents.impala).
    NEVER_WAIT = "never wait"
