"""TensorFlow loads without its start-up notices, and what else is said meanwhile still shows.

``load_tensorflow`` holds file descriptor 2 while TensorFlow loads and writes back every line
that is not a known notice. The child process below is a fresh interpreter (TensorFlow not
yet loaded, no ``TF_CPP_MIN_LOG_LEVEL``); a thread says two real things while the load is
under way: a Python warning and an error line in the C++ format.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sleeve_trainer.tensorflow_setup import is_noise

# As this CPU machine prints them (TensorFlow 2.21).
CPU_NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795572456.758808   30217 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1795572472.939329   30217 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1795572319.170298   29204 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "I tensorflow/core/util/port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors.",
]
REAL = [
    "E0000 00:00:1795572472.939329   30217 op_kernel.cc:1830] OP_REQUIRES failed: "
    "Invalid argument: indices[3] = 7 is not in [0, 5)",
    "/x/keras/src/layers/core/dense.py:93: UserWarning: Do not pass an `input_shape`",
    "W0000 00:00:1795572472.939329   30217 graph.cc:12] a real TensorFlow warning",
]


@pytest.mark.parametrize("line", CPU_NOTICES)
def test_start_up_notices_are_noise_on_a_cpu_machine(line: str) -> None:
    assert is_noise(line, gpu=False)


@pytest.mark.parametrize("line", REAL)
def test_real_errors_and_warnings_are_not(line: str) -> None:
    assert not is_noise(line, gpu=False)
    assert not is_noise(line, gpu=True)


def test_cuda_lines_are_kept_where_a_gpu_is_found() -> None:
    cuda, banner = CPU_NOTICES[2], CPU_NOTICES[0]
    assert not is_noise(cuda, gpu=True)  # there it may say why the GPU is not used
    assert is_noise(banner, gpu=True)


CHILD = textwrap.dedent(
    """
    import os, sys, threading, time, warnings
    from sleeve_trainer import tensorflow_setup

    said = []

    def say_something_while_tensorflow_loads():
        deadline = time.monotonic() + 60
        while "tensorflow" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.001)
        warnings.warn("a real warning, said while TensorFlow loads", UserWarning)
        os.write(2, b"E0000 00:00:1.0   1 real_op.cc:1] a real error, said meanwhile\\n")
        said.append(not tensorflow_setup._loaded)

    speaker = threading.Thread(target=say_something_while_tensorflow_loads)
    speaker.start()
    tensorflow_setup.load_tensorflow()
    speaker.join()
    tensorflow_setup.load_tensorflow()  # once per process
    import tensorflow as tf
    print("said during the load:", said, float(tf.reduce_sum(tf.ones((2, 2)))))
    """
)


@pytest.mark.slow
def test_what_is_said_while_tensorflow_loads_still_shows_without_the_notices() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=180
    )

    assert child.returncode == 0, child.stderr
    assert child.stdout == "said during the load: [True] 4.0\n"
    assert "UserWarning: a real warning, said while TensorFlow loads" in child.stderr
    assert "real_op.cc:1] a real error, said meanwhile" in child.stderr
    for line in CPU_NOTICES:
        assert line.split("] ")[-1][:40] not in child.stderr, child.stderr
