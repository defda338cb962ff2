"""Placement and eviction for multi-model endpoints (multimodel/policy.py): pure functions."""

from __future__ import annotations

import pytest

from modelhost.errors import ValidationError
from modelhost.multimodel import policy
from modelhost.multimodel.archives import model_url, unknown
from modelhost.multimodel.policy import HeldModel, InstanceModels

MB = 2**20


def _inst(iid: str, budget_mb: int, **models: tuple[int, float, int]) -> InstanceModels:
    """models: target -> (cost MB, last used, in flight)."""
    inst = InstanceModels(iid, budget_mb * MB)
    for target, (cost, used, flight) in models.items():
        inst.models[target] = HeldModel(target, cost * MB, used, flight)
    return inst


def test_a_hit_goes_to_the_least_busy_holder() -> None:
    a = _inst("a", 100, m=(10, 1.0, 0))
    b = _inst("b", 100, m=(10, 1.0, 0))
    c = _inst("c", 100)
    flight = {"a": 5, "b": 2, "c": 0}
    found = policy.holders([a, b, c], "m")
    assert [i.instance_id for i in found] == ["a", "b"]
    assert policy.least_busy(found, flight.__getitem__) is b  # c is idle but lacks the model


def test_a_loading_model_is_not_a_holder() -> None:
    a = _inst("a", 100)
    a.models["m"] = HeldModel("m", 0, 1.0, loaded=False)
    assert policy.holders([a], "m") == []


def test_a_miss_goes_where_there_is_room() -> None:
    full = _inst("full", 100, x=(90, 1.0, 0))
    roomy = _inst("roomy", 100, y=(10, 1.0, 0))
    flight = {"full": 0, "roomy": 3}
    assert policy.for_load([full, roomy], flight.__getitem__) is roomy
    twin = _inst("twin", 100, z=(10, 1.0, 0))
    flight["twin"] = 1
    assert policy.for_load([roomy, twin], flight.__getitem__) is twin  # same room: less busy


def test_evictions_take_idle_models_least_recently_used_first() -> None:
    inst = _inst("i", 100, old=(40, 1.0, 0), busy=(30, 0.5, 2), new=(20, 3.0, 0))
    assert policy.evictions(inst, 10 * MB) == []  # 90 + 10 fits
    assert policy.evictions(inst, 30 * MB) == ["old"]  # busy is older but in flight: stays
    assert policy.evictions(inst, 80 * MB) == ["old", "new"]  # as many as can go
    assert policy.evictions(inst, 30 * MB, keep="old") == ["new"]


def test_cost_estimates_and_thrash() -> None:
    inst = _inst("i", 100, a=(10, 1.0, 0), b=(30, 1.0, 0))
    assert policy.estimate(inst, 7, 1) == 7
    assert policy.estimate(inst, None, 1) == 20 * MB
    assert policy.estimate(_inst("e", 100), None, 123) == 123
    assert policy.thrashed(100.0, 130.0) and not policy.thrashed(100.0, 170.0)
    assert not policy.thrashed(None, 1.0)


def test_target_models_stay_under_the_prefix() -> None:
    assert model_url("s3://b/p/", "m.tar.gz") == "s3://b/p/m.tar.gz"
    assert model_url("/data/models", "v1/m.tar.gz") == "/data/models/v1/m.tar.gz"
    for bad in ("", "/etc/passwd", "../x.tar.gz", "a/../../x"):
        with pytest.raises(ValidationError):
            model_url("s3://b/p", bad)
    assert "(bucket: b, key: p/m.tar.gz)" in str(unknown("s3://b/p/m.tar.gz"))
