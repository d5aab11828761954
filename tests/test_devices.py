"""--device picks the learner's strategy; on this CPU machine, auto is the CPU and accelerators are refused."""

import subprocess
import sys

import pytest
import tensorflow as tf

from rlkube.errors import UserError
from rlkube.rl import devices
from rlkube.rl.agents.compiled import one_thread_per_op
from rlkube.rl.hparams import get_hparams
from tests.conftest import run_rlkube


def test_auto_is_the_cpu_without_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("TPU_WORKER_ID", "TPU_NAME", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(variable, raising=False)
    assert devices.resolve("auto") == "cpu"
    strategy = devices.strategy_for("auto")
    with strategy.scope():
        variable = tf.Variable(1.0)
    assert "CPU" in variable.device.upper()


def test_auto_prefers_a_tpu_where_gke_announces_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # No TPU exists here: GKE's TPU_WORKER_ID stands in for one, to check what auto picks.
    monkeypatch.setenv("TPU_WORKER_ID", "0")
    assert devices.resolve("auto") == "tpu"


@pytest.mark.parametrize(("device", "message"), [("gpu", "--device gpu: TensorFlow sees no GPU"),
                                                 ("tpu", "--device tpu: no TPU found")])
def test_missing_accelerators_get_one_clear_line(device: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        devices.strategy_for(device)


def test_training_on_the_chosen_device_learns_and_a_missing_one_is_refused(tmp_path) -> None:
    args = ["train", "--hparams", "dqn_cartpole", "--train-steps", "1500", "--eval-episodes", "1",
            "--test-episodes", "1", "--hparam-override", "eval_every=1500"]
    assert run_rlkube(*args, "--device", "cpu", "--output-dir", str(tmp_path / "cpu")).returncode == 0
    refused = run_rlkube(*args, "--device", "gpu", "--output-dir", str(tmp_path / "gpu"))
    assert refused.returncode == 2
    assert "error: --device gpu: TensorFlow sees no GPU" in refused.stderr
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize(("hparams", "overrides", "one_thread"), [
    ("dqn_cartpole", "", True),  # 64 x 256 x 256: small
    ("ddpg_pendulum", "matmul_precision=bfloat16", True),  # large, but in bfloat16
    ("ddpg_pendulum", "matmul_precision=float32", False),  # 256 x 400 x 300 in float32: worth two threads
    ("dqn_pong", "", False),  # convolutions
])
def test_a_cpu_learner_of_small_ops_runs_each_on_one_thread(hparams: str, overrides: str, one_thread: bool) -> None:
    assert one_thread_per_op(get_hparams(hparams, overrides)) == one_thread


@pytest.mark.parametrize(("inline_ops", "threads"), [(True, 1), (False, 0)])
def test_the_cpu_strategy_sets_the_thread_pool_before_the_runtime_starts(inline_ops: bool, threads: int) -> None:
    # A fresh process: TensorFlow takes thread settings only before its runtime starts. 0 is its default.
    script = ("import tensorflow as tf; from rlkube.rl import devices; "
              f"devices.strategy_for('cpu', inline_ops={inline_ops}); "
              "tf.constant(1.0); print(tf.config.threading.get_intra_op_parallelism_threads())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split()[-1] == str(threads)
