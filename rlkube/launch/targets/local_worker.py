"""One local copy: runs `rlkube train ...`, forwards stop signals to it, and records its exit code.

`rlkube submit --cluster local` starts this detached, one per copy; the exit-code file is what a
later `rlkube status` reads once the process is gone.
"""

import signal
import subprocess
import sys
from pathlib import Path

from rlkube.rundir import layout


def main(argv: list[str]) -> int:
    exit_file, separator, *command = argv
    if separator != "--" or not command:
        sys.exit("usage: python -m rlkube.launch.targets.local_worker EXIT_FILE -- COMMAND...")
    code = wait_passing_on_stop_signals(subprocess.Popen(command))
    layout.write_atomically(Path(exit_file), f"{code}\n")
    return code


def wait_passing_on_stop_signals(child: subprocess.Popen[bytes]) -> int:
    """`child`'s exit code, SIGTERM and SIGINT passed on to it meanwhile: `rlkube train` checkpoints, then exits
    128 + the signal. A stop request is idempotent, so one that Ctrl-C sent the child as well does no harm."""
    previous = {signum: signal.signal(signum, lambda received, _frame: child.send_signal(received))
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
