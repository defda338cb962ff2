"""The scaler (controller/scaling_loop.py) against a real store and recorder, with an injected
clock: bounds, cooldowns, suspension, activities, and deregistration of deleted endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.controller.scaling_loop import Scaler, rates
from modelhost.metrics import Recorder
from modelhost.state.records import Endpoint, EndpointStatus, VariantState
from modelhost.state.scaling import ScalableTarget, ScalingPolicy, ScalingStore
from modelhost.state.store import Store

RID = "endpoint/ep/variant/v"
DIM = "sagemaker:variant:DesiredInstanceCount"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'state.db'}")
    s.add_endpoint(
        Endpoint(
            "ep",
            "arn:ep",
            "cfg",
            EndpointStatus.IN_SERVICE,
            0.0,
            0.0,
            [VariantState("v", 1.0, 1, 1.0, 1)],
        )
    )
    return s


def policy(target: float = 60.0, out_s: float = 10.0, in_s: float = 30.0) -> ScalingPolicy:
    return ScalingPolicy(
        name="p", arn="arn:p", namespace="sagemaker", resource_id=RID, dimension=DIM,
        policy_type="TargetTrackingScaling", created=0.0, spec={}, metric="Invocations",
        per_instance=True, target=target, scale_out_cooldown_s=out_s, scale_in_cooldown_s=in_s,
        disable_scale_in=False,
        alarms=[{"AlarmName": f"TargetTracking-{RID}-AlarmHigh-x", "AlarmARN": "a"},
                {"AlarmName": f"TargetTracking-{RID}-AlarmLow-y", "AlarmARN": "b"}],
    )  # fmt: skip


def target(lo: int = 1, hi: int = 4, **suspended: bool) -> ScalableTarget:
    return ScalableTarget("sagemaker", RID, DIM, lo, hi, "arn:t", 0.0, "role", dict(suspended))


class Rig:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.recorder = Recorder()
        self.clock = Clock()
        self.wakes = 0
        self.scaler = Scaler(
            store, self.recorder, self.wake, interval_s=1.0, window_s=10.0,
            clock=self.clock, timer=self.clock,
        )  # fmt: skip

    def wake(self) -> None:
        self.wakes += 1

    def traffic(self, per_minute_per_instance: float, seconds: float) -> None:
        """Requests at that rate, sampled once a second, then one evaluation."""
        for _ in range(int(seconds)):
            count = self.desired()
            for _ in range(round(per_minute_per_instance * count / 60)):
                self.recorder.record_ok("ep", "v", count, 1.0, 2.0)
            self.clock.now += 1.0
            self.scaler.sample()
        self.step()

    def step(self) -> None:
        window = self.scaler.window_s
        now = {k: r for k, s in self.scaler.samples.items() if (r := rates(s, window))}
        self.scaler._watched = self.scaler.evaluate(now)

    def desired(self) -> int:
        ep = self.store.endpoint("ep")
        assert ep is not None
        return ep.variants[0].desired_count

    def finish_update(self) -> None:
        """What the controller's capacity step does when it is done."""

        def change(ep: Endpoint) -> None:
            ep.status = EndpointStatus.IN_SERVICE
            ep.variants[0].current_count = ep.variants[0].desired_count

        self.store.update_endpoint("ep", change)


def test_scale_out_sets_desired_count_updating_and_an_activity(store: Store) -> None:
    rig = Rig(store)
    scaling = ScalingStore(store)
    scaling.put_target(target())
    scaling.put_policy(policy())
    rig.step()
    rig.traffic(0, 1)  # watched from now on
    rig.traffic(180, 11)  # three times the target
    ep = store.endpoint("ep")
    assert ep is not None and ep.status is EndpointStatus.UPDATING
    assert rig.desired() == 3 and rig.wakes == 1
    (activity,) = scaling.activities()
    assert activity.status == "InProgress" and "AlarmHigh" in activity.cause
    rig.traffic(180, 1)  # Updating: nothing more happens
    assert rig.desired() == 3 and rig.wakes == 1
    rig.finish_update()
    rig.step()
    (activity,) = scaling.activities()
    assert activity.status == "Successful" and activity.end is not None


def test_cooldowns_and_max(store: Store) -> None:
    rig = Rig(store)
    scaling = ScalingStore(store)
    scaling.put_target(target(1, 3))
    scaling.put_policy(policy(out_s=10.0, in_s=30.0))
    rig.step()
    rig.traffic(0, 1)
    rig.traffic(600, 11)  # ten times the target: clamped to the maximum
    assert rig.desired() == 3
    rig.finish_update()
    out_at = rig.clock.now
    rig.traffic(0, 11)  # idle, but within the scale-in cooldown (30 s after the scale-out)
    assert rig.desired() == 3
    while rig.desired() == 3 and rig.clock.now < out_at + 60:
        rig.traffic(0, 1)
    assert rig.desired() == 1
    assert rig.clock.now - out_at >= 30.0
    assert [a.desired for a in scaling.activities()] == [1, 3]


def test_bounds_are_applied_at_once_and_suspension_holds(store: Store) -> None:
    rig = Rig(store)
    scaling = ScalingStore(store)
    scaling.put_target(target(2, 4))
    rig.step()  # no policy: the minimum still applies
    assert rig.desired() == 2
    (activity,) = scaling.activities()
    assert activity.cause == "minimum capacity was set to 2"
    rig.finish_update()
    scaling.put_target(target(2, 4, DynamicScalingOutSuspended=True))
    scaling.put_policy(policy(out_s=0.0))
    rig.traffic(0, 1)
    rig.traffic(600, 11)
    assert rig.desired() == 2  # scale-out suspended


def test_deleted_endpoint_is_deregistered(store: Store) -> None:
    rig = Rig(store)
    scaling = ScalingStore(store)
    scaling.put_target(target())
    scaling.put_policy(policy())
    store.delete("endpoint", "ep")
    rig.step()
    assert scaling.targets() == [] and scaling.policies() == []
