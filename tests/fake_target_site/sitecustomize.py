"""Registers the fake target in every Python process that has this directory on its path (tests.fake_target's
fake_env puts it there), so that the processes rlkube starts detached (a sweep's driver, PBT's controller) know it."""

import tests.fake_target  # noqa: F401
