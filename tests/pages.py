"""Reading every item of a cursor-paged list, through the public API only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from limitry_local import Page

T = TypeVar("T")


def walk(list_page: Callable[..., Page[T]], *, limit: int, **filters: Any) -> list[T]:
    """Every item ``list_page`` answers, page by page (a small ``limit`` exercises the cursor)."""
    found: list[T] = []
    cursor: str | None = None
    while True:
        page = list_page(limit=limit, cursor=cursor, **filters)
        found.extend(page.data)
        if not page.has_more:
            return found
        assert page.next_cursor is not None
        cursor = page.next_cursor
