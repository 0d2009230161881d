"""The views of a cover the trainer learns from: the served input, five crops and their mirrors.

View 0 is exactly what the server feeds the model (``decode_model_input``: the centre square,
resized). Views 1-5 are the centre and the four corners of the same square resized a little
larger (256 for a 224 input), so each is a slightly closer framing; views 6-11 mirror 0-5 left
to right. Training on all twelve is the augmentation; validation and test use view 0 only,
the input the exported model gets.
"""

from __future__ import annotations

import numpy as np

from sleeve_common.images import decode_model_input
from sleeve_common.model_signature import INPUT_SIZE

__all__ = ["SERVED_VIEW", "VIEW_COUNT", "cover_views"]

SERVED_VIEW = 0
VIEW_COUNT = 12
_ZOOMED = INPUT_SIZE * 8 // 7  # 256 for 224: crops keep 7/8 of the side


def cover_views(data: bytes, *, augment: bool = True) -> np.ndarray:
    """uint8 (VIEW_COUNT, size, size, 3) views of an encoded cover; (1, …) without ``augment``.

    Raises ``InvalidImage`` as ``decode_model_input`` does.
    """
    served = decode_model_input(data)
    if not augment:
        return served[None]
    zoomed = decode_model_input(data, size=_ZOOMED)
    margin = _ZOOMED - INPUT_SIZE
    corners = [(margin // 2, margin // 2), (0, 0), (0, margin), (margin, 0), (margin, margin)]
    crops = [zoomed[y : y + INPUT_SIZE, x : x + INPUT_SIZE] for y, x in corners]
    upright = np.stack([served, *crops])
    return np.concatenate([upright, upright[:, :, ::-1, :]])
