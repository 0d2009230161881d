"""``sleeve train`` on a CPU machine says what it does and nothing of TensorFlow's start-up
chatter (absl, CUDA, oneDNN, retracing), while a real warning still shows.

The real CLI in a child process, on a dozen and a half real covers, with the environment a
user has: no ``TF_CPP_MIN_LOG_LEVEL`` (the test session sets one for itself), the default
log level. The real warning is the trainer's own: one cover's cached trunk activations are
malformed, so the run says it ignores them and computes them again. Python warnings and
C++ errors raised while TensorFlow loads are written back too (``test_tensorflow_setup``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import BASE_WEIGHTS, child_env, make_settings

from sleeve_common.cli import main

from .covers import tiny_library

pytestmark = pytest.mark.slow

NOISE = (
    "failed call to cuInit",
    "cudart_stub",
    "Could not find cuda drivers",
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "cpu_feature_guard",
    "To enable the following instructions",
    "retracing",
)
# unfreeze_blocks=2 (the default) cuts the base there (test_model_export checks the cut).
DEFAULT_CUT = "block_14_add"


def test_sleeve_train_prints_no_tensorflow_noise_and_still_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sleeve_trainer.trunk import ActivationCache, weights_id

    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}")
    env = child_env(settings, SLEEVE_BASE_WEIGHTS=str(BASE_WEIGHTS))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("SLEEVE_LOG_LEVEL")  # the default, INFO: what a user sees
    for name, value in env.items():
        if name.startswith("SLEEVE_"):
            monkeypatch.setenv(name, value)
    digests = tiny_library(tmp_path / "covers")
    assert main(["db", "upgrade"]) == 0
    assert main(["scrape", "--source", "folder", "--path", str(tmp_path / "covers")]) == 0
    build = ["--min-per-genre", "4", "--val-fraction", "0.2", "--test-fraction", "0.2"]
    assert main(["dataset", "build", "--name", "tiny", *build]) == 0
    capsys.readouterr()
    # One cover's cached activations, as a bug or a full disk could leave them: one row.
    cache = ActivationCache(
        settings.data_dir / "cache" / "activations", weights_id(str(BASE_WEIGHTS)), DEFAULT_CUT
    )
    for views in (1, 12):  # whichever split it is in
        cache.put(digests[0], np.zeros(views, dtype=np.float16))

    options = ["--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "16"]
    train = subprocess.run(
        [sys.executable, "-m", "sleeve_common", "train", "--dataset", "tiny", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = train.stdout + train.stderr
    assert train.returncode == 0, output
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in:\n{output}"
    assert "WARNING sleeve_trainer.trunk" in train.stderr
    assert "ignoring malformed cached activations" in train.stderr
    assert train.stdout.startswith("model v1 (training run 1): test accuracy")
    # One line per epoch, the fraction never going back, the run's end at 100%.
    assert "head epoch 1/1: loss " in train.stderr
    assert "fine-tune epoch 1/1: loss " in train.stderr
    percents = [int(p) for p in re.findall(r"^\[train +(\d+)%\]", train.stderr, re.MULTILINE)]
    assert percents == sorted(percents) and percents[-1] == 100, train.stderr
