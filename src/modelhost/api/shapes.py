"""Requests and responses checked against the botocore service model, never a hand copy.

``shapes_for("sagemaker")`` loads the model once per process (about 0.1-0.2 s) and
``ServiceShapes`` compiles each operation's shapes on first use, so a warm
``parse_input("CreateEndpointConfig", ...)`` costs tens of microseconds.

Errors, matching what the real awsJson1.1 services send:
- constraint violations (required, length, range, enum, pattern) and unknown members are
  collected into one ``ValidationException``:
  ``2 validation errors detected: Value null at 'modelName' failed to satisfy constraint: ...``
- a JSON value of the wrong type (``"1"`` for an Integer, a list for a string) is a
  ``SerializationException`` with Coral's text, e.g. ``STRING_VALUE can not be converted to an
  Integer at 'maxResults'``; it stops the walk, as AWS fails deserialization before validation.
- an operation the model lacks is an ``UnknownOperationException``.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import botocore.session

from modelhost.api._validate import InputParser, Node, compile_shape, serialize
from modelhost.errors import SerializationException, UnknownOperationException, ValidationException

__all__ = ["ServiceShapes", "shapes_for"]


class ServiceShapes:
    """One botocore service model, with per-operation input and output walkers."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._operations = frozenset(model.operation_names)
        self._nodes: dict[str, Node] = {}
        self._inputs: dict[str, Node | None] = {}
        self._outputs: dict[str, Node | None] = {}
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The botocore ``ServiceModel`` (the awsQuery wire walks its shapes itself)."""
        return self._model

    @property
    def service_name(self) -> str:
        return str(self._model.service_name)

    @property
    def target_prefix(self) -> str:
        """The ``X-Amz-Target`` prefix: ``SageMaker``, ``AnyScaleFrontendService``."""
        return str(self._model.metadata.get("targetPrefix", ""))

    def operation_names(self) -> set[str]:
        return set(self._operations)

    def has_operation(self, name: str) -> bool:
        return name in self._operations

    def parse_input(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """Validate ``body`` and return it with timestamps as aware datetimes, blobs as bytes."""
        node = self._input_node(operation)
        if not isinstance(body, dict):
            raise SerializationException("Request body must be a JSON object")
        if node is None:
            if any(v is not None for v in body.values()):
                raise ValidationException(f"Operation {operation} takes no input members")
            return {}
        parser = InputParser()
        parsed: dict[str, Any] = parser.parse(node, body, "")
        if parser.errors:
            count = len(parser.errors)
            noun = "error" if count == 1 else "errors"
            raise ValidationException(
                f"{count} validation {noun} detected: " + "; ".join(parser.errors)
            )
        return parsed

    def serialize_output(self, operation: str, result: dict[str, Any]) -> dict[str, Any]:
        """Result -> JSON-ready dict: datetimes to epoch seconds, bytes to base64, None dropped.

        A member the output shape lacks raises ``KeyError``: that is a bug on our side."""
        node = self._output_node(operation)
        if node is None:
            extra = [k for k, v in result.items() if v is not None]
            if extra:
                raise KeyError(f"{operation} has no output members, got {extra}")
            return {}
        out: dict[str, Any] = serialize(node, result, "")
        return out

    def _input_node(self, operation: str) -> Node | None:
        return self._node(operation, self._inputs, "input_shape")

    def _output_node(self, operation: str) -> Node | None:
        return self._node(operation, self._outputs, "output_shape")

    def _node(self, operation: str, nodes: dict[str, Node | None], attr: str) -> Node | None:
        try:
            return nodes[operation]
        except KeyError:
            pass
        if operation not in self._operations:
            raise UnknownOperationException(f"Operation {operation} is not supported.")
        with self._lock:
            shape = getattr(self._model.operation_model(operation), attr)
            node = None if shape is None else compile_shape(shape, self._nodes)
            nodes[operation] = node
        return node


@cache
def shapes_for(service_name: str) -> ServiceShapes:
    """The shapes of ``sagemaker`` or ``application-autoscaling``, loaded once per process."""
    model = botocore.session.get_session().get_service_model(service_name)
    return ServiceShapes(model)
