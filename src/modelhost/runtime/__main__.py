"""`python -m modelhost.runtime serve`: load the model, then serve it.

Environment (the SageMaker container variables plus a few of modelhost's own):
  MODELHOST_MODEL_DIR                   model directory (default /opt/ml/model)
  MODELHOST_BIND_HOST                   listen address (default 127.0.0.1)
  SAGEMAKER_BIND_TO_PORT                listen port (default 8080)
  MODELHOST_MAX_BODY_BYTES              largest request body (default 100 MiB)
  SAGEMAKER_PROGRAM                     user module in <model_dir>/code (default inference.py)
  SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT  response type for a missing or */* Accept

The model loads before the socket opens; when loading fails the process prints the traceback
and, last, one line saying why, then exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Mapping, Sequence

from modelhost.runtime.codecs import JSON
from modelhost.runtime.handlers import HandlerOptions, ModelLoadError, load_handler
from modelhost.runtime.server import DEFAULT_MAX_BODY_BYTES, ServerOptions, run

PREFIX = "modelhost.runtime:"


class ConfigError(ValueError):
    pass


def handler_options(env: Mapping[str, str]) -> HandlerOptions:
    return HandlerOptions(
        model_dir=env.get("MODELHOST_MODEL_DIR") or "/opt/ml/model",
        program=env.get("SAGEMAKER_PROGRAM") or None,
        default_accept=env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON,
    )


def server_options(env: Mapping[str, str]) -> ServerOptions:
    return ServerOptions(
        host=env.get("MODELHOST_BIND_HOST") or "127.0.0.1",
        port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080),
        max_body_bytes=_int(env, "MODELHOST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
    )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def serve(env: Mapping[str, str]) -> int:
    try:
        h_options, s_options = handler_options(env), server_options(env)
    except ConfigError as err:
        _say(f"bad configuration: {err}")
        return 1
    try:
        handler = load_handler(h_options)
    except ModelLoadError as err:
        traceback.print_exception(err.cause, file=sys.stderr)
        _say(str(err))
        return 1
    try:
        run(handler, s_options, lambda host, port: _say(f"serving on http://{host}:{port}"))
    except OSError as err:
        _say(f"cannot listen on {s_options.host}:{s_options.port}: {err}")
        return 1
    _say("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelhost.runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["serve"], help="serve the model in the model dir")
    parser.parse_args(argv)
    return serve(os.environ)


if __name__ == "__main__":
    sys.exit(main())
