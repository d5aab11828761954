"""Running an experiment: the training loop of one copy, copies in parallel, actor workers, progress, video.

Runs inside the container images, with rlkube.rl, rlkube.rundir and rlkube.storage; never imports rlkube.launch.
"""
