from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from modelhost.api.operations.listing import page
from modelhost.errors import ValidationException

ITEMS = [("alpha", 3.0), ("beta", 1.0), ("gamma", 2.0), ("alphabet", 4.0)]


def run(**req: Any) -> tuple[list[str], str | None]:
    items, token = page(
        ITEMS,
        req,
        name=lambda i: i[0],
        created=lambda i: i[1],
        sort_keys={"Name": lambda i: i[0], "CreationTime": lambda i: i[1]},
    )
    return [i[0] for i in items], token


def test_default_is_newest_first() -> None:
    assert run()[0] == ["alphabet", "alpha", "gamma", "beta"]


def test_sort_by_name_ascending() -> None:
    assert run(SortBy="Name", SortOrder="Ascending")[0] == ["alpha", "alphabet", "beta", "gamma"]


def test_name_contains_is_case_insensitive() -> None:
    assert run(NameContains="ALPHA")[0] == ["alphabet", "alpha"]


def test_creation_time_window() -> None:
    def when(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    assert run(CreationTimeAfter=when(1.5), CreationTimeBefore=when(3.5))[0] == ["alpha", "gamma"]


def test_paging_sees_every_item_once() -> None:
    seen: list[str] = []
    token = None
    for _ in range(10):
        names, token = run(MaxResults=3, **({"NextToken": token} if token else {}))
        seen += names
        if token is None:
            break
    assert seen == ["alphabet", "alpha", "gamma", "beta"]


def test_bad_token_is_a_validation_error() -> None:
    with pytest.raises(ValidationException, match="Invalid pagination token"):
        run(NextToken="not-a-token")
