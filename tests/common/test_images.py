"""The one decode path (bytes → uint8 model input) on real covers and every accepted format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support import DISCOGS5

from sleeve_common.images import (
    InvalidImage,
    decode_model_input,
    image_size,
)
from sleeve_common.model_signature import INPUT_SHAPE

SHAPE = INPUT_SHAPE


def real_cover(index: int = 0) -> bytes:
    return sorted((DISCOGS5 / "Rock").glob("*.jpg"))[index].read_bytes()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def halves(left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    """A 320x240 image, left half one colour and right half another (orientation shows)."""
    image = Image.new(mode, (320, 240), left)
    image.paste(Image.new(mode, (160, 240), right), (160, 0))
    return image


def test_real_cover_gives_uint8_model_input() -> None:
    pixels = decode_model_input(real_cover())
    assert pixels.shape == SHAPE
    assert pixels.dtype == np.uint8
    assert 10 < pixels.mean() < 245


def test_fast_jpeg_path_matches_pillow() -> None:
    """simplejpeg and Pillow decode the same cover to nearly the same pixels."""
    data = real_cover(3)
    fast = decode_model_input(data).astype(np.int16)
    # A CMYK copy goes through Pillow; converting back and forth costs a little precision,
    # so compare the RGB copy through Pillow's path by making it EXIF-rotated by 360°.
    image = Image.open(io.BytesIO(data))
    exif = image.getexif()
    exif[0x0112] = 1
    tagged = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    pillow = decode_model_input(tagged).astype(np.int16)
    assert np.abs(fast - pillow).mean() < 3.0


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("WEBP", "RGB", {"quality": 95}),
        ("GIF", "P", {}),
        ("JPEG", "L", {"quality": 95}),
        ("JPEG", "CMYK", {"quality": 95}),
        ("BMP", "RGB", {}),
        ("TIFF", "RGB", {}),
    ],
)
def test_every_accepted_format(fmt: str, mode: str, options: dict[str, object]) -> None:
    source = halves((200, 30, 30), (30, 30, 200)).convert(mode)
    pixels = decode_model_input(encode(source, fmt, **options))
    assert pixels.shape == SHAPE
    if mode not in ("L", "CMYK"):
        assert pixels[:, :40, 0].mean() > pixels[:, :40, 2].mean()  # red side stays left
        assert pixels[:, -40:, 2].mean() > pixels[:, -40:, 0].mean()


def test_gif_uses_its_first_frame() -> None:
    frames = [Image.new("P", (64, 64), 1), Image.new("P", (64, 64), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixels = decode_model_input(data)
    assert pixels[..., 0].mean() > 250
    assert pixels[..., 2].mean() < 5


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    grey = Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16))
    pixels = decode_model_input(encode(grey, "PNG"))
    assert 120 <= pixels.mean() <= 135


def test_transparency_is_white() -> None:
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert decode_model_input(encode(clear, "PNG")).min() == 255


def test_exif_rotation_is_applied() -> None:
    """A JPEG stored sideways with orientation 6 (rotate 90° clockwise to view) is upright."""
    stored = halves((220, 20, 20), (20, 20, 220)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_model_input(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert pixels[:, :40, 0].mean() > 150
    assert pixels[:, -40:, 2].mean() > 150


def _sideways_jpeg(exif: bytes, *, before_exif: bytes = b"") -> bytes:
    """``halves`` stored sideways with ``exif``; ``before_exif``: segments put ahead of it."""
    stored = halves((220, 20, 20), (20, 20, 220)).transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "JPEG", quality=95, exif=exif)
    at = data.index(b"\xff\xe1")
    return data[:at] + before_exif + data[at:]


def _assert_upright(pixels: np.ndarray) -> None:
    assert pixels[:, :40, 0].mean() > 150
    assert pixels[:, -40:, 2].mean() > 150


def test_exif_after_64_kib_of_other_segments_is_applied() -> None:
    """The fast path looked for EXIF in the first 64 KiB only, so this one was not rotated."""
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = b"\xff\xe2" + (65_002).to_bytes(2, "big") + b"p" * 65_000
    _assert_upright(decode_model_input(_sideways_jpeg(exif.tobytes(), before_exif=icc * 2)))


def test_exif_pillow_cannot_rewrite_is_still_applied() -> None:
    """Orientation 6 beside a tag of the wrong type (ExtraSamples as text): Pillow's
    ``exif_transpose`` raised ``struct.error`` writing the block back, a 500 in the API."""
    entries = [(0x0112, 3, 1, (6).to_bytes(4, "little")), (0x0152, 2, 4, b"abc\x00")]
    ifd = len(entries).to_bytes(2, "little") + b"".join(
        tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + n.to_bytes(4, "little") + v
        for tag, kind, n, v in entries
    )
    exif = b"Exif\0\0II*\0\x08\0\0\0" + ifd + b"\0" * 4
    _assert_upright(decode_model_input(_sideways_jpeg(exif)))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_unreadable_exif_is_ignored(fmt: str) -> None:
    """A bad TIFF header in the EXIF block: Pillow raised ``SyntaxError``, a 500 in the API."""
    data = encode(Image.new("RGB", (64, 64), (200, 0, 0)), fmt, exif=b"MM\x00\xe1\0\0\0\x08\0\0")
    assert decode_model_input(data)[..., 0].mean() > 150


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            real_cover()[:2] + b"\xff\xe2\x00\x02" * 1_001 + real_cover()[2:],
            "more than 1000 JPEG segments",
        ),
        (real_cover()[:2] + b"\xff" * 65_538 + real_cover()[2:], "65536 bytes of padding"),
        (real_cover()[:20] + b"\x00" * 65_537 + real_cover()[20:], "65536 bytes of padding"),
        (
            encode(Image.new("RGB", (64, 64)), "PNG")[:33]
            + b"\x00\x00\x00\x00abCd\x78\x06\xe9\xb3" * 1_001
            + encode(Image.new("RGB", (64, 64)), "PNG")[33:],
            "more than 1000 PNG chunks",
        ),
    ],
    ids=["jpeg-segments", "jpeg-fill-bytes", "jpeg-garbage", "png-chunks"],
)
def test_headers_built_to_cost_cpu_are_refused(data: bytes, reason: str) -> None:
    """Pillow parses these one segment, chunk or padding byte at a time in Python: 4 MB of
    them cost it seconds before a pixel, for the pixel budget's header read too."""
    for read in (image_size, decode_model_input):
        with pytest.raises(InvalidImage, match=reason):
            read(data)


