"""Where the learner runs: `--device auto|cpu|gpu|tpu` picks a TensorFlow distribution strategy.

Actors always act on the CPU, in numpy. The learner gets one replica: DQN-sized batches (tens to
hundreds of samples) gain nothing from being split across accelerators, so a multi-GPU machine or a
TPU slice runs the update on its first device (on a TPU, one core of the slice).
"""

import contextlib
import glob
import os
from pathlib import Path
from typing import Any

from rlkube.errors import UserError

DEVICES = ("auto", "cpu", "gpu", "tpu")


def tpu_present() -> bool:
    """A Cloud TPU VM shows its chips as /dev/accel* (or /dev/vfio for v5e+), and GKE sets TPU_* variables."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
                or any(os.environ.get(name) for name in ("TPU_WORKER_ID", "TPU_NAME", "TPU_ACCELERATOR_TYPE")))


def _cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux
        return set()


def bfloat16_matrix_unit() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: Intel AMX (Sapphire Rapids and later)."""
    return "amx_bf16" in _cpu_flags()


def bfloat16_dot_products() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions at all: AMX, or AVX512-BF16 (AMD Zen 4, Intel Cooper
    Lake and later), with which oneDNN runs bfloat16 convolutions at up to twice float32's rate."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def resolve(device: str) -> str:
    """`auto` becomes tpu, gpu or cpu by what this machine has."""
    import tensorflow as tf  # noqa: PLC0415

    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'; use one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    if tpu_present():
        return "tpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def run_ops_inline() -> None:
    """Run each TensorFlow op on one thread, where the runtime has not started yet (else leave it be).

    For a CPU learner whose ops are microseconds of arithmetic (rlkube.rl.agents.compiled.one_thread_per_op):
    handing each to the intra-op thread pool costs more than it saves (waking a pool thread took ~30 µs on
    the 2-core VM measured). Independent ops still run side by side.
    """
    import tensorflow as tf  # noqa: PLC0415

    if tf.config.threading.get_intra_op_parallelism_threads() != 0:
        return  # set already (limit_threads, for parallel copies)
    # Once the runtime has started (another runner in this process), it keeps its threads.
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)


def strategy_for(device: str, inline_ops: bool = False) -> Any:
    """A one-replica tf.distribute strategy on the chosen device, or a UserError saying what is missing.

    `inline_ops`: on a CPU, run each op on one thread (run_ops_inline).
    """
    import tensorflow as tf  # noqa: PLC0415

    chosen = resolve(device)
    if chosen == "cpu":
        if inline_ops:
            run_ops_inline()
        # Without a GPU the default strategy is the CPU already, and keeps the hot path exactly as it is.
        gpus = tf.config.list_physical_devices("GPU")
        return tf.distribute.OneDeviceStrategy("/cpu:0") if gpus else tf.distribute.get_strategy()
    if chosen == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise UserError("--device gpu: TensorFlow sees no GPU here (is this the gpu image, with the NVIDIA "
                            "driver and a GPU limit on the pod?); use --device cpu or auto")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
        tf.config.experimental_connect_to_cluster(resolver)
        topology = tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise UserError(f"--device tpu: no TPU found ({str(error).splitlines()[0][:120]}); run on a TPU VM or "
                        f"GKE TPU node with the tpu image, or use --device cpu") from None
    assignment = tf.tpu.experimental.DeviceAssignment.build(topology, num_replicas=1)
    return tf.distribute.TPUStrategy(resolver, experimental_device_assignment=assignment)
