"""Adaptive batching: the pure policy, and the Batcher on a real event loop with fake models."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost.runtime import server
from modelhost.runtime.batched import BatchingConnection, make_batcher
from modelhost.runtime.batching import (
    BatchConfigError,
    Batcher,
    BatchPolicy,
    batch_key,
    flush_in,
    plan,
    split,
    stack,
)
from modelhost.runtime.handlers import HandlerOptions, ModelHandler, load_handler
from tests.fixtures.models import fixture_model_dir

ON = BatchPolicy(enabled=True, max_batch_size=32, max_delay_s=0.002)
WAIT_S = 5.0  # generous bound on every await: a bug fails the test instead of hanging it


class RowSum:
    """A row-wise fake model that records every call's input."""

    def __init__(self, fail_on_negative: bool = False) -> None:
        self.calls: list[Any] = []
        self.fail_on_negative = fail_on_negative

    def predict(self, data: Any, context: Any) -> Any:
        self.calls.append(data)
        rows = data.reshape(1, -1) if data.ndim == 1 else data
        if self.fail_on_negative and (rows < 0).any():
            raise ValueError("negative input")
        return rows.sum(axis=1)


def run(make: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(make(), WAIT_S)

    return asyncio.run(bounded())


def gather(batcher: Batcher, inputs: list[Any]) -> list[Any]:
    async def go() -> list[Any]:
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)
        return list(results)

    result: list[Any] = run(go)
    return result


# --- configuration -----------------------------------------------------------------------------


def test_policy_defaults_to_off() -> None:
    assert BatchPolicy.from_env({}) == BatchPolicy(False, 32, 0.002)


def test_policy_reads_the_environment() -> None:
    env = {
        "MODELHOST_BATCHING": "True",
        "MODELHOST_MAX_BATCH_SIZE": "8",
        "MODELHOST_MAX_BATCH_DELAY_MS": "0.5",
    }
    assert BatchPolicy.from_env(env) == BatchPolicy(True, 8, 0.0005)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("MODELHOST_BATCHING", "maybe", "must be true or false"),
        ("MODELHOST_MAX_BATCH_SIZE", "0", "at least 1"),
        ("MODELHOST_MAX_BATCH_SIZE", "2.5", "must be a int"),
        ("MODELHOST_MAX_BATCH_DELAY_MS", "-1", "0-60000"),
        ("MODELHOST_MAX_BATCH_DELAY_MS", "soon", "must be a float"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, match: str) -> None:
    with pytest.raises(BatchConfigError, match=match) as caught:
        BatchPolicy.from_env({name: value})
    assert name in str(caught.value)


# --- pure decisions ----------------------------------------------------------------------------


def test_flush_now_when_nothing_else_is_coming() -> None:
    assert flush_in(ON, queued_rows=1, oldest_wait_s=0.0, coming=0) == 0.0


def test_flush_now_when_full() -> None:
    assert flush_in(ON, queued_rows=32, oldest_wait_s=0.0, coming=5) == 0.0


def test_wait_for_company_at_most_the_delay() -> None:
    assert flush_in(ON, queued_rows=3, oldest_wait_s=0.0, coming=1) == pytest.approx(0.002)
    assert flush_in(ON, queued_rows=3, oldest_wait_s=0.0015, coming=1) == pytest.approx(0.0005)
    assert flush_in(ON, queued_rows=3, oldest_wait_s=0.01, coming=1) == 0.0


def test_batch_key_counts_rows() -> None:
    row = np.array([1.0, 2.0])
    assert batch_key(row) == ((row.dtype, (2,)), 1)
    assert batch_key(np.ones((3, 2))) == ((row.dtype, (2,)), 3)
    assert batch_key(np.ones((3, 2), dtype=np.int64)) == ((np.dtype(np.int64), (2,)), 3)


@pytest.mark.parametrize(
    "data",
    [[1.0, 2.0], "text", np.array(5.0), np.ones((0, 2)), np.array([{"a": 1}], dtype=object)],
)
def test_batch_key_refuses_what_cannot_be_stacked(data: Any) -> None:
    assert batch_key(data) is None


