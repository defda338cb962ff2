"""One input file's side of a transform job: reading it as request bodies (``Reader``, or
``Stream`` for a streamed request) and writing the answers to its output (``Emitter``). Any
failure is a ``FileFailed`` whose message is the file's part of the job's FailureReason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import BinaryIO

from modelhost.jobs.dataprocessing import FilterError, Processor
from modelhost.jobs.files import InputFile
from modelhost.jobs.params import BatchParams
from modelhost.jobs.records_io import BadRecord, Batch, RecordTooLarge, batches, line_groups
from modelhost.jobs.streaming import READ_SIZE
from modelhost.state.transform_jobs import TransformPlan


class FileFailed(Exception):
    """One input file could not be transformed; the message is its part of FailureReason."""


class Emitter:
    """Writes each answer: as it is (AssembleWith None), with a line end (Line), or joined
    and filtered record by record (DataProcessing)."""

    def __init__(self, plan: TransformPlan) -> None:
        self.line_end = plan.assemble_lines
        self.processor = processor_for(plan)

    def __call__(self, out: BinaryIO, parts: list[bytes], inputs: tuple[bytes, ...] | None) -> None:
        """Write one answer, given as the parts it arrived in (written one by one, never
        joined unless DataProcessing reads it whole)."""
        if self.processor is not None and inputs is not None:
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            del parts[:]  # the joined body is the only copy kept
            try:
                out.write(self.processor.output(list(inputs), body))
            except (FilterError, UnicodeDecodeError) as exc:
                raise FileFailed(f"DataProcessing: {exc}") from exc
            return
        for part in parts:
            out.write(part)
        if self.line_end and not _ends_line(parts):
            out.write(b"\n")


def _ends_line(parts: list[bytes]) -> bool:
    """Whether the body in ``parts`` ends with a newline (an empty one does not)."""
    for part in reversed(parts):
        if part:
            return part.endswith(b"\n")
    return False  # an empty answer still gets its line end


def processor_for(plan: TransformPlan) -> Processor | None:
    if not (plan.input_filter or plan.output_filter or plan.join_input):
        return None
    return Processor.build(
        plan.input_filter, plan.output_filter, plan.join_input, plan.content_type, plan.accept
    )


class Stream:
    """An input file read piece by piece for a streamed request, counting its records."""

    def __init__(self, item: InputFile, plan: TransformPlan) -> None:
        self.item = item
        self.plan = plan
        self.lines = plan.split == "Line"
        self._file: BinaryIO | None = None
        self._newlines = 0
        self._last = b""

    @property
    def records(self) -> int:
        if not self.lines:
            return 1
        return self._newlines + (1 if self._last not in (b"", b"\n") else 0)

    async def read(self) -> bytes:
        return await asyncio.to_thread(self._read)

    def _read(self) -> bytes:
        try:
            if self._file is None:
                self._file = self.item.open(self.plan.gzip)
            piece = self._file.read(READ_SIZE)
        except Exception as exc:  # OSError, a corrupt gzip stream, a storage error
            raise FileFailed(f"could not read it: {exc}") from exc
        if piece:
            self._newlines += piece.count(b"\n")
            self._last = piece[-1:]
        return piece

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()


READ_AHEAD_BYTES = 256 * 1024  # small records: several batches per trip to the reading thread
READ_AHEAD_COUNT = 256


class Reader:
    """An input file's batches, read in a worker thread one at a time."""

    def __init__(self, item: InputFile, plan: TransformPlan, params: BatchParams) -> None:
        self.item = item
        self.plan = plan
        self.params = params
        self._file: BinaryIO | None = None
        self._batches: Iterator[Batch] | None = None
        self._processor = processor_for(plan)

    def next(self) -> Batch | None:
        try:
            if self._batches is None:
                self._file = self.item.open(self.plan.gzip)
                multi, limit = self.params.multi_record, self.params.limit
                if self._processor is not None:
                    self._batches = line_groups(
                        self._file, multi, limit, self._processor.filter_input
                    )
                else:
                    self._batches = batches(self._file, self.plan.split, multi, limit)
            return next(self._batches, None)
        except RecordTooLarge as exc:
            raise FileFailed(f"{exc}; raise MaxPayloadInMB or split the input") from exc
        except BadRecord as exc:
            raise FileFailed(str(exc)) from exc
        except (FilterError, UnicodeDecodeError) as exc:
            raise FileFailed(f"DataProcessing InputFilter: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise FileFailed(f"could not read it: {exc}") from exc
        except Exception as exc:  # a storage error, a corrupt gzip stream
            raise FileFailed(f"could not read it: {exc}") from exc

    def next_many(self) -> list[Batch]:
        """The next batches: one, or several small ones (up to READ_AHEAD_BYTES); [] at the
        end. One trip to a thread costs more than splitting a small record."""
        out: list[Batch] = []
        size = 0
        while len(out) < READ_AHEAD_COUNT and size < READ_AHEAD_BYTES:
            batch = self.next()
            if batch is None:
                break
            out.append(batch)
            size += len(batch.body)
        return out

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
