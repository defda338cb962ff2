"""The walkers behind ``api.shapes``: botocore shapes compiled into small nodes, an input parser
that checks every modeled constraint and collects AWS-style messages, and an output serializer.

Kept private: callers use ``ServiceShapes`` from ``api/shapes.py``.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any

from modelhost.errors import SerializationException

_INT_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_JAVA_TYPES = {
    "string": "a String",
    "integer": "an Integer",
    "long": "a Long",
    "float": "a Float",
    "double": "a Double",
    "boolean": "a Boolean",
    "timestamp": "a Date",
    "blob": "a ByteBuffer",
    "structure": "a Structure",
    "map": "a Map",
    "list": "a List",
}
MAX_VALUE_CHARS = 100


class Node:
    """One botocore shape, flattened into what validation needs (built once per shape)."""

    __slots__ = (
        "enum",
        "enum_text",
        "key",
        "kind",
        "max",
        "member",
        "members",
        "min",
        "name",
        "pattern",
        "pattern_text",
        "required",
        "value",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.min: int | float | None = None
        self.max: int | float | None = None
        self.enum: frozenset[str] | None = None
        self.enum_text = ""
        self.pattern: re.Pattern[str] | None = None
        self.pattern_text = ""
        # structure: wire name -> (path segment, node); list: member; map: key and value
        self.members: dict[str, tuple[str, Node]] = {}
        self.required: frozenset[str] = frozenset()
        self.member: Node | None = None
        self.key: Node | None = None
        self.value: Node | None = None


# modelhost's documented extensions to SageMaker's patterns, by shape name: model data may also
# be a file:// URL or an absolute local path, and so may a transform job's input and output.
_LOCAL_OR_REMOTE = r"(https|s3)://([^/]+)/?(.*)|file:///.*|/.*"
PATTERN_EXTENSIONS = {
    "Url": _LOCAL_OR_REMOTE,
    "S3ModelUri": _LOCAL_OR_REMOTE,
    "S3Uri": _LOCAL_OR_REMOTE,  # transform jobs' input and output
    # Asynchronous inference: its input and result locations may be local too, and its
    # notification topics may be http(s):// webhooks as well as SNS topic ARNs.
    "InputLocationHeader": _LOCAL_OR_REMOTE,
    "DestinationS3Uri": _LOCAL_OR_REMOTE,
    "SnsTopicArn": r"arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+|https?://[^\s]+",
}


def compile_shape(shape: Any, memo: dict[str, Node]) -> Node:
    """Turn a botocore ``Shape`` into a ``Node``; ``memo`` (by shape name) handles recursion."""
    found = memo.get(shape.name)
    if found is not None:
        return found
    kind = "document" if getattr(shape, "is_document_type", False) else shape.type_name
    node = memo[shape.name] = Node(shape.name, kind)
    meta = shape.metadata
    node.min, node.max = meta.get("min"), meta.get("max")
    if meta.get("enum"):
        node.enum = frozenset(meta["enum"])
        node.enum_text = "[" + ", ".join(meta["enum"]) + "]"
    pattern = PATTERN_EXTENSIONS.get(shape.name, meta.get("pattern"))
    if pattern is not None:
        node.pattern = compile_pattern(pattern)
        node.pattern_text = pattern if pattern.startswith("^") else "^" + pattern
    if kind == "structure":
        node.members = {
            name: (lower_camel(name), compile_shape(member, memo))
            for name, member in shape.members.items()
        }
        node.required = frozenset(shape.required_members)
    elif kind == "list":
        node.member = compile_shape(shape.member, memo)
    elif kind == "map":
        node.key = compile_shape(shape.key, memo)
        node.value = compile_shape(shape.value, memo)
    return node


@cache
def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """Java regexes mostly work in Python; the few that do not are skipped, not enforced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return re.compile(pattern)
        except (re.error, OverflowError, RecursionError):
            return None


def lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


# --- input ---------------------------------------------------------------------------------


