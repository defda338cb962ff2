"""Running one transform job: start its instances, send every input file's records to them,
publish each file's output whole, stop the instances whatever happens.

Files are spread across the instances (params.assign); each instance has at most
MaxConcurrentTransforms requests in flight (a semaphore), shared by up to that many files
at once; a file keeps a window of requests in flight and writes the answers in input order.
A request that fails (a non-2xx answer, a timeout, a dropped connection) is sent again up to
InvocationsMaxRetries times; then its file fails: no output for it, the others go on, and the
job ends Failed naming the file and the cause.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from modelhost.backends.local import Instance, InstanceFailed
from modelhost.controller.fleet import FleetFailed, Fleets, VariantPlan
from modelhost.controller.pipelines import published_instance
from modelhost.http11 import Payload
from modelhost.jobs.files import InputFile, NoInputs, Outputs, list_inputs
from modelhost.jobs.filework import Emitter, FileFailed, Reader, Stream, processor_for
from modelhost.jobs.params import (
    BatchParams,
    assign,
    batch_environment,
    effective,
    parse_execution_parameters,
)
from modelhost.jobs.records_io import Batch
from modelhost.jobs.streaming import StreamFailed, stream_call
from modelhost.router.forwarder import UpstreamPool
from modelhost.router.pipeline import PRIMARY, SERIAL, container_of, pool_for
from modelhost.router.upstream_types import UpstreamError, UpstreamResponse
from modelhost.state.records import DeployedVariant
from modelhost.state.transform_jobs import TransformJob, TransformPlan, TransformStatus, update_job
from modelhost.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

VARIANT = "transform"
EXEC_PARAMS_TIMEOUT_S = 5.0
STARTING_GRACE_S = 2.0
_ERROR_TEXT_MAX = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    status: TransformStatus
    reason: str | None = None


@dataclass
class JobDeps:
    """What a job runner uses: the fleets' planning and starting, the object store, where
    its logs and temporary files go, and the store it records progress in."""

    fleets: Fleets
    objects: ObjectStore
    logs_dir: Path
    work_dir: Path
    stop_grace_s: float = 30.0
    startup_timeout_s: float | None = None


@dataclass
class _Worker:
    """One instance and its pool; ``slots`` bounds its requests in flight
    (MaxConcurrentTransforms), ``budget`` the batches read and not yet written out (twice
    that), so memory stays near 4 x MaxPayloadInMB x MaxConcurrentTransforms per instance
    (requests and answers) however many of its files are under way."""

    instance: Instance
    pool: UpstreamPool
    slots: asyncio.Semaphore
    budget: asyncio.Semaphore
    files: list[InputFile] = field(default_factory=list)


class TransformRun:
    def __init__(self, job: TransformJob, deps: JobDeps) -> None:
        self.job = job
        self.plan: TransformPlan = job.plan
        self.deps = deps
        self.outputs = Outputs(deps.objects, job.plan.output_path, deps.work_dir / job.name)
        self.instances: list[Instance] = []
        self.names: tuple[str, ...] = ()  # a serial pipeline's container names
        self.failures: list[str] = []
        self.published: set[str] = set()  # outputs published by this run (a stop removes them)
        self._publishing: set[asyncio.Future[None]] = set()
        # Live progress (modelhost transform's progress bar): files in the job, files done
        # (also before a restart), records answered.
        self.files_total: int | None = job.files_total
        self.files_done = len(job.done)
        self.records_done = job.records_done

    async def run(self) -> Outcome:
        try:
            files = await asyncio.to_thread(
                list_inputs, self.deps.objects, self.plan.input_uri, self.plan.manifest
            )
        except NoInputs as exc:
            return Outcome(TransformStatus.FAILED, str(exc))
        await asyncio.to_thread(self.outputs.clean_temps)
        done = set(self.job.done)
        todo = [f for f in files if f.rel not in done]
        self.files_total = len(files)
        await self._record(lambda j: setattr(j, "files_total", len(files)))
        if not todo:
            return Outcome(TransformStatus.COMPLETED)
        try:
            await self._start_instances(min(self.plan.instance_count, len(todo)))
            params = await self._params()
            await self._transform(todo, params)
        except (FleetFailed, InstanceFailed) as exc:
            return Outcome(TransformStatus.FAILED, f"Could not start the model's instances: {exc}")
        finally:
            await asyncio.gather(*self._publishing, return_exceptions=True)
            await self._stop_instances()
            await asyncio.to_thread(shutil.rmtree, self.outputs.work_dir, True)
        if self.failures:
            more = len(self.failures) - 1
            reason = self.failures[0] + (f" ({more} more input file(s) failed.)" if more else "")
            return Outcome(TransformStatus.FAILED, reason)
        return Outcome(TransformStatus.COMPLETED)

    # --- instances ------------------------------------------------------------------------

    async def _start_instances(self, count: int) -> None:
        plan = self.plan
        containers = (plan.container, *plan.pipeline)
        dv = DeployedVariant(VARIANT, plan.model_name, containers, plan.instance_type)
        vplan: VariantPlan = await self.deps.fleets.plan_variant(dv)
        for env in (vplan.environment, *(c.environment for c in vplan.containers)):
            env.update(plan.environment)
            env.update(batch_environment(plan))
        self.names = tuple(c.name for c in vplan.containers)
        if self.deps.startup_timeout_s is not None:
            vplan.startup_timeout = self.deps.startup_timeout_s
        starts = [
            asyncio.ensure_future(
                self.deps.fleets.start_ready(self.job.name, vplan, self.deps.logs_dir)
            )
            for _ in range(count)
        ]
        try:
            results = await asyncio.gather(*starts, return_exceptions=True)
        except BaseException:
            for t in starts:
                t.cancel()
            results = await asyncio.gather(*starts, return_exceptions=True)
            self.instances += [r for r in results if isinstance(r, Instance)]
            raise
        self.instances += [r for r in results if isinstance(r, Instance)]
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _stop_instances(self) -> None:
        if self.instances:
            grace = self.deps.stop_grace_s
            await asyncio.shield(self.deps.fleets.stop(self.instances, grace))
            self.instances = []

    async def _params(self) -> BatchParams:
        pool = UpstreamPool(self.instances[0].address, name=self.instances[0].instance_id)
        try:
            answer = await _call(
                pool, pool.head(b"GET", b"/execution-parameters", [], 0), b"", EXEC_PARAMS_TIMEOUT_S
            )
            container = parse_execution_parameters(answer.status, answer.body)
        except UpstreamError:
            container = {}
        finally:
            await pool.close()
        params = effective(self.plan, container)
        log.info("transform job %s: %s", self.job.name, params)
        return params

    # --- files ----------------------------------------------------------------------------

    async def _transform(self, files: list[InputFile], params: BatchParams) -> None:
        workers = [
            _Worker(
                i,
                pool_for(published_instance(i, SERIAL, self.names)),
                asyncio.Semaphore(params.max_concurrent),
                asyncio.Semaphore(2 * params.max_concurrent),
            )
            for i in self.instances
        ]
        for worker, indexes in zip(workers, assign(len(files), len(workers)), strict=True):
            worker.files = [files[i] for i in indexes]
        try:
            async with asyncio.TaskGroup() as group:  # a bug in one cancels the others
                for w in workers:
                    queue = deque(w.files)
                    for _ in range(params.max_concurrent):
                        group.create_task(self._file_loop(w, queue, params))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        finally:
            await asyncio.gather(*(w.pool.close() for w in workers))

    async def _file_loop(
        self, worker: _Worker, queue: deque[InputFile], params: BatchParams
    ) -> None:
        while queue:
            item = queue.popleft()
            try:
                await self._file(worker, item, params)
            except FileFailed as exc:
                self.failures.append(f'Input file "{item.uri}" failed: {exc}')
                log.warning("transform job %s: %s failed: %s", self.job.name, item.uri, exc)
                continue
            self.files_done += 1

    async def _file(self, worker: _Worker, item: InputFile, params: BatchParams) -> int:
        try:
            temp = await asyncio.to_thread(self.outputs.temp, item.rel)
        except OSError as exc:
            raise FileFailed(f"could not write its output: {exc}") from exc
        try:
            if params.limit is None and self._streams(params):
                records = await self._stream_file(worker, item, temp)
            else:
                records = await self._write(worker, item, params, temp)
            await self._publish(item.rel, temp, records)
            return records
        finally:
            await asyncio.to_thread(temp.unlink, True)

    async def _publish(self, rel: str, temp: Path, records: int) -> None:
        """Publish one output and record its file as done, as one step that a stop or a
        shutdown does not split (a restart then neither redoes the file nor misses it): it
        finishes, is remembered in ``published`` (a stop removes it too), and ``run`` waits
        for every one before it returns."""

        def mark(job: TransformJob) -> None:
            if rel not in job.done:
                job.done.append(rel)
            job.records_done += records

        async def publish_and_record() -> None:
            await asyncio.to_thread(self.outputs.publish, rel, temp)
            await self._record(mark)

        future = asyncio.ensure_future(publish_and_record())
        self._publishing.add(future)

        def finished(f: asyncio.Future[None]) -> None:
            self._publishing.discard(f)
            if not f.cancelled() and f.exception() is None:
                self.published.add(rel)

        future.add_done_callback(finished)
        try:
            await asyncio.shield(future)
        except (OSError, StorageError) as exc:
            raise FileFailed(f"could not write its output {self.outputs.url(rel)}: {exc}") from exc

    async def _write(
        self, worker: _Worker, item: InputFile, params: BatchParams, temp: Path
    ) -> int:
        plan = self.plan
        reader = Reader(item, plan, params)
        # Requests in flight or answered, in input order: the task (its answer's parts), the
        # records and the inputs kept for DataProcessing. Not the body: only the request's own
        # task holds it (for a retry), so it is freed once answered, before the answer is
        # written.
        pending: deque[tuple[asyncio.Task[list[bytes]], int, tuple[bytes, ...] | None]] = deque()
        ahead: deque[Batch] = deque()  # read, not sent yet (small batches come several at once)
        records = 0
        emit = Emitter(plan)

        async def write_head() -> None:
            head, sent, inputs = pending.popleft()
            try:
                emit(out, await head, inputs)
            finally:
                worker.budget.release()
            self.records_done += sent

        try:
            with temp.open("wb") as out:
                while True:
                    while pending and (
                        len(pending) >= params.max_concurrent or pending[0][0].done()
                    ):
                        await write_head()
                    if not await _take(worker.budget, pending[0][0] if pending else None):
                        continue  # the head answered first: write it, then try again
                    try:
                        if not ahead:
                            ahead.extend(await asyncio.to_thread(reader.next_many))
                    except BaseException:
                        worker.budget.release()
                        raise
                    if not ahead:
                        worker.budget.release()
                        break
                    batch = ahead.popleft()
                    records += batch.records
                    await worker.slots.acquire()  # released when the request is done
                    task = asyncio.ensure_future(self._send(worker, batch.body))
                    task.add_done_callback(_releaser(worker.slots))
                    pending.append((task, batch.records, batch.inputs))
                    del batch
                while pending:
                    await write_head()
        finally:
            for task, _, _ in pending:
                task.cancel()
                worker.budget.release()
            await asyncio.gather(*(t for t, _, _ in pending), return_exceptions=True)
            await asyncio.to_thread(reader.close)
        return records

    def _headers(self) -> list[tuple[bytes, bytes]]:
        plan = self.plan
        headers = []
        if plan.content_type:
            headers.append((b"Content-Type", plan.content_type.encode("latin-1")))
        if plan.accept:
            headers.append((b"Accept", plan.accept.encode("latin-1")))
        return headers

    def _streams(self, params: BatchParams) -> bool:
        """With no payload limit, whether a file goes as one streamed request: the whole
        object (SplitType None) or all its records (MultiRecord), with no DataProcessing."""
        if self.plan.pipeline:  # each record passes through every container
            return False
        return processor_for(self.plan) is None and (
            self.plan.split == "None" or params.multi_record
        )

    async def _stream_file(self, worker: _Worker, item: InputFile, temp: Path) -> int:
        """The whole file as one chunked request, its answer streamed into ``temp``;
        retried as a whole."""
        plan = self.plan
        reason = ""
        for _ in range(plan.retries + 1):
            source = Stream(item, plan)
            try:
                async with worker.slots:
                    with temp.open("wb") as out:
                        address, headers = worker.instance.address, self._headers()
                        status, error, last = await stream_call(
                            address, headers, source.read, out, plan.timeout_s
                        )
                        if 200 <= status < 300:
                            if plan.assemble_lines and last not in (b"", b"\n"):
                                out.write(b"\n")
                            self.records_done += source.records
                            return source.records
                text = error.decode("utf-8", "replace").strip()
                reason = f"the model answered {status}: {text}"
            except StreamFailed as exc:
                reason = f"the request to the model failed: {exc}"
            finally:
                await asyncio.to_thread(source.close)
        attempts = plan.retries + 1
        raise FileFailed(f"{reason} (after {attempts} attempt{'s' * (attempts > 1)})")

    async def _send(self, worker: _Worker, body: bytes | bytearray) -> list[bytes]:
        """One request, retried; the answer's body as the parts it arrived in (not joined:
        they are written out one by one)."""
        plan = self.plan
        headers = self._headers()
        # A large bytearray body (records_io._line_blocks) goes as a one-part payload: the
        # pool hands the parts of a list to transport.writelines, which takes any buffer, so
        # it is written uncopied (hence the cast).
        payload: Payload = body if isinstance(body, bytes) else [cast(bytes, body)]
        reason = ""
        for _ in range(plan.retries + 1):
            pool = worker.pool
            head = pool.head(b"POST", b"/invocations", headers, len(body))
            try:
                answer = await _call(pool, head, payload, plan.timeout_s)
            except UpstreamError as exc:
                reason = f"the request to the model failed: {exc.reason}"
                continue
            if 200 <= answer.status < 300:
                return answer.parts
            text = answer.body[:_ERROR_TEXT_MAX].decode("utf-8", "replace").strip()
            who = container_of(answer)
            model = "the model" if who == PRIMARY else f"container {who}"
            reason = f"{model} answered {answer.status}: {text}"
        attempts = plan.retries + 1
        raise FileFailed(f"{reason} (after {attempts} attempt{'s' * (attempts > 1)})")

    async def _record(self, change: Callable[[TransformJob], None]) -> None:
        await asyncio.to_thread(update_job, self.deps.fleets.store, self.job.name, change)


async def _take(budget: asyncio.Semaphore, head: asyncio.Future[Any] | None) -> bool:
    """A token of ``budget``: True once taken; False when ``head`` (this file's oldest request)
    answered first, so that its caller writes it out (and frees a token) instead of waiting
    on tokens that its own answers hold."""
    if head is None or not budget.locked():
        await budget.acquire()
        return True
    acquire: asyncio.Future[Any] = asyncio.ensure_future(budget.acquire())
    waits: set[asyncio.Future[Any]] = {acquire, head}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not acquire.done():
            acquire.cancel()
    me = asyncio.current_task()
    try:
        await acquire
    except asyncio.CancelledError:
        if me is not None and me.cancelling():
            raise  # this job was stopped
        return False
    return True


def _releaser(slots: asyncio.Semaphore) -> Callable[[asyncio.Task[list[bytes]]], None]:
    """Gives a request's slot back when its task ends, also if it was cancelled unstarted."""

    def release(_task: asyncio.Task[list[bytes]]) -> None:
        slots.release()

    return release


async def _call(pool: UpstreamPool, head: bytes, body: Payload, timeout: float) -> UpstreamResponse:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[UpstreamResponse] = loop.create_future()

    def done(result: UpstreamResponse | UpstreamError) -> None:
        if future.done():
            return
        if isinstance(result, UpstreamError):
            future.set_exception(result)
        else:
            future.set_result(result)

    pool.send(head, body, timeout, done)
    return await future
