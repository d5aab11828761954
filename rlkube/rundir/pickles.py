"""Which pickles this rlkube loads: a pickle runs code when it is loaded, so only a writer's own, or behind a flag.

Policies are array files (rlkube.rundir.policy_file). What is still pickled is a checkpoint's state (the
environment mid-episode, for exact resume) and the policies that run directories of format 3 and older hold
(`best/policy.pkl`, and the acting weights inside `state.pkl`). Those load only from a run directory this writer
owns, or when the user passes --allow-pickle, which says in one line what it reads.
"""

from pathlib import Path

from rlkube.errors import UserError

FLAG = "--allow-pickle"


def owned_by_this_writer(path: Path) -> bool:
    """Whether `path` lies in a run directory that this writer owns, so that its pickles are this writer's own.

    The run directory's owner record answers this once run directories carry one (one writer per run directory);
    until then no directory is owned, and every pickle needs --allow-pickle."""
    del path
    return False


def pickle_notice(path: Path, allow_pickle: bool) -> str | None:
    """The line to show before unpickling `path`: none in a run directory this writer owns; with --allow-pickle,
    that it reads a pickle; without, it refuses in one line (UserError) that names the flag."""
    if owned_by_this_writer(path):
        return None
    if not allow_pickle:
        raise UserError(f"{path} is a pickle, which runs code when it is loaded, from a run directory this writer "
                        f"does not own; pass {FLAG} if you trust whoever wrote it")
    return f"{FLAG}: reading {path}, a pickle (which runs code when it is loaded)"
