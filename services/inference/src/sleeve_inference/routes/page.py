"""``GET /``: a small page to upload a cover and see the genre bars."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router"]

router = APIRouter(tags=["page"])


@cache
def _page() -> str:
    return (files("sleeve_inference") / "static" / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> str:
    return _page()
