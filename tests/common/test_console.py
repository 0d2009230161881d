"""The console of `sleeve run`: native start-up chatter dropped, everything else relayed."""

from __future__ import annotations

import asyncio
import io

from sleeve_common.console import NativeNoise, relay_lines

# Lines TensorFlow 2.21 writes on a CPU machine without a CUDA driver, as they came.
CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795551185.097447    7785 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1795550395.757380   27917 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "E0000 00:00:1795551196.965381    7785 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
KEPT = [
    "2026-11-24 20:13:18,454 INFO sleeve_trainer.model [-]: loaded base mobilenetv2_1.00_224",
    "W0000 00:00:1795551196.965381    7785 cpu_allocator_impl.cc:83] Allocation of 642252800 "
    "exceeds 10% of free system memory.",
    "Traceback (most recent call last):",
    "/x/keras/src/models/functional.py:238: UserWarning: The structure of `inputs` doesn't match",
]


def test_native_start_up_chatter_is_dropped_and_real_warnings_kept() -> None:
    noise = NativeNoise()
    assert [line for line in CHATTER + KEPT if noise.keep(line)] == KEPT


def test_a_cuinit_error_shows_where_a_driver_was_found() -> None:
    # Without TensorFlow's "no driver" notice first, a failed cuInit is a real fault.
    assert NativeNoise().keep(CHATTER[4])


async def test_relay_copies_lines_in_order_without_the_chatter() -> None:
    stream = asyncio.StreamReader(limit=256)
    for line in [*CHATTER, *KEPT, "x" * 1000, "last line without a newline"]:
        stream.feed_data(line.encode() + (b"" if line.startswith("last") else b"\n"))
    stream.feed_eof()
    out = io.StringIO()
    await relay_lines(stream, out)
    assert out.getvalue().splitlines() == [
        *KEPT,
        "[a console line too long to show was left out]",
        "last line without a newline",
    ]
