"""Argument types for ``sleeve`` subcommands: bad flags fail with a message naming the rule."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["bounded", "choice_list", "genre_list", "name"]

Number = TypeVar("Number", int, float)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def bounded(
    kind: Callable[[str], Number], low: Number, high: Number | None = None
) -> Callable[[str], Number]:
    """A parser for ``kind`` values in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def choice_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A parser for ``"a,b"`` → ``("a", "b")``: each of ``choices`` at most once."""

    def parse(text: str) -> tuple[str, ...]:
        picked = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [part for part in picked if part not in choices]
        if unknown or not picked:
            raise argparse.ArgumentTypeError(
                f"give one or more of {', '.join(choices)}, comma-separated (got {text!r})"
            )
        if len(set(picked)) != len(picked):
            raise argparse.ArgumentTypeError(f"each can be given once (got {text!r})")
        return picked

    return parse


def genre_list(text: str) -> tuple[str, ...]:
    """``"rock, pop"`` → ``("rock", "pop")``."""
    genres = tuple(g.strip() for g in text.split(",") if g.strip())
    if not genres:
        raise argparse.ArgumentTypeError("give at least one genre, e.g. rock,pop")
    return genres


def name(text: str) -> str:
    """A dataset or run name: 1-128 letters, digits, '-', '_' or '.'."""
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            "names are 1-128 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return text
