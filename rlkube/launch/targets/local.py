"""The `local` target: each copy is a detached process on this machine, with the run layout of a pod.

Copy i runs `rlkube train ... --copies-file DIR/copies.json --copy-index i` through `local_worker`, logging to
DIR/copy-<i>/train.log and recording its exit code in DIR/copy-<i>/exit-code; status reads each copy's
progress record (rlkube.rundir.progress_record).
"""

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rlkube.errors import UserError
from rlkube.launch import store
from rlkube.launch.logtail import new_lines
from rlkube.launch.spec import ExperimentSpec
from rlkube.launch.targets.base import CopyStatus, Target, age_seconds, register_target
from rlkube.launch.tensorboard import serve
from rlkube.run.options import EXPERIMENT_ID_ENV, copies_json
from rlkube.rundir import layout
from rlkube.rundir.progress_record import ProgressRecord
from rlkube.storage import filesystems
from rlkube.storage.ownership import refuse_other_experiment

CANCEL_GRACE_SECONDS = 60.0


def copy_dir(output_dir: str, copy: int) -> Path:
    """Where a local copy keeps its log and exit code: the run directory, or its mirror for a bucket."""
    remote = filesystems.is_remote(output_dir)
    return layout.copy_dir(filesystems.local_mirror(output_dir) if remote else Path(output_dir), copy)


def _owner_location(output_dir: str, copy: int) -> str | Path:
    """Where a copy's writers meet, and its owner record is: its bucket directory, or its local one."""
    return layout.copy_url(output_dir, copy) if filesystems.is_remote(output_dir) else layout.copy_dir(Path(output_dir),
                                                                                                     copy)


