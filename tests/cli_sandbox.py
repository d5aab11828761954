"""Run `rlkube` invocations in a fresh interpreter, each in an empty directory of its own, and say what they did.

The interpreter imports rlkube's CLI once and then serves invocations one by one (click's CliRunner, in process),
so hundreds of them take seconds, while what they import is still measured from a clean start: a heavy library
(TensorFlow, Optuna, MLflow, W&B, Ray) that appears in sys.modules during an invocation is reported against it. Each
invocation runs with its own directory as the working directory and as HOME, with rlkube's other places
(RLKUBE_DATA_DIR, the XDG directories, the cache) unset so that they fall under HOME, and it is told every file and
directory it created, changed or removed there.

    with CliSandbox() as sandbox:
        outcome = sandbox.run(["render", "--cluster", "kube", ...], files={"rlkube.yaml": "..."})

`files` are written before the invocation (text, by path relative to its directory); `store_sql` makes the
experiment store at the default place (HOME/.local/share/rlkube/experiments.db) from SQL statements first.
"""

import json
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEAVY = ("tensorflow", "optuna", "mlflow", "wandb", "ray")
# What would point an invocation outside its directory: each is unset, so rlkube falls back to HOME.
UNSET = ("RLKUBE_DATA_DIR", "RLKUBE_CACHE_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
         "JOB_COMPLETION_INDEX", "MLFLOW_TRACKING_URI", "WANDB_BASE_URL", "KUBECONFIG")
STORE = Path(".local/share/rlkube/experiments.db")
REPLY_SECONDS = 60.0


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    traceback: str  # of an exception that escaped the command; "" if none did
    written: list[str]  # paths created, changed or removed in its directory
    heavy: list[str]  # heavy libraries it imported

    def one_error_line(self) -> bool:
        """Exit 2 with exactly one line on stderr, an `error:` line, and no traceback."""
        lines = self.stderr.splitlines()
        return (self.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not self.traceback
                and "Traceback" not in self.stderr)


class CliSandbox:
    """The serving interpreter, started on entering and stopped on leaving."""

    def __enter__(self) -> "CliSandbox":
        self._root = Path(tempfile.mkdtemp(prefix="rlkube-sandbox-"))
        self._process = subprocess.Popen([sys.executable, "-m", "tests.cli_sandbox", str(self._root)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         cwd=Path(__file__).resolve().parents[1])
        return self

    def __exit__(self, *_exc: object) -> None:
        self._process.kill()
        self._process.wait()
        shutil.rmtree(self._root, ignore_errors=True)

    def run(self, args: list[str], files: dict[str, str] | None = None, store_sql: list[str] | None = None,
            env: dict[str, str] | None = None) -> Outcome:
        request = {"args": args, "files": files or {}, "store_sql": store_sql or [], "env": env or {}}
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        ready, _, _ = select.select([self._process.stdout], [], [], REPLY_SECONDS)
        if not ready:
            self._process.kill()
            raise TimeoutError(f"rlkube {args} did not end within {REPLY_SECONDS:.0f} s")
        reply = self._process.stdout.readline()
        if not reply:
            raise RuntimeError(f"the sandbox's interpreter died running rlkube {args}")
        return Outcome(**json.loads(reply))


def _tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path under `directory`, with its size and modification time (directories: 0 and their mtime)."""
    found = {}
    for path in directory.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(directory))] = (0 if path.is_dir() else stat.st_size, stat.st_mtime_ns)
    return found


def _serve(root: Path) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from rlkube.cli.main import cli  # noqa: PLC0415

    for number, line in enumerate(sys.stdin):
        request = json.loads(line)
        directory = root / str(number)
        directory.mkdir()
        for relative, text in request["files"].items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(text)
        if request["store_sql"]:
            (directory / STORE).parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(directory / STORE) as connection:
                for statement in request["store_sql"]:
                    connection.execute(statement)
            connection.close()
        before = _tree(directory)
        heavy_before = {name for name in HEAVY if name in sys.modules}
        env = {**dict.fromkeys(UNSET), "HOME": str(directory), **request["env"]}
        os.chdir(directory)
        try:
            result = CliRunner().invoke(cli, request["args"], env=env, prog_name="rlkube")
        finally:
            os.chdir(root)
        after = _tree(directory)
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        reply = {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                 "traceback": "".join(traceback.format_exception(*result.exc_info)) if escaped else "",
                 "written": sorted(path for path in before.keys() | after.keys()
                                   if before.get(path) != after.get(path)),
                 "heavy": sorted({name for name in HEAVY if name in sys.modules} - heavy_before)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        shutil.rmtree(directory, ignore_errors=True)


def outcome_text(outcome: Any) -> str:
    """An outcome as a test failure shows it."""
    return json.dumps(outcome.__dict__, indent=2)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
