"""List* semantics: NameContains, creation-time windows, sorting, MaxResults/NextToken paging."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, unique

pytestmark = pytest.mark.api

ECHO = str(FIXTURE_MODELS / "echo")
# Created in this order, so name order and creation order differ.
LETTERS = ["c", "a", "e", "b", "d"]


@dataclass
class Batch:
    prefix: str
    names: list[str]  # in creation order
    created: list[datetime]

    def between(self, i: int) -> datetime:
        """A moment strictly between the creation of names[i] and names[i + 1]."""
        return self.created[i] + (self.created[i + 1] - self.created[i]) / 2


@pytest.fixture(scope="module")
def batch(server: LiveServer) -> Iterator[Batch]:
    sm = server.client("sagemaker")
    prefix = unique("lst")
    names = [f"{prefix}-{letter}" for letter in LETTERS]
    for name in names:
        sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    yield Batch(prefix, names, [sm.describe_model(ModelName=n)["CreationTime"] for n in names])
    for name in names:
        sm.delete_model(ModelName=name)


def listed(sm: Any, **kwargs: Any) -> list[str]:
    return [m["ModelName"] for m in sm.list_models(**kwargs)["Models"]]


def by_letter(batch: Batch, letters: str) -> list[str]:
    return [f"{batch.prefix}-{letter}" for letter in letters]


def test_name_contains_is_case_insensitive(sm: Any, batch: Batch) -> None:
    assert sorted(listed(sm, NameContains=batch.prefix)) == sorted(batch.names)
    assert listed(sm, NameContains=f"{batch.prefix}-A".upper()) == by_letter(batch, "a")
    assert listed(sm, NameContains=f"{batch.prefix}-zzz") == []


@pytest.mark.parametrize(
    ("sort_by", "order", "letters"),
    [
        ("Name", "Ascending", "abcde"),
        ("Name", "Descending", "edcba"),
        ("CreationTime", "Ascending", "caebd"),
        ("CreationTime", "Descending", "dbeac"),
    ],
)
def test_sorting(sm: Any, batch: Batch, sort_by: str, order: str, letters: str) -> None:
    got = listed(sm, NameContains=batch.prefix, SortBy=sort_by, SortOrder=order)
    assert got == by_letter(batch, letters)


def test_default_order_is_newest_first(sm: Any, batch: Batch) -> None:
    assert listed(sm, NameContains=batch.prefix) == by_letter(batch, "dbeac")


def test_creation_time_window(sm: Any, batch: Batch) -> None:
    common = {"NameContains": batch.prefix, "SortBy": "CreationTime", "SortOrder": "Ascending"}
    after, before = batch.between(1), batch.between(3)
    assert listed(sm, CreationTimeAfter=after, **common) == by_letter(batch, "ebd")
    assert listed(sm, CreationTimeBefore=before, **common) == by_letter(batch, "caeb")
    both = listed(sm, CreationTimeAfter=after, CreationTimeBefore=before, **common)
    assert both == by_letter(batch, "eb")


def test_paging_sees_each_once_in_order(sm: Any, batch: Batch) -> None:
    args = {"NameContains": batch.prefix, "SortBy": "Name", "SortOrder": "Ascending"}
    pages: list[list[str]] = []
    token: str | None = None
    while True:
        out = sm.list_models(MaxResults=2, **args, **({"NextToken": token} if token else {}))
        pages.append([m["ModelName"] for m in out["Models"]])
        token = out.get("NextToken")
        if token is None:
            break
    assert pages == [by_letter(batch, "ab"), by_letter(batch, "cd"), by_letter(batch, "e")]


def test_boto3_paginator(sm: Any, batch: Batch) -> None:
    pages = sm.get_paginator("list_models").paginate(
        NameContains=batch.prefix,
        SortBy="CreationTime",
        SortOrder="Ascending",
        PaginationConfig={"PageSize": 2},
    )
    got = [[m["ModelName"] for m in page["Models"]] for page in pages]
    assert got == [by_letter(batch, "ca"), by_letter(batch, "eb"), by_letter(batch, "d")]


@pytest.mark.parametrize("token", ["not-a-token", "eyJvZmZzZXQiOiAtMX0="])
def test_invalid_next_token(sm: Any, batch: Batch, token: str) -> None:
    with pytest.raises(ClientError) as info:
        sm.list_models(NameContains=batch.prefix, NextToken=token)
    assert info.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": f"Invalid pagination token: {token!r}.",
    }


def test_endpoint_configs_sort_and_filter(sm: Any, batch: Batch) -> None:
    prefix = unique("lst-cfg")
    for letter in "bca":
        sm.create_endpoint_config(
            EndpointConfigName=f"{prefix}-{letter}",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": batch.names[0],
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
    out = sm.list_endpoint_configs(
        NameContains=prefix, SortBy="Name", SortOrder="Ascending", MaxResults=2
    )
    assert [c["EndpointConfigName"] for c in out["EndpointConfigs"]] == [
        f"{prefix}-a",
        f"{prefix}-b",
    ]
    rest = sm.list_endpoint_configs(
        NameContains=prefix, SortBy="Name", SortOrder="Ascending", NextToken=out["NextToken"]
    )
    assert [c["EndpointConfigName"] for c in rest["EndpointConfigs"]] == [f"{prefix}-c"]
    assert "NextToken" not in rest
