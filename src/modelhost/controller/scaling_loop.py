"""The scaler: samples invocation counters, evaluates scaling policies, sets desired counts.

Every ``interval_s`` it reads the counters ``metrics.Recorder`` already keeps for each
(endpoint, variant) — nothing is added to the request path — and keeps the samples of the last
``window_s`` seconds. A policy's metric is the rate over that window, per minute (CloudWatch's
one-minute Sum), divided by the variant's instance count for a per-instance metric (the
router's ``InvocationsPerInstance`` counter, which divides at request time). With a full
window the pure decision (controller/autoscaler.py) says what to do; the scaler acts as
UpdateEndpointWeightsAndCapacities does (desired count in the store, Updating, wake the
controller, whose capacity step grows or drains-then-stops instances) and records a scaling
activity, which turns Successful (or Failed) once the endpoint is back InService.

A serverless variant's ``DesiredProvisionedConcurrency`` target is scaled the same way over
``SageMakerVariantProvisionedConcurrencyUtilization``: the requests in flight on the variant
(the router's count, held ones included), sampled every interval and averaged over the window,
divided by its ProvisionedConcurrency. Acting sets the variant's ProvisionedConcurrency in the
store, which the controller honours at once (0: the variant may scale to zero when idle; more:
it is kept warm, and woken if asleep); the endpoint stays InService and the activity is
Successful at once.

Only InService endpoints are scaled: a change in progress finishes first. A target whose
endpoint was deleted is deregistered, with its policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modelhost.controller.alarm_loop import AlarmEvaluator, Fired, measure
from modelhost.controller.autoscaler import (
    Bounds,
    Decision,
    History,
    TargetTracking,
    Why,
    decide,
    decide_all,
)
from modelhost.controller.step_scaling import StepPolicy, decide_step
from modelhost.metrics import Recorder
from modelhost.state.records import Endpoint, EndpointStatus, UpdateKind
from modelhost.state.scaling import ScalableTarget, ScalingActivity, ScalingPolicy, ScalingStore
from modelhost.state.store import Store

log = logging.getLogger(__name__)

INSTANCES = "sagemaker:variant:DesiredInstanceCount"
PROVISIONED = "sagemaker:variant:DesiredProvisionedConcurrency"
BACKLOG = "ApproximateBacklogSize"
UTILIZATION = "ProvisionedConcurrencyUtilization"
STEP = "StepScaling"
# Requests queued or running per asynchronous endpoint (lower-cased name).
Backlogs = Callable[[], Mapping[str, int]]
# Requests in flight (held ones included) on (lower-cased endpoint, variant) now.
Concurrency = Callable[[str, str], int]
# Samples kept per series: a window of up to this many intervals (bounded memory).
MAX_SAMPLES = 1000


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic seconds
    invocations: int
    per_instance: float
    concurrent: int = 0  # requests in flight when sampled


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-minute rates over the window of one (endpoint, variant), and its mean concurrency."""

    invocations: float
    per_instance: float
    concurrency: float = 0.0


def rates(samples: deque[Sample] | list[Sample], window_s: float) -> Rates | None:
    """The rates over the newest ``window_s`` seconds of samples; None until that much is
    covered (pure)."""
    if len(samples) < 2:
        return None
    new = samples[-1]
    old = next((s for s in reversed(samples) if new.at - s.at >= window_s), None)
    if old is None:
        return None
    minutes = (new.at - old.at) / 60.0
    inside = [s.concurrent for s in samples if s.at > old.at]
    return Rates(
        (new.invocations - old.invocations) / minutes,
        (new.per_instance - old.per_instance) / minutes,
        sum(inside) / len(inside),
    )


