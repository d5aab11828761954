"""TF_CPP_MIN_LOG_LEVEL, applied to the lines TensorFlow logs before it reads it.

TensorFlow logs through absl, and its shared libraries log while they load, before TensorFlow has read
TF_CPP_MIN_LOG_LEVEL: every process that imports it prints absl's "All log messages before absl::InitializeLog()
is called are written to STDERR" notice and oneDNN's info line, once per library, whatever the level says. Copies
and actor processes import TensorFlow too, so a run printed them again and again.

So, while `import tensorflow` runs (and only then), stderr goes to a file, and what it caught is written back
without the absl lines below the level: info lines (`I0000 00:00:1796080641.176055   23530 port.cc:153] ...`) from
level 1, warnings from 2, errors from 3, with absl's notice whenever anything is filtered. Everything else comes
through unchanged, and every later line is TensorFlow's own to filter. Installed by `import rlkube`, so it holds in
every process that runs rlkube code, spawned ones included; `rlkube train --verbose` sets the level to 0, which
lets everything through.
"""

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# absl's prefix: severity, date, time (seconds since the epoch before InitializeLog), thread, file:line.
_ABSL_LINE = re.compile(rb"([IWE])\d{4} [\d:.]+ +\d+ [^\]\s]+:\d+\] ")
_SEVERITY_LEVEL = {b"I": 1, b"W": 2, b"E": 3}  # the level from which TF_CPP_MIN_LOG_LEVEL hides each


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0, all, where it is unset or not a number)."""
    try:
        return int(os.environ.get(LEVEL_ENV, "0"))
    except ValueError:
        return 0


def _hidden(line: bytes, level: int) -> bool:
    if line.rstrip(b"\r\n") == _ABSL_NOTICE:
        return True
    match = _ABSL_LINE.match(line)
    return match is not None and _SEVERITY_LEVEL[match.group(1)] <= level


@contextlib.contextmanager
def _filtered_stderr(level: int) -> Iterator[None]:
    """Catch what is written to stderr (fd 2, so C++ too) inside the block; write it back without absl's lines
    below `level`.

    A file rather than a pipe: nothing has to read while TensorFlow loads, and nothing is lost however much it writes.
    """
    import tempfile  # noqa: PLC0415  (only a process that imports TensorFlow pays for it)

    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = b"".join(line for line in caught.read().splitlines(keepends=True) if not _hidden(line, level))
            while kept:
                kept = kept[os.write(2, kept):]


class _FilteringLoader:
    """TensorFlow's own loader, running its module inside _filtered_stderr."""

    def __init__(self, loader: Any, level: int) -> None:
        self._loader = loader
        self._level = level

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # TensorFlow sees its own loader, as always
        with _filtered_stderr(self._level):
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _TensorFlowFinder:
    """A meta path finder: finds `tensorflow` as the finders after it would, and filters stderr while it loads."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        level = min_log_level()
        if fullname != "tensorflow" or level < 1:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _FilteringLoader(spec.loader, level)
                return spec
        return None


def install() -> None:
    """Filter TensorFlow's start-up lines in this process (see the module's docstring); once, before it loads."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowFinder())
