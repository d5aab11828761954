"""The RL library that runs inside the container images.

Importing this package is cheap: TensorFlow is only imported by the modules that build networks
(agents, the learner), so the CLI can validate a run before paying for TensorFlow.
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) would bury the run's own log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
