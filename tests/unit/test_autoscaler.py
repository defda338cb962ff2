"""The autoscaling decision (controller/autoscaler.py) and the window's rates
(controller/scaling_loop.rates): pure functions, an explicit ``now``."""

from __future__ import annotations

import pytest

from modelhost.controller.autoscaler import (
    Bounds,
    Decision,
    History,
    TargetTracking,
    Why,
    decide,
    decide_all,
    wanted,
)
from modelhost.controller.scaling_loop import Sample, rates

P = TargetTracking(target=70.0, scale_out_cooldown_s=60.0, scale_in_cooldown_s=300.0)
B = Bounds(1, 4)
NOW = 10_000.0


@pytest.mark.parametrize(
    ("current", "metric", "expected"),
    [
        (1, 70.0, 1),
        (1, 70.1, 2),
        (1, 140.0, 2),
        (1, 141.0, 3),
        (2, 35.0, 1),
        (2, 0.0, 0),
        (3, 70.0, 3),  # no float noise: 3 * 70 / 70 is 3
        (3, 23.4, 2),  # ceil(1.0028...) = 2
        (0, 5.0, 1),  # from zero: any load asks for one
        (0, 0.0, 0),
    ],
)
def test_target_tracking_formula(current: int, metric: float, expected: int) -> None:
    assert wanted(P, current, metric) == expected


def test_scale_out_and_in() -> None:
    assert decide(P, 1, 200.0, B, History(), NOW) == Decision(3, Why.SCALE_OUT)
    assert decide(P, 3, 10.0, B, History(), NOW) == Decision(1, Why.SCALE_IN)
    assert decide(P, 2, 70.0, B, History(), NOW) is None  # on target


def test_clamped_to_min_and_max() -> None:
    assert decide(P, 2, 10_000.0, B, History(), NOW) == Decision(4, Why.SCALE_OUT)
    assert decide(P, 2, 0.0, B, History(), NOW) == Decision(1, Why.SCALE_IN)
    assert decide(P, 4, 10_000.0, B, History(), NOW) is None  # at max already
    assert decide(P, 1, 0.0, B, History(), NOW) is None  # at min already


def test_outside_bounds_is_corrected_at_once_even_while_cooling() -> None:
    hot = History(last_scale_out=NOW - 1, last_scale_in=NOW - 1)
    assert decide(P, 0, None, Bounds(2, 5), hot, NOW) == Decision(2, Why.BELOW_MIN)
    assert decide(P, 7, 500.0, Bounds(2, 5), hot, NOW) == Decision(5, Why.ABOVE_MAX)
    assert decide(None, 7, None, Bounds(2, 5), History(), NOW) == Decision(5, Why.ABOVE_MAX)


def test_scale_out_cooldown() -> None:
    h = History(last_scale_out=NOW - 59.9)
    assert decide(P, 2, 200.0, B, h, NOW) is None
    h = History(last_scale_out=NOW - 60.0)
    assert decide(P, 2, 200.0, B, h, NOW) == Decision(4, Why.SCALE_OUT)
    # a recent scale-in does not hold back a scale-out
    assert decide(P, 1, 200.0, B, History(last_scale_in=NOW - 1), NOW) == Decision(3, Why.SCALE_OUT)


def test_scale_in_cooldown_counts_from_either_activity() -> None:
    for h in (History(last_scale_in=NOW - 299), History(last_scale_out=NOW - 299)):
        assert decide(P, 3, 10.0, B, h, NOW) is None
    h = History(last_scale_out=NOW - 300, last_scale_in=NOW - 301)
    assert decide(P, 3, 10.0, B, h, NOW) == Decision(1, Why.SCALE_IN)


def test_disable_scale_in() -> None:
    p = TargetTracking(70.0, 0.0, 0.0, disable_scale_in=True)
    assert decide(p, 3, 0.0, B, History(), NOW) is None
    assert decide(p, 1, 300.0, B, History(), NOW) == Decision(4, Why.SCALE_OUT)


def test_no_metric_no_change() -> None:
    assert decide(P, 2, None, B, History(), NOW) is None
    assert decide(None, 2, None, B, History(), NOW) is None


def test_several_policies() -> None:
    low = TargetTracking(100.0, 0.0, 0.0)
    high = TargetTracking(10.0, 0.0, 0.0)
    # the largest scale-out wins
    got = decide_all([(low, 150.0), (high, 30.0)], 1, Bounds(1, 10), History(), NOW)
    assert got == Decision(3, Why.SCALE_OUT)
    # scale-in only when every policy asks for it
    assert decide_all([(low, 10.0), (high, 10.0)], 4, Bounds(1, 10), History(), NOW) is None
    got = decide_all([(low, 10.0), (high, 5.0)], 4, Bounds(1, 10), History(), NOW)
    assert got == Decision(2, Why.SCALE_IN)
    # bounds first; no policy at all still clamps
    assert decide_all([], 0, Bounds(1, 10), History(), NOW) == Decision(1, Why.BELOW_MIN)
    assert decide_all([], 2, Bounds(1, 10), History(), NOW) is None


def test_rates_need_a_full_window() -> None:
    s = [Sample(0.0, 0, 0.0), Sample(5.0, 10, 5.0)]
    assert rates(s, 10.0) is None
    s.append(Sample(10.0, 20, 10.0))
    r = rates(s, 10.0)
    assert r is not None
    assert r.invocations == pytest.approx(120.0)  # 20 in 10 s = 120 a minute
    assert r.per_instance == pytest.approx(60.0)
    assert rates([Sample(0.0, 0, 0.0)], 1.0) is None
