"""DataProcessing: InputFilter, JoinSource=Input and OutputFilter, per record, for CSV and JSON
(jsonpath-ng evaluates the filters).

A CSV record is its row as an array of columns; a JSON record is the parsed value. Input
filter -> the model -> join (CSV: the input row with the output's columns appended; a JSON
object: a ``SageMakerOutput`` key added; other JSON: ``{"SageMakerInput", "SageMakerOutput"}``)
-> output filter. As SageMaker's documentation does, a slice's end is inclusive: ``$[1:4]`` is
columns 2 to 5.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonpath_ng.parser import parse as jsonpath_parse

_SLICE = re.compile(r"\[\s*(-?\d*)\s*:\s*(-?\d+)\s*\]")
_NAMES = re.compile(r"^\$\[\s*'[^']*'(\s*,\s*'[^']*')*\s*\]$")


class FilterError(Exception):
    """A filter that does not parse, or a record it cannot apply to."""


def _inclusive(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        end = int(m.group(2))
        return f"[{m.group(1)}:]" if end == -1 else f"[{m.group(1)}:{end + 1}]"

    return _SLICE.sub(repl, expr)


class JsonPathFilter:
    def __init__(self, expr: str | None) -> None:
        self.expr = expr or "$"
        self.identity = self.expr.strip() == "$"
        try:
            self._path = None if self.identity else jsonpath_parse(_inclusive(self.expr))
        except Exception as exc:  # jsonpath-ng raises its lexer and parser errors, and others
            raise FilterError(f"{self.expr!r} is not a JSONPath expression: {exc}") from exc

    def __call__(self, value: Any, *, many: bool) -> Any:
        """The selected value; ``many``: always a list (CSV columns)."""
        if self.identity or self._path is None:
            return value
        matches = self._path.find(value)
        if isinstance(value, dict) and _NAMES.match(self.expr.strip()):
            return {str(m.path): m.value for m in matches}  # $['id','SageMakerOutput']
        found = [m.value for m in matches]
        if many or len(found) != 1 or self._selects_many():
            return found
        return found[0]

    def _selects_many(self) -> bool:
        return any(c in self.expr for c in ("*", ",", ":"))


def check(expr: str | None) -> None:
    """Raise FilterError when ``expr`` is not a usable JSONPath."""
    JsonPathFilter(expr)


@dataclass
class Processor:
    input_filter: JsonPathFilter
    output_filter: JsonPathFilter
    join: bool
    csv_in: bool
    csv_out: bool

    @classmethod
    def build(
        cls,
        input_filter: str | None,
        output_filter: str | None,
        join: bool,
        content_type: str | None,
        accept: str | None,
    ) -> Processor:
        csv_in = "csv" in (content_type or "")
        return cls(
            JsonPathFilter(input_filter),
            JsonPathFilter(output_filter),
            join,
            csv_in,
            "csv" in (accept or content_type or ""),
        )

    def filter_input(self, record: bytes) -> bytes:
        if self.input_filter.identity:
            return record
        value = self._parse(record, self.csv_in)
        return self._dump(self.input_filter(value, many=self.csv_in), self.csv_in)

    def output(self, inputs: list[bytes], answer: bytes) -> bytes:
        """The records to write for one request's inputs and the model's answer: one line per
        record."""
        outs = answer.splitlines() if len(inputs) > 1 else [answer.rstrip(b"\r\n")]
        if len(outs) != len(inputs):
            raise FilterError(
                f"the model answered {len(outs)} records for {len(inputs)} inputs, so they "
                "cannot be joined or filtered record by record"
            )
        lines = []
        for source, out in zip(inputs, outs, strict=True):
            value = self._parse(out, self.csv_out)
            if self.join:
                value = self._joined(self._parse(source, self.csv_in), value)
            csv_joined = self.csv_out and (not self.join or self.csv_in)
            lines.append(self._dump(self.output_filter(value, many=csv_joined), csv_joined))
        return b"".join(line + b"\n" for line in lines)

    def _joined(self, source: Any, out: Any) -> Any:
        if self.csv_in and self.csv_out:
            return [*source, *(out if isinstance(out, list) else [out])]
        if isinstance(source, dict):
            return {**source, "SageMakerOutput": out}
        return {"SageMakerInput": source, "SageMakerOutput": out}

    @staticmethod
    def _parse(data: bytes, as_csv: bool) -> Any:
        text = data.decode("utf-8")
        try:
            return next(csv.reader([text])) if as_csv else json.loads(text)
        except (ValueError, StopIteration) as exc:
            kind = "CSV" if as_csv else "JSON"
            raise FilterError(f"a record is not {kind}: {text[:100]!r}") from exc

    @staticmethod
    def _dump(value: Any, as_csv: bool) -> bytes:
        if as_csv:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow(
                value if isinstance(value, list) else [value]
            )
            return buf.getvalue().encode()
        return json.dumps(value, separators=(",", ":")).encode()
