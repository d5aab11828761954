"""The launch layer between the CLI and the clusters: spec, then render per target, then submit.

Nothing here imports TensorFlow, and `rlkube.core` imports nothing from here.
"""
