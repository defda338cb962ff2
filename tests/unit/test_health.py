"""The health checks' rule (controller/health.py): only an instance that has not answered
/ping for longer than the grace is hung, once; a dead or departed one is forgotten."""

from __future__ import annotations

import asyncio
from typing import Any

from modelhost.controller.health import HealthWatch, hung
from modelhost.publish import Address


class _Proc:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


class _Inst:
    def __init__(self, port: int) -> None:
        self.address = Address("127.0.0.1", port)
        self.process = _Proc()
        self.instance_id = f"i-{port}"
        self.spec: Any = type("Spec", (), {"endpoint": "ep", "variant": "v"})()

    def exited(self) -> int | None:
        return self.process.poll()


def test_hung_only_past_the_grace() -> None:
    assert not hung(10.0, 12.0, 2.0)
    assert hung(10.0, 12.5, 2.0)


def test_a_silent_instance_is_reported_once_after_the_grace() -> None:
    now = [0.0]
    answering = {1: True, 2: True}
    a: Any = _Inst(1)
    b: Any = _Inst(2)
    listed: list[Any] = [a, b]
    reported: list[Any] = []

    async def pinger(host: str, port: int, timeout: float) -> bool:
        return answering[port]

    watch = HealthWatch(
        lambda: listed, reported.append, 1.0, lambda _: 5.0, pinger=pinger, timer=lambda: now[0]
    )

    async def passes(times: int) -> None:
        for _ in range(times):
            await watch.check_once()
            now[0] += 1.0

    asyncio.run(passes(3))  # t = 0..2: both answer
    answering[2] = False
    asyncio.run(passes(5))  # t = 3..7: b silent since its last answer at t = 2, grace 5
    assert reported == []
    asyncio.run(passes(1))  # t = 8: 6 s since
    assert reported == [b]
    asyncio.run(passes(3))
    assert reported == [b]  # counted again from its report, not reported every pass
    listed.remove(b)
    asyncio.run(passes(1))
    assert list(watch.last_ok) == [a]


def test_an_exited_instance_is_not_judged() -> None:
    inst: Any = _Inst(3)
    inst.process.code = -9
    reported: list[Any] = []

    async def pinger(host: str, port: int, timeout: float) -> bool:
        return False

    watch = HealthWatch(lambda: [inst], reported.append, 1.0, lambda _: 0.0, pinger=pinger)
    asyncio.run(watch.check_once())
    assert reported == [] and watch.last_ok == {}
