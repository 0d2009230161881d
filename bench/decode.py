"""Which JPEG decoder the common decode path uses: Pillow, Pillow with ``draft``, or simplejpeg.

    python bench/decode.py [--count 600]

Each candidate turns real covers into the model's 224x224 input (centre crop, bilinear
resize), on one thread, on the kit's 300x300 covers and on the same covers re-encoded at
640x640 (typical of the music APIs' artwork). The last line is Sleeve's own
``decode_model_input``, which should match the fastest.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
import simplejpeg
from benchkit import COVERS, machine, read_covers, say
from PIL import Image, ImageOps

from sleeve_common.images import decode_model_input

SIZE = 224


def _fit(image: Image.Image) -> np.ndarray:
    return np.asarray(ImageOps.fit(image, (SIZE, SIZE), Image.Resampling.BILINEAR))


def pillow(data: bytes) -> np.ndarray:
    return _fit(Image.open(io.BytesIO(data)).convert("RGB"))


def pillow_draft(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (SIZE, SIZE))
    return _fit(image.convert("RGB"))


def simplejpeg_scaled(data: bytes) -> np.ndarray:
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=SIZE, min_width=SIZE)
    return _fit(Image.fromarray(pixels))


def _rate(decode: Callable[[bytes], np.ndarray], covers: list[bytes]) -> float:
    for data in covers[:20]:
        decode(data)
    started = time.perf_counter()
    for data in covers:
        decode(data)
    return len(covers) / (time.perf_counter() - started)


def _enlarged(covers: list[bytes], side: int) -> list[bytes]:
    out = []
    for data in covers:
        buffer = io.BytesIO()
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((side, side))
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600, help="covers per measurement")
    args = parser.parse_args()
    covers = read_covers(COVERS, args.count)
    for line in machine(["CPUExecutionProvider"]):
        say(line)
    candidates: list[tuple[str, Callable[[bytes], np.ndarray]]] = [
        ("Pillow, full decode", pillow),
        ("Pillow with draft (DCT scaling)", pillow_draft),
        ("simplejpeg with DCT scaling", simplejpeg_scaled),
        ("Sleeve's decode_model_input", decode_model_input),
    ]
    for label, batch in (("300x300 kit covers", covers), ("640x640", _enlarged(covers, 640))):
        say(f"\n{label}: {len(batch)} images, one thread")
        for name, decode in candidates:
            say(f"  {name:<34} {_rate(decode, batch):7.1f} img/s")


if __name__ == "__main__":
    main()