class InputParser:
    """Validates and converts one request body. Constraint violations are collected in
    ``errors``; a value of the wrong JSON type stops the walk with ``SerializationException``."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def parse(self, node: Node, value: Any, path: str) -> Any:
        return _PARSERS.get(node.kind, _parse_passthrough)(self, node, value, path)

    def violation(self, value: Any, path: str, constraint: str) -> None:
        shown = "null" if value is None else f"'{render(value)}'"
        self.errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    def check_size(self, node: Node, value: Any, size: float, path: str, what: str) -> None:
        if node.min is not None and size < node.min:
            self.violation(
                value, path, f"Member must have {what} greater than or equal to {number(node.min)}"
            )
        if node.max is not None and size > node.max:
            self.violation(
                value, path, f"Member must have {what} less than or equal to {number(node.max)}"
            )


def _parse_structure(p: InputParser, node: Node, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise mismatch(node, value, path)
    out: dict[str, Any] = {}
    prefix = f"{path}." if path else ""
    for name, (segment, child) in node.members.items():
        item = value.get(name)
        if item is None:
            if name in node.required:
                p.violation(None, prefix + segment, "Member must not be null")
            continue
        out[name] = p.parse(child, item, prefix + segment)
    if len(out) != len(value):
        for name in value:
            if name not in node.members and value[name] is not None:
                where = f"at '{path}'" if path else "in input"
                p.errors.append(
                    f"Unknown parameter '{render(name)}' {where}, must be one of: "
                    + ", ".join(node.members)
                )
    return out


def _parse_list(p: InputParser, node: Node, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise mismatch(node, value, path)
    p.check_size(node, value, len(value), path, "length")
    assert node.member is not None
    child = node.member
    return [p.parse(child, item, f"{path}.{i}.member") for i, item in enumerate(value, 1)]


def _parse_map(p: InputParser, node: Node, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise mismatch(node, value, path)
    p.check_size(node, value, len(value), path, "length")
    assert node.key is not None and node.value is not None
    out: dict[str, Any] = {}
    for key, item in value.items():
        key_errors = InputParser()
        key_errors.parse(node.key, key, path)
        if key_errors.errors:
            constraints = ", ".join(
                e.split("failed to satisfy constraint: ", 1)[1] for e in key_errors.errors
            )
            p.violation(key, path, f"Map keys must satisfy constraint: [{constraints}]")
        if item is not None:
            out[key] = p.parse(node.value, item, f"{path}.{key}")
    return out


def _parse_string(p: InputParser, node: Node, value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise mismatch(node, value, path)
    if node.min is not None or node.max is not None:
        p.check_size(node, value, len(value), path, "length")
    if node.enum is not None and value not in node.enum:
        p.violation(value, path, f"Member must satisfy enum value set: {node.enum_text}")
    if node.pattern is not None and node.pattern.fullmatch(value) is None:
        p.violation(
            value, path, f"Member must satisfy regular expression pattern: {node.pattern_text}"
        )
    return value


def _parse_integer(p: InputParser, node: Node, value: Any, path: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    low, high = _INT_BOUNDS[node.kind]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise mismatch(node, value, path)
    p.check_size(node, value, value, path, "value")
    return value


def _parse_float(p: InputParser, node: Node, value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise mismatch(node, value, path)
    p.check_size(node, value, value, path, "value")
    return float(value)


def _parse_boolean(p: InputParser, node: Node, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise mismatch(node, value, path)
    return value


def _parse_timestamp(p: InputParser, node: Node, value: Any, path: str) -> datetime:
    """Epoch seconds (what botocore sends), a numeric string, or an ISO 8601 string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise mismatch(node, value, path)
    try:
        return _to_datetime(value)
    except (ValueError, OverflowError, OSError):
        raise SerializationException(
            f"Value '{render(value)}' at '{path}' can not be converted to a timestamp"
        ) from None


def _to_datetime(value: float | str) -> datetime:
    if not isinstance(value, str):
        return datetime.fromtimestamp(value, tz=UTC)
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except ValueError:
        parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_blob(p: InputParser, node: Node, value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise mismatch(node, value, path)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException(f"Value at '{path}' is not valid base64") from None
    p.check_size(node, value, len(data), path, "length")
    return data


def _parse_passthrough(p: InputParser, node: Node, value: Any, path: str) -> Any:
    return value


_PARSERS: dict[str, Callable[[InputParser, Node, Any, str], Any]] = {
    "structure": _parse_structure,
    "list": _parse_list,
    "map": _parse_map,
    "string": _parse_string,
    "integer": _parse_integer,
    "long": _parse_integer,
    "float": _parse_float,
    "double": _parse_float,
    "boolean": _parse_boolean,
    "timestamp": _parse_timestamp,
    "blob": _parse_blob,
}


def mismatch(node: Node, value: Any, path: str) -> SerializationException:
    """AWS's Coral text for a JSON value of the wrong type (it names no path; we add one)."""
    where = f" at '{path}'" if path else ""
    if node.kind not in ("structure", "map", "list", "document"):
        if isinstance(value, dict):
            return SerializationException(
                f"Start of structure or map found where not expected{where}"
            )
        if isinstance(value, list):
            return SerializationException(f"Start of list found where not expected{where}")
    expected = _JAVA_TYPES.get(node.kind, node.kind)
    return SerializationException(f"{json_token(value)} can not be converted to {expected}{where}")


def json_token(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE_VALUE" if value else "FALSE_VALUE"
    if isinstance(value, int | float):
        return "NUMBER_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    if isinstance(value, dict):
        return "START_OBJECT"
    return "START_ARRAY" if isinstance(value, list) else "VALUE_NULL"


def render(value: Any) -> str:
    """Java-ish ``toString`` of a JSON value, cut at ``MAX_VALUE_CHARS``."""
    text = _render(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return "null" if value is None else str(value)


def number(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


# --- output --------------------------------------------------------------------------------


def serialize(node: Node, value: Any, path: str) -> Any:
    """Walk ``value`` along ``node`` into JSON-ready data; unknown members are our bug."""
    if value is None:
        return None
    kind = node.kind
    if kind == "structure":
        return _serialize_structure(node, value, path)
    if kind == "list":
        assert node.member is not None
        return [serialize(node.member, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        assert node.value is not None
        return {
            k: serialize(node.value, v, f"{path}.{k}") for k, v in value.items() if v is not None
        }
    if kind == "timestamp" and isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.timestamp()
    if kind == "blob" and isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Enum):
        return value.value
    return value


def _serialize_structure(node: Node, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path or node.name}: expected a dict for {node.name}, got {type(value)}")
    out: dict[str, Any] = {}
    for name, item in value.items():
        entry = node.members.get(name)
        if entry is None:
            raise KeyError(
                f"{path or node.name}: {name!r} is not a member of {node.name}; "
                f"members: {', '.join(node.members)}"
            )
        if item is not None:
            out[name] = serialize(entry[1], item, f"{path}.{name}" if path else name)
    return out
