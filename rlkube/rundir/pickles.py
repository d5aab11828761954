"""Which pickles this rlkube loads: a pickle runs code when it is loaded, so only a writer's own, or behind a flag.

Policies are array files (rlkube.rundir.policy_file). What is still pickled is a checkpoint's state (the
environment mid-episode, for exact resume) and the policies that run directories of format 3 and older hold
(`best/policy.pkl`, and the acting weights inside `state.pkl`). Those load only from a run directory this writer
owns, or when the user passes --allow-pickle, which says in one line what it reads.
"""

from pathlib import Path

from rlkube.errors import UserError

FLAG = "--allow-pickle"


def pickle_notice(path: Path, allow_pickle: bool, owned: bool = False) -> str | None:
    """The line to show before unpickling `path`: none where its run directory is this writer's own (`owned`: it was
    this experiment's copy before this run, as rlkube.storage.ownership records); with --allow-pickle, that it reads
    a pickle; without, it refuses in one line (UserError) that names the flag."""
    if owned:
        return None
    if not allow_pickle:
        raise UserError(f"{path} is a pickle, which runs code when it is loaded, from a run directory this writer "
                        f"does not own; pass {FLAG} if you trust whoever wrote it")
    return f"{FLAG}: reading {path}, a pickle (which runs code when it is loaded)"
