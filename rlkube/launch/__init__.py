"""The launch layer between the CLI and the clusters: spec, then render per target, then submit.

Nothing here imports TensorFlow, and what runs in the images (rlkube.rl, rlkube.run, rlkube.rundir,
rlkube.storage) imports nothing from here.
"""
