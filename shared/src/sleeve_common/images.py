"""Cover images: decode with limits, perceptual hash, and the model's input tensor.

``decode_model_input`` is the one path from encoded bytes to the model's uint8 input:
training, serving and bulk scoring all call it, so their pixels match exactly and a faster
decoder changes all three at once. JPEGs (nearly every cover) take a fast path: libjpeg-turbo
through simplejpeg, scaled down in the DCT to the smallest size still at least the model's
input. Everything else (PNG, WebP, GIF's first frame, CMYK, 16-bit, EXIF-rotated) goes
through Pillow, with the same scaling for JPEG. docs/performance.md has the measurements.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from sleeve_common.exceptions import SleeveError
from sleeve_common.model_signature import INPUT_SIZE

__all__ = [
    "ACCEPTED_FORMATS",
    "InvalidImage",
    "decode_model_input",
    "image_size",
    "open_image",
    "perceptual_hash",
]

_HASH_SIZE = 8
_MIN_SIDE = 8
# What uploads, URLs and scraped covers may be; the docs list the same set.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
_JPEG = ("JPEG", "MPO")  # MPO: a camera's JPEG with extra frames; the first is the picture
_JPEG_START = b"\xff\xd8\xff"
_PNG_START = b"\x89PNG\r\n\x1a\n"
_EXIF_MARK = b"Exif\x00\x00"
# Pillow reads a JPEG's segments and a PNG's chunks before the pixels one at a time in
# Python, and skips a JPEG's padding byte by byte: a 4 MB file of empty segments, chunks or
# 0xFF padding cost it 1.7 to 2.9 s of CPU, in the event loop (the pixel budget reads every
# header). No real image comes near these bounds: a camera JPEG has about a dozen segments.
_MAX_HEADER_PARTS = 1_000
_MAX_JPEG_PADDING = 65_536
_FILL = re.compile(rb"\xff+")
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length field
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class InvalidImage(SleeveError):
    """Bytes that are not a usable image; the message says why."""


def image_size(data: bytes, *, max_pixels: int = 40_000_000) -> tuple[int, int]:
    """Width and height from the header alone (no pixel is decoded), checked against limits."""
    with _open(data, max_pixels=max_pixels) as image:
        return image.size


def open_image(data: bytes, *, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode and fully load an image in its own mode (``.format`` tells the file type)."""
    image = _open(data, max_pixels=max_pixels)
    _load(image)
    return image


