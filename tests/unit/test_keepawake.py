from __future__ import annotations

import asyncio

import pytest
import uvloop

from modelhost.keepawake import (
    BACKGROUND,
    GROW_START_S,
    SPIN_MAX_IN_FLIGHT,
    KeepAwake,
    next_window,
)

LONGEST = 200e-6


def test_events_within_the_longest_window_grow_it_up_to_the_cap() -> None:
    assert next_window(0.0, 50e-6, LONGEST) == GROW_START_S
    assert next_window(GROW_START_S, 50e-6, LONGEST) == 2 * GROW_START_S
    assert next_window(150e-6, 10e-6, LONGEST) == LONGEST
    assert next_window(LONGEST, 10e-6, LONGEST) == LONGEST
    # an event just past the current window but within the longest one: a longer poll would
    # have caught it
    assert next_window(40e-6, 120e-6, LONGEST) == 80e-6


def test_late_events_halve_the_window_down_to_zero() -> None:
    assert next_window(LONGEST, 1.0, LONGEST) == LONGEST / 2
    assert next_window(2 * GROW_START_S, 1.0, LONGEST) == GROW_START_S
    assert next_window(GROW_START_S, 1.0, LONGEST) == 0.0
    assert next_window(0.0, 1.0, LONGEST) == 0.0


def test_off_when_the_longest_window_is_zero() -> None:
    assert next_window(LONGEST, 0.0, 0.0) == 0.0


@pytest.mark.parametrize("factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_kick_keeps_the_loop_polling_for_the_window_then_stops(factory: object) -> None:
    async def main() -> None:
        awake = KeepAwake(0.02)
        awake.kick()
        assert awake.polling
        # Nothing else is scheduled: without the keep-awake the loop would sleep in one
        # blocking poll. Kept awake, it passes again and again for its 20 ms window ...
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0  # bounded; a loaded machine may not run us for a while
        while awake.polling and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert awake.passes >= 2
        # ... and then stops by itself.
        assert not awake.polling
        settled = awake.passes
        await asyncio.sleep(0.02)
        assert awake.passes == settled

    with asyncio.Runner(loop_factory=factory) as runner:  # type: ignore[arg-type]
        runner.run(main())


def test_sparse_traffic_stops_polling_and_back_to_back_traffic_brings_it_back() -> None:
    async def main() -> None:
        now = [100.0]
        awake = KeepAwake(LONGEST)
        awake._clock = lambda: now[0]
        for _ in range(6):  # one request a second: every poll would be wasted
            now[0] += 1.0
            awake.kick()
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert awake.window == 0.0
        assert not awake.polling  # nothing scheduled: the loop may sleep
        for _ in range(6):  # requests 20 us apart
            now[0] += 20e-6
            awake.kick()
            await asyncio.sleep(0)
        assert awake.window == LONGEST
        assert awake.polling

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_zero_turns_it_off() -> None:
    async def main() -> None:
        awake = KeepAwake(0.0)
        awake.kick()
        assert not awake.polling

    asyncio.run(main())


def test_no_polling_under_load_and_a_poll_in_progress_stops() -> None:
    async def main() -> None:
        awake = KeepAwake(10.0)  # a window far longer than the test
        awake.kick(in_flight=0)
        assert awake.polling
        awake.kick(in_flight=SPIN_MAX_IN_FLIGHT + 1)  # many requests wait on instances
        await asyncio.sleep(0.01)
        assert not awake.polling
        awake.kick(in_flight=SPIN_MAX_IN_FLIGHT)
        assert awake.polling

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_the_async_workers_running_slots_count_as_in_flight() -> None:
    async def main() -> None:
        awake = KeepAwake(10.0)
        BACKGROUND.slots += SPIN_MAX_IN_FLIGHT  # slots waiting on instances, none at the front
        try:
            awake.kick(in_flight=1)
            await asyncio.sleep(0.01)
            assert not awake.polling
        finally:
            BACKGROUND.slots -= SPIN_MAX_IN_FLIGHT
        awake.kick(in_flight=1)
        assert awake.polling
        awake.kick(in_flight=SPIN_MAX_IN_FLIGHT + 1)  # (ends the poll)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
