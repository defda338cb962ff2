"""The jobs loop: the only owner of transform jobs' instances.

Operations write a job (InProgress) or ask it to stop (Stopping) and nudge; every pass starts
a task for each InProgress job that has none (also after a server restart: the job resumes,
skipping the files whose output was published) and cancels the task of a Stopping one. A
stopped job keeps no output (SageMaker stores nothing for it). At shutdown the tasks are
cancelled and their instances stopped, and the jobs stay InProgress for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from modelhost.jobs.files import Outputs
from modelhost.jobs.transform import JobDeps, Outcome, TransformRun
from modelhost.state.store import Store
from modelhost.state.transform_jobs import (
    FINAL,
    TransformJob,
    TransformStatus,
    all_jobs,
    get_job,
    update_job,
)

log = logging.getLogger(__name__)


class JobManager:
    def __init__(
        self,
        store: Store,
        deps: JobDeps,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        run_factory: Callable[[TransformJob, JobDeps], TransformRun] = TransformRun,
    ) -> None:
        self.store = store
        self.deps = deps
        self.interval = interval
        self.clock = clock
        self.run_factory = run_factory  # unit tests run jobs without instances
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.runs: dict[str, TransformRun] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = asyncio.create_task(self._run(), name="jobs")

    def wake(self) -> None:
        """Thread-safe nudge (operations run in worker threads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Shutdown: cancel every job's task (each stops its instances); jobs stay InProgress."""
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("jobs pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def reconcile_once(self) -> None:
        jobs = await asyncio.to_thread(all_jobs, self.store)
        for job in jobs:
            if job.status in FINAL:
                continue
            task = self.tasks.get(job.name)
            if task is None and job.status is TransformStatus.IN_PROGRESS:
                self.tasks[job.name] = asyncio.create_task(self._drive(job), name=job.name)
            elif task is None and job.status is TransformStatus.STOPPING:
                # Asked to stop while no task ran it (a restart in between).
                await self._stopped(job, set())
            elif task is not None and job.status is TransformStatus.STOPPING:
                task.cancel()

    async def _drive(self, job: TransformJob) -> None:
        try:
            if job.started is None:
                now = self.clock()
                await asyncio.to_thread(update_job, self.store, job.name, _started(now))
            run = self.runs[job.name] = self.run_factory(job, self.deps)
            outcome = await run.run()
            await asyncio.to_thread(update_job, self.store, job.name, self._final(outcome))
            log.info("transform job %s: %s", job.name, outcome.status.value)
        except asyncio.CancelledError:
            if not self._closing:
                stopped = self.runs.get(job.name)
                await self._stopped(job, stopped.published if stopped is not None else set())
            raise
        except Exception as exc:
            log.exception("transform job %s failed", job.name)
            outcome = Outcome(TransformStatus.FAILED, f"Internal error running the job: {exc}")
            await asyncio.to_thread(update_job, self.store, job.name, self._final(outcome))
        finally:
            self.tasks.pop(job.name, None)
            self.runs.pop(job.name, None)

    def progress(self, name: str) -> dict[str, Any] | None:
        """A job's progress: files (in all, done) and records answered; live while it runs,
        else as recorded. None for no such job."""
        job = get_job(self.store, name)
        if job is None:
            return None
        out = {
            "TransformJobStatus": job.status.value,
            "FilesTotal": job.files_total,
            "FilesDone": len(job.done),
            "RecordsDone": job.records_done,
        }
        run = self.runs.get(job.name)
        if run is not None:
            out |= {
                "FilesTotal": run.files_total,
                "FilesDone": run.files_done,
                "RecordsDone": run.records_done,
            }
        return out

    async def _stopped(self, job: TransformJob, published: set[str]) -> None:
        """A stopped job keeps no output: remove what it published (recorded, or published
        by the run just stopped before it could be recorded)."""
        current = await asyncio.to_thread(get_job, self.store, job.name) or job
        outputs = Outputs(self.deps.objects, job.plan.output_path, self.deps.work_dir / job.name)
        for rel in sorted(set(current.done) | published):
            try:
                await asyncio.to_thread(outputs.delete, rel)
            except Exception as exc:
                log.warning("transform job %s: could not remove %s: %s", job.name, rel, exc)
        await asyncio.to_thread(
            update_job, self.store, job.name, self._final(Outcome(TransformStatus.STOPPED))
        )

    def _final(self, outcome: Outcome) -> Callable[[TransformJob], None]:
        now = self.clock()

        def change(job: TransformJob) -> None:
            if job.status is TransformStatus.STOPPING and outcome.status is not (
                TransformStatus.STOPPED
            ):
                return  # a stop came in meanwhile: its pass finishes the job
            job.status = outcome.status
            job.failure_reason = outcome.reason
            job.ended = job.modified = now
            if outcome.status is TransformStatus.STOPPED:
                job.done = []

        return change


def _started(now: float) -> Callable[[TransformJob], None]:
    def change(job: TransformJob) -> None:
        job.started = now

    return change