def test_a_header_at_the_bounds_still_decodes() -> None:
    data = real_cover()[:2] + b"\xff\xe2\x00\x02" * 990 + b"\xff" * 60_000 + real_cover()[2:]
    assert image_size(data) == (300, 300)
    assert decode_model_input(data).shape == SHAPE


def test_image_size_reads_only_the_header() -> None:
    assert image_size(real_cover()) == (300, 300)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a recognised image format"),
        (b"%PDF-1.4 not an image", "not a recognised image format"),
        (encode(Image.new("RGB", (32, 32)), "ICO"), "unsupported image format ICO"),
        (encode(Image.new("RGB", (32, 32)), "PPM"), "unsupported image format PPM"),
        (encode(Image.new("RGB", (4, 4)), "PNG"), "image too small"),
        (real_cover()[:4000], "corrupt image"),
        (encode(Image.new("RGB", (64, 64)), "PNG")[:60], "corrupt image"),
    ],
)
def test_bad_input_says_why(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_model_input(data)


def test_pixel_limit_is_checked_before_decoding() -> None:
    big = encode(Image.new("RGB", (4000, 3000)), "PNG")
    with pytest.raises(InvalidImage, match=r"4000x3000 pixels \(limit 1000000\)"):
        image_size(big, max_pixels=1_000_000)
    with pytest.raises(InvalidImage, match="image too large"):
        decode_model_input(big, max_pixels=1_000_000)
