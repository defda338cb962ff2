"""What every operation receives: the store, ARN builder, settings, and a nudge for the
controller. Operations validate, write desired state, nudge, and return."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelhost.names import Arns
from modelhost.settings import Settings
from modelhost.state.store import Store
from modelhost.storage import ObjectStore

Request = dict[str, Any]
Response = dict[str, Any]
Handler = Callable[["Context", Request], Response]


@dataclass
class Context:
    settings: Settings
    store: Store
    arns: Arns
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = field(default=time.time)
    # Checks that model data exists at CreateModel; injected so unit tests need no storage.
    check_model_data: Callable[[dict[str, Any]], None] = lambda _container: None
    # The platform's object store (transform jobs check their input at create); None in
    # unit tests that need no storage.
    objects: ObjectStore | None = None


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
