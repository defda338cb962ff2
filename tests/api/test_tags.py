"""AddTags, ListTags, DeleteTags, and Tags given at Create*."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, unique, wait_gone

pytestmark = pytest.mark.api

ACCOUNT = "arn:aws:sagemaker:us-east-1:123456789012"
ECHO = str(FIXTURE_MODELS / "echo")
TAGS = [{"Key": "team", "Value": "ml"}, {"Key": "env", "Value": "test"}]


def error(call: Callable[..., Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return cast(dict[str, str], info.value.response["Error"])


def tags_of(sm: Any, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def new_model(sm: Any, name: str, **extra: Any) -> str:
    arn: str = sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO}, **extra)[
        "ModelArn"
    ]
    return arn


def variants(model: str) -> list[dict[str, Any]]:
    return [
        {
            "VariantName": "AllTraffic",
            "ModelName": model,
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1,
        }
    ]


def test_tags_at_create_model(sm: Any) -> None:
    arn = new_model(sm, unique("tag-model"), Tags=TAGS)
    assert tags_of(sm, arn) == {"team": "ml", "env": "test"}


def test_tags_at_create_endpoint_config(sm: Any) -> None:
    name = unique("tag-config")
    new_model(sm, name)
    arn = sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=variants(name), Tags=TAGS
    )["EndpointConfigArn"]
    assert arn == f"{ACCOUNT}:endpoint-config/{name}"
    assert tags_of(sm, arn) == {"team": "ml", "env": "test"}


def test_tags_at_create_endpoint(sm: Any) -> None:
    name = unique("tag-endpoint")
    new_model(sm, name)
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants(name))
    arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=TAGS)["EndpointArn"]
    try:
        assert tags_of(sm, arn) == {"team": "ml", "env": "test"}
    finally:
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)


def test_add_tags_overwrites_a_keys_value(sm: Any) -> None:
    arn = new_model(sm, unique("tag-overwrite"), Tags=TAGS)
    out = sm.add_tags(ResourceArn=arn, Tags=[{"Key": "env", "Value": "prod"}])
    assert out["Tags"] == [{"Key": "env", "Value": "prod"}]
    assert tags_of(sm, arn) == {"team": "ml", "env": "prod"}


def test_delete_tags_removes_only_named_keys(sm: Any) -> None:
    arn = new_model(sm, unique("tag-delete"), Tags=TAGS)
    sm.delete_tags(ResourceArn=arn, TagKeys=["team", "not-there"])
    assert tags_of(sm, arn) == {"env": "test"}


@pytest.mark.parametrize("op", ["add_tags", "list_tags", "delete_tags"])
def test_missing_resource(sm: Any, op: str) -> None:
    arn = f"{ACCOUNT}:model/{unique('tag-missing')}"
    extra: dict[str, dict[str, Any]] = {
        "add_tags": {"Tags": TAGS},
        "list_tags": {},
        "delete_tags": {"TagKeys": ["team"]},
    }
    args = extra[op]
    err = error(getattr(sm, op), ResourceArn=arn, **args)
    assert err == {"Code": "ValidationException", "Message": f'Could not find resource "{arn}".'}


def test_more_than_50_tags_in_one_call(sm: Any) -> None:
    arn = new_model(sm, unique("tag-many"))
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    err = error(sm.add_tags, ResourceArn=arn, Tags=many)
    assert err["Code"] == "ValidationException"
    assert err["Message"].startswith("1 validation error detected: Value '[{Key=k0, Value=v}")
    assert err["Message"].endswith(
        "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"
    )
    assert tags_of(sm, arn) == {}


def test_more_than_50_tags_in_total(sm: Any) -> None:
    arn = new_model(
        sm, unique("tag-total"), Tags=[{"Key": f"a{i}", "Value": "v"} for i in range(30)]
    )
    more = [{"Key": f"b{i}", "Value": "v"} for i in range(21)]
    err = error(sm.add_tags, ResourceArn=arn, Tags=more)
    assert err == {
        "Code": "ResourceLimitExceeded",
        "Message": "A resource can have at most 50 tags.",
    }
    assert len(tags_of(sm, arn)) == 30
    sm.add_tags(ResourceArn=arn, Tags=more[:20])
    assert len(tags_of(sm, arn)) == 50


def test_recreated_model_has_no_old_tags(sm: Any) -> None:
    name = unique("tag-reborn")
    new_model(sm, name, Tags=TAGS)
    sm.delete_model(ModelName=name)
    arn = new_model(sm, name)
    assert tags_of(sm, arn) == {}