def decode_model_input(
    data: bytes, *, max_pixels: int = 40_000_000, size: int = INPUT_SIZE
) -> np.ndarray:
    """Encoded image → the model's input: uint8 (size, size, 3), RGB, upright, centre-cropped.

    Raises ``InvalidImage`` (with the reason) for empty, corrupt, unsupported or oversized
    input. Safe to call from several threads at once; both decoders release the GIL.
    """
    if _plain_jpeg(data, max_pixels=max_pixels):
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
        except ValueError as exc:
            raise InvalidImage(f"corrupt image: {exc}") from None
        rgb = Image.fromarray(pixels)
    else:
        with _open(data, max_pixels=max_pixels) as image:
            if image.format in _JPEG:
                image.draft("RGB", (size, size))
            _load(image)
            rgb = _to_rgb(_upright(image))
    fitted = ImageOps.fit(rgb, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(fitted, dtype=np.uint8)


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with the checks every caller needs, in our own errors."""
    if not data:
        raise InvalidImage("empty file")
    if data.startswith(_JPEG_START):
        _jpeg_has_exif(data)
    elif data.startswith(_PNG_START):
        _check_png_chunks(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses the header before our own check can name the size.
        raise InvalidImage(f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"corrupt image: {exc}") from None
    try:
        if image.format not in ACCEPTED_FORMATS:
            raise InvalidImage(f"unsupported image format {image.format}")
        _check_size(*image.size, max_pixels)
    except InvalidImage:
        image.close()
        raise
    return image


def _plain_jpeg(data: bytes, *, max_pixels: int) -> bool:
    """A JPEG that simplejpeg can take alone: YCbCr or grey, no EXIF block that could rotate
    it, within the size limits (checked from libjpeg's header read, no Pillow parse)."""
    if not data.startswith(_JPEG_START) or _jpeg_has_exif(data):
        return False
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return False  # Pillow's path says what is wrong with it
    if colorspace not in ("YCbCr", "Gray"):
        return False
    _check_size(width, height, max_pixels)
    return True


def _jpeg_has_exif(data: bytes) -> bool:
    """Whether an APP1 EXIF segment comes before the first scan, wherever it sits among the
    header's segments (only such a JPEG can carry an orientation).

    Raises ``InvalidImage`` for a header no real JPEG has (``_MAX_HEADER_PARTS`` segments or
    ``_MAX_JPEG_PADDING`` bytes of padding); anything else malformed is left to the decoders.
    """
    position, segments, padding, exif = 2, 0, 0, False
    while position < len(data):
        fill = _FILL.match(data, position)
        if fill is None:  # bytes between segments: libjpeg and Pillow skip them
            found = data.find(b"\xff", position)
            found = len(data) if found < 0 else found
            padding += found - position
            position = found
        else:
            padding += fill.end() - position - 1
            position = fill.end()
            if position >= len(data):
                break
            marker = data[position]
            segments += 1
            if marker in (_SOS, _EOI):
                break
            position += 1
            if marker not in _STANDALONE:
                length = int.from_bytes(data[position : position + 2], "big")
                exif = exif or (marker == 0xE1 and data[position + 2 : position + 8] == _EXIF_MARK)
                position += max(length, 2)
        if segments > _MAX_HEADER_PARTS:
            raise InvalidImage(
                f"corrupt image: more than {_MAX_HEADER_PARTS} JPEG segments before the pixels"
            )
        if padding > _MAX_JPEG_PADDING:
            raise InvalidImage(
                f"corrupt image: more than {_MAX_JPEG_PADDING} bytes of padding in the JPEG header"
            )
    return exif


def _check_png_chunks(data: bytes) -> None:
    """``InvalidImage`` for a PNG with more than ``_MAX_HEADER_PARTS`` chunks before its
    pixels; anything else malformed is left to Pillow."""
    position = len(_PNG_START)
    for _ in range(_MAX_HEADER_PARTS):
        kind = data[position + 4 : position + 8]
        if len(kind) < 4 or kind in (b"IDAT", b"IEND"):
            return
        position += 12 + int.from_bytes(data[position : position + 4], "big")
    raise InvalidImage(f"corrupt image: more than {_MAX_HEADER_PARTS} PNG chunks before the pixels")


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidImage(f"image too large: {width}x{height} pixels (limit {max_pixels})")
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise InvalidImage(f"image too small: {width}x{height} pixels")


def _load(image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"corrupt image: {exc}") from None


def _upright(image: Image.Image) -> Image.Image:
    """The picture as a person sees it: turned as its EXIF orientation says.

    Unlike ``ImageOps.exif_transpose`` this neither copies an unrotated image nor writes the
    EXIF block back, and EXIF that cannot be read is ignored, as viewers do: Pillow raised
    ``SyntaxError`` for a bad TIFF header in it, and ``struct.error`` or ``TypeError`` writing
    back a tag of the wrong type, and the pixels are fine either way.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data", "Truncated File Read"
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable metadata, not an unreadable picture
        return image
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as a person would see it: 16-bit scaled (not clipped), transparency on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.uint32)
        peak = 65535 if image.mode.startswith("I;16") or wide.max() > 255 else 255
        image = Image.fromarray((wide * 255 // peak).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def perceptual_hash(image: Image.Image) -> str:
    """64-bit difference hash (dHash) as 16 hex digits: near-identical covers share it."""
    small = image.convert("L").resize((_HASH_SIZE + 1, _HASH_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"
