"""Loading TensorFlow once per process, without its start-up chatter on a CPU machine.

Some of it is written by C++ code straight to file descriptor 2, before Python's logging or
even absl's exists, so neither a logging filter nor ``TF_CPP_MIN_LOG_LEVEL`` stops it
(absl's "All log messages before absl::InitializeLog() …", ``cudart_stub`` "Could not find
cuda drivers", ``failed call to cuInit``). ``load_tensorflow`` therefore points descriptor 2
at a temporary file while TensorFlow is imported and its devices are listed (where cuInit
runs), then writes back every captured line that is not one of the known notices. Where a GPU
is found the CUDA lines are written back too: there they may matter. Later C++ INFO and
WARNING lines (the oneDNN and CPU-instruction notices) are off unless ``TF_CPP_MIN_LOG_LEVEL``
says otherwise; errors still show, and so do Python warnings and every other log record.

Anything another thread writes to stderr during those seconds is held back and written after
them, in order: ``sleeve train`` loads TensorFlow before its live progress bar starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["is_noise", "load_tensorflow"]

logger = logging.getLogger(__name__)

# Notices of every start, GPU or not.
_BANNERS = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"oneDNN custom operations are on",
)
# A CPU machine's answer to TensorFlow looking for CUDA: noise there, a clue where a GPU is.
_NO_CUDA = (
    r"cudart_stub\.cc",
    r"Could not find cuda drivers",
    r"failed call to cuInit",
    r"cuda_diagnostics\.cc",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"TF-TRT Warning: Could not find TensorRT",
    r"computation placer already registered",
)
_BANNER_LINE = re.compile("|".join(_BANNERS))
_NO_CUDA_LINE = re.compile("|".join(_NO_CUDA))

_lock = threading.Lock()
_loaded = False


class _NoRetracingNotice(logging.Filter):
    """Drops TensorFlow's notice that a new Keras model's predict function was traced: each
    embedding pass builds one, by design. Every other TensorFlow warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def is_noise(line: str, *, gpu: bool) -> bool:
    """Whether a line TensorFlow wrote while loading is a known notice (not worth showing)."""
    return bool(_BANNER_LINE.search(line) or (not gpu and _NO_CUDA_LINE.search(line)))


def load_tensorflow() -> None:
    """Import TensorFlow and Keras, quietly, the first time this process asks (thread-safe)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the user's choice wins
        tf_logger = logging.getLogger("tensorflow")
        if not any(isinstance(f, _NoRetracingNotice) for f in tf_logger.filters):
            tf_logger.addFilter(_NoRetracingNotice())
        captured, gpu = _Captured(), False
        try:
            with _descriptor_2_captured(captured):
                import keras  # noqa: F401  # its import is TensorFlow's, and may speak too
                import tensorflow as tf

                gpu = bool(tf.config.list_physical_devices("GPU"))
        finally:  # a failed import shows what it said
            kept = [line for line in captured.text.splitlines() if not is_noise(line, gpu=gpu)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
        _loaded = True
        logger.debug("TensorFlow %s loaded (%s)", tf.__version__, "GPU" if gpu else "CPU only")


class _Captured:
    text = ""  # what was written to descriptor 2, once the block has ended


@contextlib.contextmanager
def _descriptor_2_captured(captured: _Captured) -> Iterator[None]:
    """File descriptor 2 points at a temporary file inside the block (C++ writes there too);
    what was written is in ``captured.text`` once it has ended."""
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):  # a closed sys.stderr
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
