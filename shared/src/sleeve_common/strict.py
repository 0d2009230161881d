"""Field types for strict request bodies: what JSON Schema calls a value, nothing coerced into it.

The API's bodies are strict models (``"5"`` or ``true`` is no count), but pydantic's strict
``int`` also refuses ``5.0``, which JSON Schema, and so the OpenAPI spec, calls an integer
(JavaScript clients cannot tell 5 from 5.0). These types take exactly JSON Schema's integers.

Bounds must reach pydantic before ``WHOLE_NUMBERS`` does, or it writes them into the spec as
``ge``/``le`` instead of ``minimum``/``maximum``: give them on the field (``JsonInt``,
``JsonIntOrNone``), or before it (``Annotated[int, Field(ge=0), WHOLE_NUMBERS]``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["WHOLE_NUMBERS", "JsonInt", "JsonIntOrNone"]


def _whole_float_to_int(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WHOLE_NUMBERS = BeforeValidator(_whole_float_to_int)
"""Takes ``5.0`` as ``5``; leaves anything else to the strict ``int`` after it."""

JsonInt = Annotated[int, WHOLE_NUMBERS]
"""An integer, given as ``5`` or ``5.0``; never ``"5"``, ``true`` or ``5.5`` (in strict models)."""

JsonIntOrNone = Annotated[int | None, WHOLE_NUMBERS]
"""``JsonInt``, or null."""