def _alive(pid: int, exit_file: Path) -> bool:
    """Whether `pid` is still our worker (not a reused pid): its command line names our exit file."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return str(exit_file).encode() in cmdline and b"<defunct>" not in cmdline


def _last_line(log: Path) -> str:
    """Why a copy failed, as its log's last line says (an error line, or a traceback's last)."""
    with contextlib.suppress(OSError):
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip()[:200] if lines else ""
    return ""


@register_target
class LocalTarget(Target):
    kind: ClassVar[str] = "local"
    renders_manifests: ClassVar[bool] = False
    runs_images: ClassVar[bool] = False
    writes_to_cluster_volume: ClassVar[bool] = False
    status_poll_seconds: ClassVar[float] = 0.1

    def _start(self, spec: ExperimentSpec, replacing: bool) -> tuple[ExperimentSpec, dict[str, Any]]:  # noqa: ARG002
        """Start every copy, with the spec's output directory made absolute. (`replacing` is never true here:
        local copies exist only through the store, whose cancel has already stopped them.)"""
        if not filesystems.is_remote(spec.output_dir):
            spec = dataclasses.replace(spec, output_dir=str(Path(spec.output_dir).expanduser().absolute()))
        for index in range(len(spec.copies)):  # another experiment's directories: refused before anything is written
            refuse_other_experiment(_owner_location(spec.output_dir, index), spec.experiment_id, index)
        output = copy_dir(spec.output_dir, 0).parent
        copies_file = output / layout.COPIES_FILE  # each copy's seed and overrides, as a pod's ConfigMap holds them
        try:
            for index in range(len(spec.copies)):
                copy_dir(spec.output_dir, index).mkdir(parents=True, exist_ok=True)
            copies_file.write_text(copies_json(spec.copies))
        except OSError as error:
            raise UserError(f"cannot create the run directory {output} ({error.strerror}); "
                            f"set output in the local profile to a writable path") from None
        # Parallel copies share the cores instead of each taking all of them.
        threads = str(max(1, (os.cpu_count() or 1) // len(spec.copies)))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_NUM_INTRAOP_THREADS": threads,
               "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads, EXPERIMENT_ID_ENV: spec.experiment_id}
        pids = {}
        for index in range(len(spec.copies)):
            directory = copy_dir(spec.output_dir, index)
            exit_file = directory / layout.EXIT_FILE
            exit_file.unlink(missing_ok=True)
            command = [sys.executable, "-m", "rlkube.launch.targets.local_worker", str(exit_file), "--",
                       sys.executable, "-m", "rlkube", "train", *spec.train.args(), "--output-dir", spec.output_dir,
                       "--copies-file", str(copies_file), "--copy-index", str(index)]
            with open(directory / layout.TRAIN_LOG, "ab") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env=env)
            pids[str(index)] = process.pid
        return spec, {"pids": pids, "cancelled": False}

    def _dryrun(self, spec: ExperimentSpec, replacing: bool) -> str:  # noqa: ARG002  (see _start)
        return f"dry run: would start {len(spec.copies)} local copies of {spec.train.hparams} in {spec.output_dir}"

    def describe(self, record: store.Record) -> list[CopyStatus]:
        copies = []
        for index in range(record.copies):
            directory = copy_dir(record.output_dir, index)
            exit_file = directory / layout.EXIT_FILE
            progress = ProgressRecord.read(directory)
            step, recent_return = (progress.step, progress.recent_return) if progress else (None, None)
            if exit_file.exists():
                code = int(exit_file.read_text().strip() or 1)
                phase = "Succeeded" if code == 0 else "Cancelled" if record.backend.get("cancelled") else "Failed"
            elif (pid := record.backend.get("pids", {}).get(str(index))) is None:
                phase = "Pending"  # the store has taken the name, and the copies are starting
            elif _alive(pid, exit_file):
                phase = "Running"
            else:
                phase = "Cancelled" if record.backend.get("cancelled") else "Failed"
            failure = _last_line(directory / layout.TRAIN_LOG) if phase == "Failed" else ""
            copies.append(CopyStatus(index, phase, 0, socket.gethostname(), age_seconds(record.created), step,
                                     recent_return, failure))
        return copies

    def logs(self, record: store.Record, emit: Callable[[str], None], copy: int | None = None, follow: bool = True,
             tail: int | None = None, since_seconds: int | None = None) -> None:
        """Log files have no timestamps, so `since_seconds` is refused; following polls until every copy ended."""
        if since_seconds is not None:
            raise UserError("--since needs timestamps, which local logs lack; use --tail N instead")
        indices = [copy] if copy is not None else list(range(record.copies))
        offsets = {}
        for index in indices:
            path = copy_dir(record.output_dir, index) / layout.TRAIN_LOG
            data = path.read_bytes() if path.exists() else b""
            lines = data.decode(errors="replace").splitlines()
            for line in lines[-tail:] if tail is not None else lines:
                emit(f"{layout.copy_name(index)} | {line}")
            offsets[index] = len(data) - (len(data) - data.rfind(b"\n") - 1 if b"\n" in data else len(data))
        while follow:
            running = {c.copy for c in self.describe(record) if c.phase in ("Running", "Pending")}
            for index in indices:
                path = copy_dir(record.output_dir, index) / layout.TRAIN_LOG
                if not path.exists():
                    continue
                lines, offsets[index] = new_lines(path, offsets[index])
                for line in lines:
                    emit(f"{layout.copy_name(index)} | {line}")
            if not running.intersection(indices):
                return
            time.sleep(0.2)

    def _stop(self, record: store.Record) -> list[str]:
        """SIGTERM to every running copy (each checkpoints), then SIGKILL after the grace period."""
        running = [c.copy for c in self.describe(record) if c.phase == "Running"]
        pids = [record.backend["pids"][str(i)] for i in running]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        exit_files = [copy_dir(record.output_dir, i) / layout.EXIT_FILE for i in running]
        while time.monotonic() < deadline and any(
                _alive(pid, exit_file) for pid, exit_file in zip(pids, exit_files, strict=True)):
            time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return [f"process {layout.copy_name(i)} (pid {pid})" for i, pid in zip(running, pids, strict=True)]

    def _serve_tensorboard(self, record: store.Record, port: int, emit: Callable[[str], None]) -> None:
        serve(Path(record.output_dir), port, emit, record.name)
