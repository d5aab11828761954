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
    child = subprocess.Popen(command)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: child.send_signal(received))
    code = child.wait()
    layout.write_atomically(Path(exit_file), f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
