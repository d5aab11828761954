"""The RL library: environments, networks, replay, policies and agents.

Acting is numpy (policies/, networks.py, replay.py, envs.py import no TensorFlow, so actor processes
stay light); learning is TensorFlow (agents/). Nothing here knows about run directories or clusters.
"""
