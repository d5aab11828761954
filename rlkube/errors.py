"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""

import difflib
import re
import urllib.parse
from collections.abc import Iterable

# How a command ends on a UserError. A pod's Job fails that copy at once on it (render.py's podFailurePolicy): the
# same input would fail the same way on every retry.
USER_ERROR_EXIT_CODE = 2


# How a copy's writer ends when its copy's replacement has taken the run directory over (rlkube.storage.ownership): a
# pod's Job ignores it, as the copy goes on in the replacement.
SUPERSEDED_EXIT_CODE = 3

# How a command ends on a TransientError: EX_TEMPFAIL, which a pod's Job retries like any other failure.
TRANSIENT_ERROR_EXIT_CODE = 75


class UserError(Exception):
    """A mistake in the user's input, with what would be right."""

    exit_code = USER_ERROR_EXIT_CODE


class TransientError(UserError):
    """Trouble the user may have to fix but that may also pass by itself, such as an endpoint out of reach: one line
    all the same, but its own exit code, so that a pod retries it rather than failing its copy at once."""

    exit_code = TRANSIENT_ERROR_EXIT_CODE


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


# Characters that would break a one-line message: C0 and C1 controls (a newline, an escape sequence) and the
# Unicode line and paragraph separators, which str.splitlines also splits on.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with every character that could break or restyle a terminal line written as its escape (\\n, \\x1b),
    so that a message quoting the user's input stays one line."""
    return _LINE_BREAKING.sub(lambda match: repr(match.group())[1:-1], text)


class UserErrors(UserError):
    """Several mistakes found at once (e.g. every bad entry of a space file), each its own line."""

    def __init__(self, mistakes: list[str]) -> None:
        super().__init__("\n".join(mistakes))
        self.mistakes = mistakes


def refuse_credentials(uri: str, what: str, instead: str) -> None:
    """A UserError if `uri` carries user-info (user:password@, token@) or a query string (?apikey=...): either may
    hold a credential, and rlkube writes the URIs it is given into records and pods in plain text. `what` names
    where the URI came from (a flag, a profile's field); `instead` says where credentials belong. The message shows
    the URI without them."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        raise UserError(f"{what} {one_line(uri)!r} is not a URI ({error})") from None
    carried = [words for words, present in (("user-info", "@" in parts.netloc), ("a query string", parts.query))
               if present]
    if not carried:
        return
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()
    raise UserError(f"{what} {one_line(shown)} carries credentials (or may: {' and '.join(carried)}), which would be "
                    f"written down in plain text; give the URI without them, and {instead}")
