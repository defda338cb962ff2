"""Adaptive batching for the built-in model server: many requests, one `predict_fn` call.

Opt-in per model, through the model's Environment (CreateModel `PrimaryContainer.Environment`):
  MODELHOST_BATCHING=true          enable (default off; true/1/yes/on, false/0/no/off)
  MODELHOST_MAX_BATCH_SIZE=32      most rows stacked into one predict_fn call
  MODELHOST_MAX_BATCH_DELAY_MS=2   longest a request waits for company (0: never wait)

How a batch forms. Each request is decoded by `input_fn` on its own; a numpy array (numeric, bool
or string dtype) joins the queue with its row count (a 1-D array is one row). The first request
queued schedules a check with `loop.call_soon`, which runs after every request parsed in the same
event-loop iteration has joined. The check (`flush_in`, a pure function) flushes at once when the
queue holds `max_batch_size` rows or when nothing else is on its way (no request being read, no
batch computing) - so an idle server adds no delay - and otherwise waits at most
`max_batch_delay` after the oldest request. `predict_fn` runs inline on the event loop (it is
CPU-bound), so in practice a batch is whatever arrived while the previous one was computing.

A flush groups the queue by (dtype, shape of a row), cuts each group into batches of at most
`max_batch_size` rows (a request is never split), stacks each batch with `np.concatenate`, calls
`predict_fn` once and hands each request its slice of the prediction (`output_fn` then runs per
request, with that request's Accept). A batch of one request gets its input unchanged.

Fallbacks. Inputs that cannot be stacked (not an array, object dtype, no rows) are predicted
alone. When a batched `predict_fn` raises, each request of the batch is retried alone, so only the
bad request fails (with the same error it would get unbatched; `predict_fn` then sees the other
rows twice). When a prediction is not an array or list with one entry per stacked row, that
batch is retried request by request and batching is switched off for the process (one line on
stderr). Results equal unbatched ones for models that predict each row independently; float
outputs of BLAS-backed models may differ in the last bit between batch sizes.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ENV_BATCHING = "MODELHOST_BATCHING"
ENV_MAX_BATCH_SIZE = "MODELHOST_MAX_BATCH_SIZE"
ENV_MAX_BATCH_DELAY_MS = "MODELHOST_MAX_BATCH_DELAY_MS"
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_DELAY_MS = 2.0

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_STACKABLE_KINDS = frozenset("biufcUS")  # bool, ints, floats, complex, strings; not object

Predict = Callable[[Any, Any], Any]  # (input, context or None) -> prediction
Done = Callable[[Any, Exception | None], None]  # (prediction slice, error)


class BatchConfigError(ValueError):
    """A batching variable has a value we cannot use; the message names it."""


@dataclass(frozen=True)
class BatchPolicy:
    enabled: bool = False
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_delay_s: float = DEFAULT_MAX_BATCH_DELAY_MS / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BatchPolicy:
        flag = env.get(ENV_BATCHING, "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise BatchConfigError(f"{ENV_BATCHING} must be true or false, got {flag!r}")
        size = _number(env, ENV_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_SIZE, int)
        if size < 1:
            raise BatchConfigError(f"{ENV_MAX_BATCH_SIZE} must be at least 1, got {size}")
        delay_ms = _number(env, ENV_MAX_BATCH_DELAY_MS, DEFAULT_MAX_BATCH_DELAY_MS, float)
        if not 0 <= delay_ms <= 60_000:
            raise BatchConfigError(f"{ENV_MAX_BATCH_DELAY_MS} must be 0-60000, got {delay_ms:g}")
        return cls(flag in _TRUE, int(size), delay_ms / 1000)


def _number(env: Mapping[str, str], name: str, default: float, kind: type[float]) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise BatchConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None


# --- pure decisions ----------------------------------------------------------------------------


def flush_in(policy: BatchPolicy, queued_rows: int, oldest_wait_s: float, coming: int) -> float:
    """Seconds until the queue should be flushed; 0 means now.

    `coming` counts what could still join: requests being read plus batches computing. With
    nothing coming, waiting only adds latency, so an idle server flushes at once.
    """
    if queued_rows >= policy.max_batch_size or coming <= 0:
        return 0.0
    return max(0.0, policy.max_delay_s - oldest_wait_s)


def batch_key(data: Any) -> tuple[Hashable, int] | None:
    """(what must match to stack, rows) for a decoded input; None when it cannot be stacked."""
    if not isinstance(data, np.ndarray) or data.dtype.kind not in _STACKABLE_KINDS:
        return None
    if data.ndim == 1:
        return (data.dtype, data.shape), 1
    if data.ndim == 0 or data.shape[0] == 0:
        return None
    return (data.dtype, data.shape[1:]), data.shape[0]


def plan(entries: Sequence[tuple[Hashable, int]], max_rows: int) -> list[list[int]]:
    """Indexes of `(key, rows)` entries per batch: same key, at most `max_rows` rows (a bigger
    entry goes alone), first-come order within a key; batches ordered by their first entry."""
    batches: list[list[int]] = []
    open_batch: dict[Hashable, tuple[list[int], int]] = {}
    for index, (key, rows) in enumerate(entries):
        if rows >= max_rows:
            batches.append([index])
            continue
        current = open_batch.get(key)
        if current is not None and current[1] + rows <= max_rows:
            current[0].append(index)
            open_batch[key] = (current[0], current[1] + rows)
            continue
        batch = [index]
        batches.append(batch)
        open_batch[key] = (batch, rows)
    return batches


def stack(inputs: Sequence[np.ndarray]) -> np.ndarray:
    """One array of every input's rows; a 1-D input is one row."""
    return np.concatenate([x.reshape(1, -1) if x.ndim == 1 else x for x in inputs])