def test_plan_groups_by_key_and_caps_rows() -> None:
    entries = [("a", 1), ("b", 1), ("a", 2), ("a", 1), ("a", 5), ("b", 1)]
    assert plan(entries, max_rows=4) == [[0, 2, 3], [1, 5], [4]]


def test_plan_sends_an_oversized_entry_alone() -> None:
    assert plan([("a", 1), ("a", 9), ("a", 1)], max_rows=4) == [[0, 2], [1]]


def test_stack_and_split_round_trip() -> None:
    inputs = [np.array([1.0, 2.0]), np.array([[3.0, 4.0], [5.0, 6.0]])]
    stacked = stack(inputs)
    assert stacked.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    parts = split(stacked.sum(axis=1), [1, 2])
    assert parts is not None
    assert [p.tolist() for p in parts] == [[3.0], [7.0, 11.0]]
    assert split([10, 20, 30], [2, 1]) == [[10, 20], [30]]


@pytest.mark.parametrize("prediction", [np.array(1.0), np.ones(2), {"a": 1}, 3.0])
def test_split_refuses_a_prediction_without_one_entry_per_row(prediction: Any) -> None:
    assert split(prediction, [1, 2]) is None


# --- the batcher -------------------------------------------------------------------------------


def test_concurrent_requests_share_one_predict_call() -> None:
    model = RowSum()
    inputs = [np.array([float(i), 1.0]) for i in range(10)]
    results = gather(Batcher(ON, model.predict), inputs)
    assert len(model.calls) == 1
    assert model.calls[0].shape == (10, 2)
    assert [r.tolist() for r in results] == [[i + 1.0] for i in range(10)]


def test_results_equal_unbatched_predictions() -> None:
    rng = np.random.default_rng(7)
    inputs: list[Any] = [rng.normal(size=(int(n), 3)) for n in rng.integers(1, 4, size=20)]
    inputs += [rng.normal(size=3) for _ in range(5)]
    batched = gather(Batcher(ON, RowSum().predict), inputs)
    alone = [RowSum().predict(x, None) for x in inputs]
    assert [b.tobytes() for b in batched] == [a.tobytes() for a in alone]


def test_a_lone_request_runs_at_once_with_its_input_unchanged() -> None:
    model = RowSum()
    slow = BatchPolicy(enabled=True, max_delay_s=60.0)  # a wait would trip the test's bound
    row = np.array([1.0, 2.0])
    result = gather(Batcher(slow, model.predict, coming=lambda: 0), [row])
    assert result[0].tolist() == [3.0]
    assert model.calls[0] is row


def test_max_batch_size_closes_batches() -> None:
    model = RowSum()
    policy = BatchPolicy(enabled=True, max_batch_size=2)
    gather(Batcher(policy, model.predict), [np.ones(2) for _ in range(5)])
    assert [len(call) if call.ndim == 2 else 1 for call in model.calls] == [2, 2, 1]


def test_full_queue_flushes_without_waiting_for_the_delay() -> None:
    model = RowSum()
    policy = BatchPolicy(enabled=True, max_batch_size=4, max_delay_s=60.0)
    batcher = Batcher(policy, model.predict, coming=lambda: 1)  # someone is always coming
    results = gather(batcher, [np.ones(2) for _ in range(4)])
    assert len(model.calls) == 1
    assert [r.tolist() for r in results] == [[2.0]] * 4


async def until_waiting(batcher: Batcher) -> None:
    """Let the event loop run until the batcher has decided to wait (bounded)."""
    for _ in range(100):
        if batcher.waiting:
            return
        await asyncio.sleep(0)
    raise AssertionError("the batcher never started waiting")


def test_waits_for_a_request_being_read_then_includes_it() -> None:
    model = RowSum()
    reading = [1]
    policy = BatchPolicy(enabled=True, max_delay_s=60.0)
    batcher = Batcher(policy, model.predict, coming=lambda: reading[0])

    async def go() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit(np.array([1.0, 1.0])))
        await until_waiting(batcher)  # one queued, one being read: it waits for company
        assert not model.calls
        reading[0] = 0
        second = await batcher.submit(np.array([2.0, 2.0]))
        return [await first, second]

    results = run(go)
    assert len(model.calls) == 1 and model.calls[0].shape == (2, 2)
    assert [r.tolist() for r in results] == [[2.0], [4.0]]


