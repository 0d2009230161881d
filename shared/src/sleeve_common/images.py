"""Cover images: decode with limits, perceptual hash, and the model's input tensor.

Training and serving both call ``to_model_input`` so their pixels match exactly.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sleeve_common.exceptions import SleeveError

__all__ = [
    "MODEL_INPUT_SIZE",
    "InvalidImage",
    "decode_image",
    "open_image",
    "perceptual_hash",
    "to_model_input",
]

MODEL_INPUT_SIZE = 224
_HASH_SIZE = 8


class InvalidImage(SleeveError):
    """Bytes that are not a usable image; the message says why."""


def decode_image(data: bytes, *, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode and fully load an image as RGB, refusing empty, corrupt or oversized input."""
    return open_image(data, max_pixels=max_pixels).convert("RGB")


def open_image(data: bytes, *, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode and fully load an image in its own mode (``.format`` tells the file type)."""
    if not data:
        raise InvalidImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(f"image too large: {width}x{height} pixels (limit {max_pixels})")
            image.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses the header before our own check can name the size.
        raise InvalidImage(f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"corrupt image: {exc}") from None
    if width < 8 or height < 8:
        raise InvalidImage(f"image too small: {width}x{height} pixels")
    return image


def perceptual_hash(image: Image.Image) -> str:
    """64-bit difference hash (dHash) as 16 hex digits: near-identical covers share it."""
    small = image.convert("L").resize((_HASH_SIZE + 1, _HASH_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def to_model_input(image: Image.Image, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Centre-crop to a square and resize: uint8 array of shape (size, size, 3)."""
    fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
    return np.asarray(fitted, dtype=np.uint8)