def split(prediction: Any, rows: Sequence[int]) -> list[Any] | None:
    """`prediction` cut back into one slice per input; None unless it has one entry per row."""
    if isinstance(prediction, np.ndarray):
        if prediction.ndim == 0 or len(prediction) != sum(rows):
            return None
    elif not isinstance(prediction, list) or len(prediction) != sum(rows):
        return None
    parts, start = [], 0
    for count in rows:
        parts.append(prediction[start : start + count])
        start += count
    return parts


# --- the batcher -------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("context", "data", "done", "key", "queued_at", "rows")

    def __init__(
        self, data: Any, context: Any, key: Hashable, rows: int, done: Done, queued_at: float
    ) -> None:
        self.data = data
        self.context = context
        self.key = key
        self.rows = rows
        self.done = done
        self.queued_at = queued_at


class Batcher:
    """Queues decoded inputs, predicts them in batches on the event loop, hands back slices.

    `predict(data, context)` is the model's predict step. `coming()` says how many requests are
    being read right now (they may join the batch). `clock` is injected for tests.
    """

    def __init__(
        self,
        policy: BatchPolicy,
        predict: Predict,
        *,
        coming: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.enabled = policy.enabled
        self.batches = 0  # predict calls on more than one request
        self.batched_requests = 0
        self._predict = predict
        self._coming = coming
        self._clock = clock
        self._queue: list[_Entry] = []
        self._rows = 0
        self._computing = 0
        self._check_soon = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        """True while requests are queued waiting for company (a timer is set)."""
        return self._timer is not None

    def add(self, data: Any, context: Any, done: Done) -> bool:
        """Queue `data`; `done(slice, None)` or `done(None, error)` is called from the event
        loop later. False (nothing queued) when it cannot be batched: predict it yourself."""
        found = batch_key(data) if self.enabled else None
        if found is None:
            return False
        self._queue.append(_Entry(data, context, found[0], found[1], done, self._clock()))
        self._rows += found[1]
        if not self._check_soon:
            self._check_soon = True
            asyncio.get_running_loop().call_soon(self._check)
        return True

    async def submit(self, data: Any, context: Any = None) -> Any:
        """The prediction for `data` alone, computed in a batch when it can be."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any, error: Exception | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        if not self.add(data, context, done):
            return self._predict(data, context)
        return await future

    def _check(self) -> None:
        self._check_soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._queue:
            return
        waited = self._clock() - self._queue[0].queued_at
        wait = flush_in(self.policy, self._rows, waited, self._coming() + self._computing)
        if wait > 0:
            self._timer = asyncio.get_running_loop().call_later(wait, self._check)
        else:
            self.flush()

    def flush(self) -> None:
        """Predict everything queued now."""
        entries, self._queue, self._rows = self._queue, [], 0
        self._computing += 1
        try:
            if len(entries) == 1:  # the idle server's case: no planning
                self._alone(entries[0])
                return
            keys = [(entry.key, entry.rows) for entry in entries]
            for indexes in plan(keys, self.policy.max_batch_size):
                self._run([entries[i] for i in indexes])
        finally:
            self._computing -= 1

    def _run(self, batch: list[_Entry]) -> None:
        if len(batch) == 1 or not self.enabled:
            for entry in batch:
                self._alone(entry)
            return
        try:
            prediction = self._predict(stack([entry.data for entry in batch]), None)
            parts = split(prediction, [entry.rows for entry in batch])
        except Exception:
            parts = None  # retried below, outside this handler: each error stands on its own
        else:
            if parts is None:
                self._disable(prediction, sum(entry.rows for entry in batch))
        if parts is None:
            for entry in batch:  # isolates the request that fails
                self._alone(entry)
            return
        self.batches += 1
        self.batched_requests += len(batch)
        for entry, part in zip(batch, parts, strict=True):
            _deliver(entry.done, part, None)

    def _alone(self, entry: _Entry) -> None:
        try:
            prediction = self._predict(entry.data, entry.context)
        except Exception as exc:
            _deliver(entry.done, None, exc)
            return
        _deliver(entry.done, prediction, None)

    def _disable(self, prediction: Any, rows: int) -> None:
        self.enabled = False
        shape = getattr(prediction, "shape", None)
        got = type(prediction).__name__ + (f" of shape {shape}" if shape is not None else "")
        print(
            f"modelhost.runtime: batching off: predict_fn returned {got} for {rows} stacked rows;"
            " batching needs an array or list with one entry per row",
            file=sys.stderr,
            flush=True,
        )


def _deliver(done: Done, result: Any, error: Exception | None) -> None:
    try:
        done(result, error)
    except Exception:  # a failing callback must not cost the rest of the batch its answers
        traceback.print_exc()
