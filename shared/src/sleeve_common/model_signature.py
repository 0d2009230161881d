"""The exported model's signature: the one place its input and output are defined.

The trainer exports to it, the server and bulk scoring run it, the Open Inference Protocol
route describes it, and the tests check it, all from these names. The input is uint8 NHWC
RGB, ``INPUT_SIZE`` square, with a dynamic batch; scaling to MobileNetV2's range happens
inside the graph, so clients and the decoder never see floats.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "INPUT_CHANNELS",
    "INPUT_DTYPE",
    "INPUT_NAME",
    "INPUT_SHAPE",
    "INPUT_SIZE",
    "OUTPUT_NAME",
    "input_spec",
]

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INPUT_DTYPE = "uint8"
INPUT_SIZE = 224
INPUT_CHANNELS = 3
INPUT_SHAPE = (INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS)
"""One image, without the batch dimension."""


def input_spec() -> dict[str, Any]:
    """The signature as the model card and the registry record it."""
    return {
        "name": INPUT_NAME,
        "dtype": INPUT_DTYPE,
        "shape": [None, *INPUT_SHAPE],
        "layout": "NHWC",
        "color": "RGB",
        "resize": f"centre crop to square, bilinear resize to {INPUT_SIZE}x{INPUT_SIZE}",
        "scaling": "inside the graph (x / 127.5 - 1)",
        "output": OUTPUT_NAME,
    }
