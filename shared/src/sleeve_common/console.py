"""The console of ``sleeve run``: its children's stderr, relayed line by line, without the
start-up chatter of native libraries.

TensorFlow's C++ side logs INFO lines while it loads, before its logging honours
``TF_CPP_MIN_LOG_LEVEL`` ("Could not find cuda drivers…", "This TensorFlow binary is
optimized…", absl's banner), and on a machine without a CUDA driver an error for the
``cuInit`` call it then makes anyway. Those are dropped here. Everything else passes as it
came: log lines, Python warnings and tracebacks, and native WARNING and ERROR lines. The
relay runs in the parent, so a child that crashes loses none of its last lines.
"""

from __future__ import annotations

import asyncio
import re
from typing import TextIO

__all__ = ["NativeNoise", "relay_lines"]

# absl's format: severity letter, MMDD, time (or "00:00:<epoch>"), thread id, file:line] message
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.-]+):\d+\] (.*)$")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
_CPU_FEATURES = re.compile(r"^To enable the following instructions: .* rebuild TensorFlow")
_NO_DRIVER = "Could not find cuda drivers on your machine"
# Plugins registered twice when TensorFlow and XLA both load (harmless, said at every start).
_DUPLICATE_PLUGIN = re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory")


class NativeNoise:
    """Decides, line by line, what of one child's stderr the console shows."""

    def __init__(self) -> None:
        self._no_driver = False

    def keep(self, line: str) -> bool:
        if line.startswith(_ABSL_BANNER) or _CPU_FEATURES.match(line):
            return False
        match = _ABSL_LINE.match(line)
        if match is None:
            return True
        severity, _source, message = match.groups()
        if _NO_DRIVER in message:
            self._no_driver = True
        if severity == "I":
            return False
        if "failed call to cuInit" in message:
            # Expected on a machine that has no driver at all; a real fault where one is.
            return not self._no_driver
        return not (_DUPLICATE_PLUGIN.search(message) or "TF-TRT Warning" in message)


async def relay_lines(stream: asyncio.StreamReader, out: TextIO) -> None:
    """Copy ``stream`` to ``out`` until it ends, keeping what ``NativeNoise`` keeps."""
    noise = NativeNoise()
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line over the reader's limit: it was skipped
            out.write("[a console line too long to show was left out]\n")
            continue
        if not raw:
            return
        line = raw.decode("utf-8", errors="replace")
        if noise.keep(line.rstrip("\r\n")):
            out.write(line if line.endswith("\n") else line + "\n")
            out.flush()
