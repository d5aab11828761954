"""rlkube: a TF2 reinforcement-learning research codebase that runs experiments anywhere."""

import os

from rlkube import startup_logs

# Acting runs small numpy matmuls and convolutions, once per environment step. OpenBLAS's thread pool
# makes them several times slower (a Nature CNN forward: 0.8 ms on one thread, 4-27 ms threaded on a
# busy 2-core machine), and actor processes would fight each other for cores. TensorFlow has its own
# thread pool, so learning is unaffected. Set before anything imports numpy; a user's value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) would bury the run's own log lines. The level applies
# to what TensorFlow logs while it loads, too, before it reads the level itself (startup_logs).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
startup_logs.install()

__version__ = "0.1.0"