def test_the_delay_bounds_the_wait() -> None:
    model = RowSum()
    policy = BatchPolicy(enabled=True, max_delay_s=0.001)
    batcher = Batcher(policy, model.predict, coming=lambda: 1)  # company never arrives

    async def go() -> Any:
        pending = asyncio.ensure_future(batcher.submit(np.array([1.0, 1.0])))
        await until_waiting(batcher)
        assert not model.calls
        return await pending  # the batcher's own 1 ms timer flushes it

    assert run(go).tolist() == [2.0]
    assert len(model.calls) == 1 and not batcher.waiting


def test_the_oldest_wait_comes_from_the_injected_clock() -> None:
    model = RowSum()
    now = [0.0]
    policy = BatchPolicy(enabled=True, max_delay_s=60.0)
    batcher = Batcher(policy, model.predict, coming=lambda: 1, clock=lambda: now[0])

    async def go() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit(np.array([1.0, 1.0])))
        await until_waiting(batcher)
        now[0] = 61.0  # the first request has waited past the delay: the next look flushes
        second = await batcher.submit(np.array([2.0, 2.0]))
        return [await first, second]

    assert [r.tolist() for r in run(go)] == [[2.0], [4.0]]
    assert len(model.calls) == 1


def test_different_row_shapes_and_dtypes_are_not_mixed() -> None:
    model = RowSum()
    inputs = [np.ones(2), np.ones(3), np.ones(2, dtype=np.int64), np.ones(2), np.ones((2, 3))]
    results = gather(Batcher(ON, model.predict), inputs)
    assert sorted(call.shape for call in model.calls) == [(2,), (2, 2), (3, 3)]  # lone: as is
    assert results[2].dtype == np.int64
    assert [r.tolist() for r in results] == [[2.0], [3.0], [2], [2.0], [3.0, 3.0]]


def test_inputs_that_cannot_be_stacked_run_alone() -> None:
    calls: list[Any] = []

    def predict(data: Any, context: Any) -> Any:
        calls.append((data, context))
        return len(data)

    async def go() -> Any:
        return await Batcher(ON, predict).submit([1, 2, 3], "ctx")

    assert run(go) == 3
    assert calls == [([1, 2, 3], "ctx")]


def test_a_failing_batch_is_retried_request_by_request() -> None:
    model = RowSum(fail_on_negative=True)
    inputs = [np.array([1.0, 1.0]), np.array([-1.0, 0.0]), np.array([2.0, 2.0])]
    results = gather(Batcher(ON, model.predict), inputs)
    assert len(model.calls) == 4  # the batch, then each request alone
    assert results[0].tolist() == [2.0] and results[2].tolist() == [4.0]
    assert isinstance(results[1], ValueError) and str(results[1]) == "negative input"


def test_a_prediction_that_cannot_be_split_turns_batching_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[Any] = []

    def predict(data: Any, context: Any) -> Any:
        calls.append(data)
        return {"total": float(data.sum())}

    batcher = Batcher(ON, predict)
    results = gather(batcher, [np.ones(2), np.ones(2)])
    assert results == [{"total": 2.0}, {"total": 2.0}]
    assert len(calls) == 3 and not batcher.enabled
    assert "batching off" in capsys.readouterr().err
    gather(batcher, [np.ones(2), np.ones(2)])
    assert len(calls) == 5  # from now on every request is predicted alone


def test_disabled_policy_batches_nothing() -> None:
    batcher = Batcher(BatchPolicy(), RowSum().predict)
    assert batcher.add(np.ones(2), None, lambda result, error: None) is False


def test_a_failing_callback_does_not_cost_the_others_their_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = RowSum()
    batcher = Batcher(ON, model.predict)
    answers: list[Any] = []

    def bad(result: Any, error: Exception | None) -> None:
        raise RuntimeError("callback bug")

    async def go() -> None:
        batcher.add(np.ones(2), None, bad)
        batcher.add(np.ones(2), None, lambda result, error: answers.append(result.tolist()))
        await asyncio.sleep(0)

    run(go)
    assert answers == [[2.0]]
    assert "callback bug" in capsys.readouterr().err


