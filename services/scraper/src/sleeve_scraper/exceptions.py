"""Errors of the scraper.

ScrapeError (a SleeveError)
 ├── SourceError          a source's input (folder, file, API answer) cannot be used
 ├── RunStateError        a run cannot be resumed (unknown, finished, other source)
 └── FetchError           an HTTP request gave no usable answer (``reason``, ``url``)
      ├── Refused         a 4xx other than 429, or too many redirects: asking again won't help
      ├── TooLarge        the body is over the byte cap
      └── TransientError  may pass later; retried with backoff (``retry_after``)
           ├── RateLimited     429, or an answer a source reads as throttling
           ├── ServerError     5xx
           ├── Unreachable     no connection, a broken one, or a timeout
           └── MalformedReply  a body that is not the JSON that was asked for
"""

from __future__ import annotations

import re

from sleeve_common.exceptions import SleeveError

__all__ = [
    "FetchError",
    "MalformedReply",
    "RateLimited",
    "Refused",
    "RunStateError",
    "ScrapeError",
    "ServerError",
    "SourceError",
    "TooLarge",
    "TransientError",
    "Unreachable",
]


class ScrapeError(SleeveError):
    """Base of the scraper's errors."""


class SourceError(ScrapeError):
    """A source's input cannot be used; the message says which and why."""


class RunStateError(ScrapeError):
    """A run cannot be resumed."""


class FetchError(ScrapeError):
    """An HTTP request gave no usable answer.

    ``reason`` is short and stable (``"HTTP 404"``), fit to group rejected covers by;
    the message adds the URL. ``status`` is the HTTP status that made it an error, if one did.
    """

    def __init__(self, reason: str, *, url: str, status: int | None = None) -> None:
        super().__init__(f"{reason} ({url})")
        self.reason = reason
        self.url = url
        self.status = status

    @property
    def kind(self) -> str:
        """What a run counts this failure as: ``http_404`` where a status made it an error,
        else the class (``unreachable``, ``malformed_reply``, ``rate_limited``, ``refused``)."""
        if self.status is not None:
            return f"http_{self.status}"
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class Refused(FetchError):
    """The server refused the request (a 4xx other than 429); asking again will not help.

    ``body`` holds the start of the server's answer, for a source to read the API's own
    explanation from; it is never part of the message.
    """

    def __init__(
        self, reason: str, *, url: str, status: int | None = None, body: bytes = b""
    ) -> None:
        super().__init__(reason, url=url, status=status)
        self.body = body


class TooLarge(FetchError):
    """The body is larger than the cap for this request."""


class TransientError(FetchError):
    """A failure that may pass; ``retry_after`` is the server's own wait, when it gave one."""

    def __init__(
        self,
        reason: str,
        *,
        url: str,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(reason, url=url, status=status)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """The server asks us to slow down (429, or a source-specific throttle answer, which
    carries no status: iTunes' bare 403 and Deezer's error inside HTTP 200 count as
    ``rate_limited``, not as their status)."""


class ServerError(TransientError):
    """The server failed (5xx)."""


class Unreachable(TransientError):
    """No connection, a connection that broke, or no answer in time."""


class MalformedReply(TransientError):
    """The body is not the JSON that was asked for (often a proxy's error page)."""
