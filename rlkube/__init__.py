"""rlkube: a TF2 reinforcement-learning research codebase that runs experiments anywhere."""

__version__ = "0.1.0"
