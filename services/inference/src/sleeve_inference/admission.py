"""Admission control: at most ``max_images`` images in the server at once, the rest shed now.

A request holds its images' places from the moment it is admitted (before decoding) until it
is answered, so decoding, queueing and the model run are all bounded, and memory with them.
Past the bound a request gets ``Overloaded`` at once (the API answers 503 with Retry-After)
rather than waiting in a line that only grows.
"""

from __future__ import annotations

import contextlib
import math

__all__ = ["Admission", "Overloaded"]


class Overloaded(Exception):
    """The server holds as many images as it may; try again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """Counts images in flight; used from the event loop only, so it needs no lock."""

    def __init__(self, max_images: int) -> None:
        self.max_images = max_images
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def admit(self, images: int, *, images_per_second: float) -> _Place:
        """Places for ``images``, held by ``with admission.admit(...)``; or ``Overloaded``.

        ``images_per_second`` (the server's recent throughput) sets Retry-After: about the
        time the images ahead need to drain, at least 1 s.
        """
        if self._in_flight + images > self.max_images:
            drain_s = self._in_flight / images_per_second if images_per_second > 0 else 1.0
            raise Overloaded(
                f"the server is at capacity ({self._in_flight} images in flight, "
                f"limit {self.max_images}); retry shortly",
                retry_after_s=max(1, min(30, math.ceil(drain_s))),
            )
        self._in_flight += images
        return _Place(self, images)

    def _release(self, images: int) -> None:
        self._in_flight -= images


class _Place(contextlib.AbstractContextManager[None]):
    """Admitted images; their places are given back when the ``with`` block ends."""

    def __init__(self, admission: Admission, images: int) -> None:
        self._admission = admission
        self._images = images

    def __exit__(self, *exc_info: object) -> None:
        self._admission._release(self._images)
