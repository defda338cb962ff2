"""Writing an endpoint's status back to the store. Plain functions of the store, run in a worker
thread (the controller shares its event loop with the router); what they need from a fleet is
copied on the loop first (``Snapshot``)."""

from __future__ import annotations

from dataclasses import dataclass

from modelhost.controller.fleet import Fleet
from modelhost.state.records import Endpoint, EndpointStatus, UpdateKind
from modelhost.state.store import Store


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A fleet's counts, weights and model directories, per variant."""

    counts: dict[str, int]
    weights: dict[str, float]
    model_dirs: dict[str, str]

    @classmethod
    def of(cls, fleet: Fleet) -> Snapshot:
        return cls(
            {name: len(fleet.instances.get(name, [])) for name in fleet.plans},
            {name: plan.weight for name, plan in fleet.plans.items()},
            {name: str(plan.model_dir) for name, plan in fleet.plans.items()},
        )


@dataclass(frozen=True, slots=True)
class Finish:
    """How a step ends: the status it leaves, why it failed, what becomes of a pending update
    and which variants' capacity changes are rolled back (they keep what is running)."""

    status: EndpointStatus
    failure: str | None = None
    adopt_pending: bool = False
    clear_pending: bool = False
    roll_back: frozenset[str] = frozenset()


def set_status(store: Store, name: str, status: EndpointStatus, now: float) -> None:
    def change(e: Endpoint) -> None:
        e.status = status
        e.modified = now

    store.update_endpoint(name, change)


def finish(store: Store, name: str, done: Finish, fleet: Snapshot | None, now: float) -> None:
    def change(e: Endpoint) -> None:
        if e.status is EndpointStatus.DELETING:
            return
        _settle_pending(e, done)
        e.status = done.status
        e.update = UpdateKind.NONE
        e.failure_reason = done.failure
        e.modified = now
        if fleet is not None:
            _apply(e, fleet, done.roll_back)

    store.update_endpoint(name, change)


def record_counts(store: Store, name: str, fleet: Snapshot) -> None:
    store.update_endpoint(name, lambda e: apply_counts(e, fleet))


def apply_counts(e: Endpoint, fleet: Snapshot) -> None:
    for v in e.variants:
        v.current_count = fleet.counts.get(v.name, 0)
        v.current_weight = fleet.weights.get(v.name, v.desired_weight)


def _settle_pending(e: Endpoint, done: Finish) -> None:
    if done.adopt_pending and e.pending_config:
        e.config_name, e.variants = e.pending_config, e.pending_variants
        e.deployment = e.pending_deployment
    if done.adopt_pending or done.clear_pending:
        e.pending_config, e.pending_variants, e.pending_deployment = None, [], None


def _apply(e: Endpoint, fleet: Snapshot, roll_back: frozenset[str]) -> None:
    apply_counts(e, fleet)
    if e.deployment is not None:
        e.deployment.model_dirs = dict(fleet.model_dirs)
    for v in e.variants:  # a failed capacity change keeps what is running
        if v.name in roll_back and v.current_count is not None:
            v.desired_count = v.current_count