class Scaler:
    def __init__(
        self,
        store: Store,
        recorder: Recorder,
        wake: Callable[[], None],
        *,
        interval_s: float = 5.0,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        backlogs: Backlogs | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        self.store = store
        self.concurrency = concurrency  # read on the loop, when sampling
        # Asynchronous endpoints' queued and running requests, by lower-cased endpoint name
        # (the ApproximateBacklogSize metrics); read in the evaluating thread.
        self.backlogs = backlogs
        self.scaling = ScalingStore(store)
        self.recorder = recorder
        self.wake = wake
        self.interval_s = interval_s
        self.window_s = window_s
        self.clock = clock  # wall time: activities' StartTime, EndTime
        self.timer = timer  # monotonic: samples, cooldowns
        self.samples: dict[tuple[str, str], deque[Sample]] = {}
        self.history: dict[str, History] = {}
        self.alarms = AlarmEvaluator(store, clock)
        self.step_acted: dict[str, float] = {}  # policy ARN -> when it last acted (monotonic)
        self._watched: set[tuple[str, str]] = set()
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="autoscaler")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("autoscaling pass failed")
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        """One pass: sample on the loop (the recorder's owner), decide and write off it."""
        self.sample()
        current = {key: r for key, s in self.samples.items() if (r := rates(s, self.window_s))}
        self._watched = await asyncio.to_thread(self.evaluate, current)

    def sample(self) -> None:
        now = self.timer()
        slots = {(e.lower(), v): s for (e, v), s in self.recorder.slots.items()}
        for key in self._watched | set(slots):
            slot = slots.get(key)
            series = self.samples.setdefault(key, deque(maxlen=MAX_SAMPLES))
            busy = self.concurrency(*key) if self.concurrency is not None else 0
            if slot is None:
                series.append(Sample(now, 0, 0.0, busy))
            else:
                series.append(Sample(now, slot.invocations, slot.per_instance, busy))
            while len(series) > 2 and now - series[1].at >= self.window_s:
                series.popleft()  # keep one sample at least a window old
        for key in set(self.samples) - self._watched - set(slots):
            del self.samples[key]

    # --- deciding and acting (in a worker thread) -------------------------------------------

    def evaluate(self, current: dict[tuple[str, str], Rates]) -> set[tuple[str, str]]:
        """Decide for every scalable target; returns the (endpoint, variant) pairs to sample."""
        policies: dict[str, list[ScalingPolicy]] = {}
        for p in self.scaling.policies():
            policies.setdefault(_key(p.resource_id, p.dimension), []).append(p)
        backlog = self._backlogs(policies)
        self._alarms(current, backlog)
        watched: set[tuple[str, str]] = set()
        for target in self.scaling.targets():
            ep = self.store.endpoint(target.endpoint)
            if ep is None:
                log.info("endpoint of %s is gone: deregistering it", target.resource_id)
                self.scaling.delete_target(target)
                self.history.pop(target.key, None)
                continue
            watched.add((ep.name.lower(), target.variant))
            self._settle(target, ep)
            if ep.status is not EndpointStatus.IN_SERVICE:
                continue
            mine = policies.get(_key(target.resource_id, target.dimension), [])
            rates_now = current.get((ep.name.lower(), target.variant))
            self._evaluate(target, ep, mine, rates_now, backlog.get(ep.name.lower(), 0))
        return watched

    def _alarms(self, current: dict[tuple[str, str], Rates], backlog: dict[str, int]) -> None:
        """Evaluate the CloudWatch alarms (controller/alarm_loop.py) and run the StepScaling
        policies named by the AlarmActions of those in ALARM."""
        endpoints = {e.name.lower(): e for e in self.store.endpoints()}
        table = {k: (r.invocations, r.per_instance) for k, r in current.items()}
        fired = self.alarms.evaluate(lambda a: measure(a, endpoints, backlog, table))
        if not fired:
            return
        by_arn = {p.arn: p for p in self.scaling.policies() if p.policy_type == STEP}
        for f in fired:
            if (policy := by_arn.get(f.policy_arn)) is not None:
                self._step(f, policy)

    def _step(self, f: Fired, policy: ScalingPolicy) -> None:
        target = self.scaling.target(policy.resource_id, policy.dimension)
        ep = self.store.endpoint(target.endpoint) if target is not None else None
        if target is None or ep is None or ep.status is not EndpointStatus.IN_SERVICE:
            return
        current = capacity(ep, target)
        if current is None:
            return
        now = self.timer()
        bounds = Bounds(target.min, target.max)
        threshold = float(f.alarm.spec["Threshold"])
        step = StepPolicy.of(policy.spec)
        last = self.step_acted.get(policy.arn)
        desired = decide_step(step, current, f.value, threshold, bounds, last, now)
        if desired is None:
            return
        side = "DynamicScalingOutSuspended" if desired > current else "DynamicScalingInSuspended"
        if target.suspended.get(side, False):
            return
        cause = (
            f"monitor alarm {f.alarm.name} in state ALARM triggered policy {policy.name} "
            f"changing the desired capacity from {current} to {desired}"
        )
        if self._act(target, ep.name, current, desired, cause):
            self.step_acted[policy.arn] = now

    def _backlogs(self, policies: dict[str, list[ScalingPolicy]]) -> dict[str, int]:
        wanted = any(p.metric == BACKLOG for group in policies.values() for p in group)
        if not (wanted or self.alarms.alarms.all()) or self.backlogs is None:
            return {}
        return dict(self.backlogs())

    def _evaluate(
        self,
        target: ScalableTarget,
        ep: Endpoint,
        policies: list[ScalingPolicy],
        rates_now: Rates | None,
        backlog: int = 0,
    ) -> None:
        current = capacity(ep, target)
        if current is None:
            return
        now = self.timer()
        if current == 0 and any(p.policy_type == STEP for p in policies):
            policies = []  # out of zero is the StepScaling policy's (its alarm's) job
        policies = [p for p in policies if p.policy_type != STEP]
        history = self.history.get(target.key, History())
        inputs = [(_tracking(p), _metric(p, rates_now, backlog, current)) for p in policies]
        decision = decide_all(inputs, current, Bounds(target.min, target.max), history, now)
        if decision is None or _suspended(target, decision, current):
            return
        cause = self._cause(target, policies, inputs, decision, current, history, now)
        self._act(target, ep.name, current, decision.desired, cause)

    def _act(
        self, target: ScalableTarget, endpoint: str, current: int, desired: int, cause: str
    ) -> bool:
        """Set the desired count (or provisioned concurrency), note when, record the activity
        and wake the controller."""
        provisioned = target.dimension == PROVISIONED
        if provisioned:
            if not self._set_provisioned(endpoint, target.variant, desired):
                return False
        elif not self._set_desired(endpoint, target.variant, desired):
            return False
        now = self.timer()
        history = self.history.get(target.key, History())
        out = desired > current
        self.history[target.key] = (
            History(now, history.last_scale_in) if out else History(history.last_scale_out, now)
        )
        what = "provisioned concurrency" if provisioned else "instance count"
        activity = ScalingActivity(
            activity_id=str(uuid.uuid4()),
            namespace=target.namespace,
            resource_id=target.resource_id,
            dimension=target.dimension,
            description=f"Setting desired {what} to {desired}.",
            cause=cause,
            start=self.clock(),
            status="InProgress",
            message=f"Setting desired {what} from {current} to {desired}.",
            desired=desired,
            scale_out=out,
        )
        if provisioned:  # in effect at once: the endpoint stays InService
            activity.status, activity.end = "Successful", activity.start
            activity.message = f"Successfully set desired {what} to {desired}."
        self.scaling.add_activity(activity)
        log.info("autoscaling %s to %d: %s", target.resource_id, desired, cause)
        self.wake()
        return True

    def _cause(
        self,
        target: ScalableTarget,
        policies: list[ScalingPolicy],
        inputs: list[tuple[TargetTracking, float | None]],
        decision: Decision,
        current: int,
        history: History,
        now: float,
    ) -> str:
        bounds = Bounds(target.min, target.max)
        if decision.why is Why.BELOW_MIN:
            return f"minimum capacity was set to {target.min}"
        if decision.why is Why.ABOVE_MAX:
            return f"maximum capacity was set to {target.max}"
        side = "High" if decision.why is Why.SCALE_OUT else "Low"
        for p, (policy, metric) in zip(policies, inputs, strict=True):
            mine = decide(policy, current, metric, bounds, history, now)
            if mine is not None and mine.desired == decision.desired:
                alarm = next(
                    (a["AlarmName"] for a in p.alarms if f"-Alarm{side}-" in a["AlarmName"]),
                    f"TargetTracking-{target.resource_id}-Alarm{side}",
                )
                unit = "" if p.metric in (BACKLOG, UTILIZATION) else " per minute"
                return (
                    f"monitor alarm {alarm} in state ALARM triggered policy {p.name} "
                    f"({p.metric}{'PerInstance' if p.per_instance else ''} "
                    f"{metric:.2f}{unit}, target {p.target:g})"
                )
        return f"scaling policies on {target.resource_id}"

    def _set_desired(self, endpoint: str, variant: str, count: int) -> bool:
        """What UpdateEndpointWeightsAndCapacities does, for one variant's instance count."""

        def change(ep: Endpoint) -> bool:
            v = ep.variant(variant)
            if ep.status is not EndpointStatus.IN_SERVICE or v is None:
                return False
            v.desired_count = count
            ep.status = EndpointStatus.UPDATING
            ep.update = UpdateKind.CAPACITY
            ep.modified = self.clock()
            ep.generation += 1
            return True

        return bool(self.store.update_endpoint(endpoint, change))

    def _set_provisioned(self, endpoint: str, variant: str, concurrency: int) -> bool:
        """A serverless variant's ProvisionedConcurrency, in effect at once."""

        def change(ep: Endpoint) -> bool:
            v = ep.variant(variant)
            if ep.status is not EndpointStatus.IN_SERVICE or v is None:
                return False
            v.provisioned_concurrency = concurrency
            ep.modified = self.clock()
            return True

        return bool(self.store.update_endpoint(endpoint, change))

    def _settle(self, target: ScalableTarget, ep: Endpoint) -> None:
        """Activities in progress on this target finish once the endpoint is InService."""
        if ep.status is not EndpointStatus.IN_SERVICE:
            return
        variant = ep.variant(target.variant)
        for a in self.scaling.activities():
            if a.status != "InProgress" or a.resource_id != target.resource_id:
                continue
            if a.dimension != target.dimension:
                continue
            reached = variant is not None and variant.current_count == a.desired
            a.end = self.clock()
            if reached or not ep.failure_reason:
                a.status = "Successful"
                a.message = (
                    f"Successfully set desired instance count to {a.desired}. "
                    "Change successfully fulfilled by sagemaker."
                )
            else:
                a.status = "Failed"
                a.message = f"Failed to set desired instance count to {a.desired}. " + (
                    ep.failure_reason or ""
                )
            self.scaling.put_activity(a)


