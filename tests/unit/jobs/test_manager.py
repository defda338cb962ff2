"""The jobs loop with a stand-in for a job's run: final statuses, a stop (mid-run, or found
after a restart) keeps no output, a shutdown leaves jobs InProgress, a crash is a Failed job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from modelhost.jobs.manager import JobManager
from modelhost.jobs.transform import JobDeps, Outcome, TransformRun
from modelhost.state.records import DeployedContainer
from modelhost.state.store import Store
from modelhost.state.transform_jobs import (
    TransformJob,
    TransformPlan,
    TransformStatus,
    add_job,
    get_job,
    update_job,
)
from modelhost.storage.local import LocalObjectStore

TIMEOUT_S = 10.0


class FakeRun:
    """Publishes one output, then does what the test says."""

    def __init__(self, job: TransformJob, deps: JobDeps, then: Callable[[], Awaitable[Outcome]]):
        self.job = job
        self.out = Path(job.plan.output_path)
        self.then = then
        self.published: set[str] = set()
        self.files_total, self.files_done, self.records_done = 2, 0, 0

    async def run(self) -> Outcome:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "a.csv.out").write_bytes(b"done")
        self.published.add("a.csv")
        self.files_done, self.records_done = 1, 5
        return await self.then()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def job(store: Store, tmp_path: Path, status: TransformStatus = TransformStatus.IN_PROGRESS) -> str:
    plan = TransformPlan(
        model_name="m",
        container=DeployedContainer(model_data_url="/m"),
        instance_type="ml.m5.large",
        instance_count=1,
        input_uri=str(tmp_path / "in"),
        manifest=False,
        output_path=str(tmp_path / "out"),
    )
    add_job(store, TransformJob("j", "arn:j", status, 1.0, 1.0, {}, plan))
    return "j"


def manager(store: Store, tmp_path: Path, then: Callable[[], Awaitable[Outcome]]) -> JobManager:
    deps = JobDeps(cast(Any, None), LocalObjectStore(tmp_path / "objects"), tmp_path, tmp_path)

    def factory(j: TransformJob, d: JobDeps) -> TransformRun:
        return cast(TransformRun, FakeRun(j, d, then))

    return JobManager(store, deps, interval=0.01, run_factory=factory)


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not check():
            await asyncio.sleep(0.01)


def status(store: Store, name: str) -> TransformStatus:
    found = get_job(store, name)
    assert found is not None
    return found.status


def test_a_job_ends_with_its_runs_outcome(store: Store, tmp_path: Path) -> None:
    async def fail() -> Outcome:
        return Outcome(TransformStatus.FAILED, "Input file x failed: boom")

    async def scenario() -> None:
        name = job(store, tmp_path)
        jobs = manager(store, tmp_path, fail)
        await jobs.start()
        await until(lambda: status(store, name) is TransformStatus.FAILED)
        await jobs.stop()
        done = get_job(store, name)
        assert done is not None
        assert done.failure_reason == "Input file x failed: boom"
        assert done.started is not None and done.ended is not None

    asyncio.run(scenario())


def test_a_stop_mid_run_keeps_no_output(store: Store, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def hang() -> Outcome:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not stopped")

    async def scenario() -> None:
        name = job(store, tmp_path)
        jobs = manager(store, tmp_path, hang)
        await jobs.start()
        await asyncio.wait_for(started.wait(), TIMEOUT_S)
        assert jobs.progress(name) == {
            "TransformJobStatus": "InProgress",
            "FilesTotal": 2,
            "FilesDone": 1,
            "RecordsDone": 5,
        }

        def stop(j: TransformJob) -> None:
            j.status = TransformStatus.STOPPING

        update_job(store, name, stop)
        jobs.wake()
        await until(lambda: status(store, name) is TransformStatus.STOPPED)
        await jobs.stop()
        assert not (tmp_path / "out" / "a.csv.out").exists()

    asyncio.run(scenario())


def test_a_job_found_stopping_after_a_restart_is_stopped(store: Store, tmp_path: Path) -> None:
    async def never() -> Outcome:
        raise AssertionError("a stopping job is not run")

    async def scenario() -> None:
        name = job(store, tmp_path, TransformStatus.STOPPING)
        jobs = manager(store, tmp_path, never)
        await jobs.start()
        await until(lambda: status(store, name) is TransformStatus.STOPPED)
        await jobs.stop()

    asyncio.run(scenario())


def test_shutdown_leaves_the_job_in_progress_for_the_next_start(
    store: Store, tmp_path: Path
) -> None:
    started = asyncio.Event()

    async def hang() -> Outcome:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not cancelled")

    async def scenario() -> None:
        name = job(store, tmp_path)
        jobs = manager(store, tmp_path, hang)
        await jobs.start()
        await asyncio.wait_for(started.wait(), TIMEOUT_S)
        await jobs.stop()
        assert status(store, name) is TransformStatus.IN_PROGRESS
        assert (tmp_path / "out" / "a.csv.out").exists()  # resumed later, not thrown away

    asyncio.run(scenario())


def test_a_crashing_run_fails_the_job(store: Store, tmp_path: Path) -> None:
    async def crash() -> Outcome:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        name = job(store, tmp_path)
        jobs = manager(store, tmp_path, crash)
        await jobs.start()
        await until(lambda: status(store, name) is TransformStatus.FAILED)
        await jobs.stop()
        done = get_job(store, name)
        assert done is not None
        assert done.failure_reason == "Internal error running the job: a bug"

    asyncio.run(scenario())
