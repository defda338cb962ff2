"""List* semantics shared by every resource: NameContains, creation-time filters, sorting and
MaxResults/NextToken paging (pure)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Protocol, TypeVar

from modelhost.errors import ValidationException

T = TypeVar("T")


def token_for(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def offset_of(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
        return offset
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationException(f"Invalid pagination token: {token[:64]!r}.") from exc


def page(
    items: Sequence[T],
    req: dict[str, Any],
    *,
    name: Callable[[T], str],
    created: Callable[[T], float],
    sort_keys: dict[str, Callable[[T], Any]],
    default_sort: str = "CreationTime",
    default_max: int = 10,
) -> tuple[list[T], str | None]:
    """Filter, sort and page ``items`` as SageMaker's List* calls do."""
    selected = list(items)
    if contains := req.get("NameContains"):
        selected = [i for i in selected if contains.lower() in name(i).lower()]
    selected = [i for i in selected if _in_window(created(i), req)]
    key = sort_keys.get(req.get("SortBy") or default_sort, created)
    selected.sort(
        key=lambda i: (key(i), name(i)), reverse=req.get("SortOrder", "Descending") == "Descending"
    )
    start = offset_of(req.get("NextToken"))
    size = req.get("MaxResults") or default_max
    chunk = selected[start : start + size]
    more = start + size < len(selected)
    return chunk, token_for(start + size) if more else None


class Tracked(Protocol):
    """A resource with a lifecycle: an endpoint, a transform job."""

    @property
    def name(self) -> str: ...

    @property
    def created(self) -> float: ...

    @property
    def modified(self) -> float: ...

    @property
    def status(self) -> Enum: ...


TrackedT = TypeVar("TrackedT", bound=Tracked)


def page_tracked(
    items: Sequence[TrackedT], req: dict[str, Any]
) -> tuple[list[TrackedT], str | None]:
    """``page`` plus StatusEquals and the LastModifiedTime filters, sorted by Name,
    CreationTime or Status (ListEndpoints, ListTransformJobs)."""
    selected = list(items)
    if status := req.get("StatusEquals"):
        selected = [i for i in selected if i.status.value == status]
    if before := req.get("LastModifiedTimeBefore"):
        selected = [i for i in selected if i.modified < before.timestamp()]
    if after := req.get("LastModifiedTimeAfter"):
        selected = [i for i in selected if i.modified > after.timestamp()]
    return page(
        selected,
        req,
        name=lambda i: i.name,
        created=lambda i: i.created,
        sort_keys={
            "Name": lambda i: i.name.lower(),
            "CreationTime": lambda i: i.created,
            "Status": lambda i: i.status.value,
        },
    )


def _in_window(created: float, req: dict[str, Any]) -> bool:
    before: datetime | None = req.get("CreationTimeBefore")
    after: datetime | None = req.get("CreationTimeAfter")
    if before is not None and not created < before.timestamp():
        return False
    return after is None or created > after.timestamp()
