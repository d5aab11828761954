"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""

import difflib
from collections.abc import Iterable

# How a command ends on a UserError. A pod's Job fails that copy at once on it (render.py's podFailurePolicy): the
# same input would fail the same way on every retry.
USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A mistake in the user's input, with what would be right."""


def one_of(names: list[str]) -> str:
    """'a', 'a or b', 'a, b or c': names as a sentence offers them."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def unknown_name(kind: str, name: str, known: Iterable[str], listing: str | None = None) -> UserError:
    """The error for a name that is not registered, naming the close matches.

    Without a close match it lists the known names, or, where there are too many to read in one line, says how
    to list them (`listing`, e.g. "list them with `rlkube envs`").
    """
    known = sorted(set(known))  # registries may overlap: each name is offered once
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {one_of(close)}?" if close else listing or f"known: {', '.join(known)}"
    return UserError(f"unknown {kind} '{name}'; {hint}")