def _key(resource_id: str, dimension: str) -> str:
    return f"{resource_id}|{dimension}"


def capacity(ep: Endpoint, target: ScalableTarget) -> int | None:
    """The target's capacity now: the variant's desired instance count, or a serverless
    variant's ProvisionedConcurrency in effect; None when the variant is gone."""
    if target.dimension == PROVISIONED:
        return ep.provisioned(target.variant)
    variant = ep.variant(target.variant)
    return variant.desired_count if variant is not None else None


def _tracking(p: ScalingPolicy) -> TargetTracking:
    return TargetTracking(
        p.target, p.scale_out_cooldown_s, p.scale_in_cooldown_s, p.disable_scale_in
    )


def _metric(p: ScalingPolicy, r: Rates | None, backlog: int, instances: int) -> float | None:
    """The policy's metric now: an invocation rate over the window, or the async backlog (a
    gauge; per instance with at least one instance counted, so that a backlog at zero
    instances asks for one, as HasBacklogWithoutCapacity does on SageMaker), or the provisioned
    concurrency's utilization (``instances`` is then the provisioned concurrency)."""
    if p.metric == BACKLOG:
        return backlog / max(1, instances) if p.per_instance else float(backlog)
    if p.metric == UTILIZATION:
        return None if r is None else utilization(r.concurrency, instances)
    if r is None or p.metric != "Invocations":
        return None
    return r.per_instance if p.per_instance else r.invocations


def utilization(concurrency: float, provisioned: int) -> float:
    """SageMakerVariantProvisionedConcurrencyUtilization: mean requests in flight over the
    provisioned concurrency. At 0 provisioned, the concurrency itself, so that any request asks
    for some (target tracking's zero rule, controller/autoscaler.py)."""
    return concurrency / max(1, provisioned)


def _suspended(target: ScalableTarget, decision: Decision, current: int) -> bool:
    if decision.why in (Why.BELOW_MIN, Why.ABOVE_MAX):
        return False
    if decision.desired > current:
        return target.suspended.get("DynamicScalingOutSuspended", False)
    return target.suspended.get("DynamicScalingInSuspended", False)
