"""PPO on CartPole-v1 with rl-baselines3-zoo settings: wall time for 100k steps, SPS, and the first step at >= 475.

The same measurement as benchmarks/dqn_cartpole.py (one JSON line per seed, then a summary; --sb3
runs Stable-Baselines3's PPO on the same settings and evaluation schedule, alternating seeds), for
`rlkube train --hparams ppo_cartpole`. Both evaluate 10 episodes every 10k steps, as ppo_cartpole does.

    python benchmarks/ppo_cartpole.py --seeds 0,1,2,3,4 --sb3
"""

import dqn_cartpole

EVAL_EVERY = 10_000

if __name__ == "__main__":
    dqn_cartpole.main("ppo_cartpole", "ppo", EVAL_EVERY, __doc__)
