"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input, with what would be right."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """The error for a name that is not registered, naming the close matches."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
    return UserError(f"unknown {kind} '{name}'; {hint}")