def test_counts_batches() -> None:
    batcher = Batcher(ON, RowSum().predict)
    gather(batcher, [np.ones(2) for _ in range(3)])
    assert (batcher.batches, batcher.batched_requests) == (1, 3)


# --- through the server's connections (a fake transport, no sockets) ---------------------------

MODEL_SOURCE = """
class RowSum:
    def __init__(self):
        self.calls = []

    def predict(self, x):
        self.calls.append(x.shape)
        if (x < 0).any():
            raise ValueError("negative input")
        return x.sum(axis=1)


def model_fn(model_dir):
    return RowSum()
"""


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def request(body: bytes, accept: str = "application/json") -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
def handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelHandler]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(MODEL_SOURCE)
    yield load_handler(HandlerOptions(model_dir=str(tmp_path / "model")))
    sys.modules.pop("inference", None)


def serve_requests(
    handler: ModelHandler, requests: list[bytes], policy: BatchPolicy
) -> list[bytes]:
    """Each request on a connection of its own, all arriving in one event-loop iteration."""

    async def go() -> list[bytes]:
        options = server.ServerOptions(batching=policy)
        state = server.ServerState(handler, options)
        batcher = make_batcher(handler, options, state)
        transports = [FakeTransport() for _ in requests]
        for transport, data in zip(transports, requests, strict=True):
            conn = (
                server.HttpConnection(state)
                if batcher is None
                else BatchingConnection(state, batcher)
            )
            conn.connection_made(transport)  # type: ignore[arg-type]
            conn.data_received(data)
        for _ in range(100):
            if all(transport.data for transport in transports):
                break
            await asyncio.sleep(0)
        return [bytes(transport.data) for transport in transports]

    result: list[bytes] = run(go)
    return result


def test_the_server_answers_byte_for_byte_as_without_batching(handler: ModelHandler) -> None:
    requests = [
        request(b"[[1.0, 2.0]]"),
        request(b"[3.0, 4.0]", accept="text/csv"),
        request(b"[[5.0, 6.0], [7.0, 8.0]]"),
        request(b"[[1, 2]]"),  # ints: a batch of their own
        request(b'{"a": 1}'),  # cannot be stacked: predicted alone (and fails)
        request(b"[[-1.0, 0.0]]"),  # fails the batch; retried alone, it alone fails
        request(b"[[9.0, 9.0]]", accept="text/html"),  # output_fn refuses: 406
    ]
    plain = serve_requests(handler, requests, BatchPolicy())
    calls_alone = len(handler.model.calls)
    batched = serve_requests(handler, requests, ON)
    assert batched == plain
    assert [r.split(b"\r\n", 1)[0] for r in batched] == [b"HTTP/1.1 200 OK"] * 4 + [
        b"HTTP/1.1 500 Internal Server Error",
        b"HTTP/1.1 500 Internal Server Error",
        b"HTTP/1.1 406 Not Acceptable",
    ]
    batch_calls = handler.model.calls[calls_alone:]
    assert batch_calls[:2] == [(), (6, 2)]  # the dict at once; then every float row together
    assert batched[2].endswith(b"[11.0, 15.0]")


def test_the_server_ignores_batching_for_transform_fn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = fixture_model_dir("echo", tmp_path / "echo")
    echo = load_handler(HandlerOptions(model_dir=str(model_dir)))
    assert not echo.batchable
    assert serve_requests(echo, [request(b"[1]")], ON)[0].endswith(b"\r\n\r\n[1]")
    assert "MODELHOST_BATCHING ignored" in capsys.readouterr().err


def test_a_request_pipelined_behind_a_waiting_one_closes_the_connection(
    handler: ModelHandler,
) -> None:
    both = request(b"[[1.0, 2.0]]") + request(b"[[3.0, 4.0]]")
    answer = serve_requests(handler, [both], ON)[0]
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"[3.0]")
    assert b"Connection: close" in answer  # the second is left unanswered, as behind a stream
