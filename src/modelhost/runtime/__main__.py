"""`python -m modelhost.runtime serve`: load the model, then serve it.

Environment (the SageMaker container variables plus a few of modelhost's own):
  MODELHOST_MODEL_DIR                   model directory (default /opt/ml/model)
  MODELHOST_BIND_HOST                   listen address (default 127.0.0.1)
  SAGEMAKER_BIND_TO_PORT                listen port (default 8080)
  MODELHOST_MAX_BODY_BYTES              largest request body (default 100 MiB)
  SAGEMAKER_PROGRAM                     user module in the code dir (default inference.py)
  SAGEMAKER_SUBMIT_DIRECTORY            the code dir: a local dir, /opt/ml/model/code or an
                                        s3://.../sourcedir.tar.gz (default <model dir>/code)
  SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT  response type for a missing or */* Accept
  SAGEMAKER_CONTAINER_LOG_LEVEL         10/20/30/40/50 or DEBUG/INFO/... (default INFO)
  SAGEMAKER_MODEL_SERVER_WORKERS        model server processes on the port (default 1)
  SAGEMAKER_MODEL_SERVER_TIMEOUT        seconds per request (default 60; parsed, for the router)
  MODELHOST_ENVS_DIR                    shared cache of code/requirements.txt installs
  MODELHOST_OBJECTS_DIR, MODELHOST_S3_ENDPOINT_URL
                                        the object store an s3:// submit directory comes from
  MODELHOST_S3_ACCESS_KEY_ID, MODELHOST_S3_SECRET_ACCESS_KEY
                                        its credentials (default: the AWS chain's)
  MODELHOST_FRAMEWORK                   framework (or image URI) the default model_fn tries first
  MODELHOST_BLOCK_IMPORTS               modules to treat as not installed (tests)
  SAGEMAKER_MULTI_MODEL                 true: load no model at start; serve the MMS API
                                        (runtime/multimodel.py) and load models on request

The model loads before the socket opens; when anything fails the process prints the traceback
and, last, one line saying why, then exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from modelhost.runtime import multimodel, server
from modelhost.runtime.batching import BatchConfigError, BatchPolicy
from modelhost.runtime.codecs import JSON
from modelhost.runtime.handlers import HandlerOptions, ModelHandler, ModelLoadError, load_handler
from modelhost.runtime.loaders import huggingface
from modelhost.runtime.loaders._imports import BLOCK_ENV, FrameworkNotInstalled, block_imports
from modelhost.runtime.multimodel import MultiModels
from modelhost.runtime.requirements import (
    RequirementsError,
    activate,
    ensure_requirements,
    envs_dir,
)
from modelhost.runtime.server import DEFAULT_MAX_BODY_BYTES, ServerOptions
from modelhost.runtime.sourcedir import SourceDirError, resolve_code_dir
from modelhost.runtime.workers import reserve_port, reuse_port_loop_factory, supervise

PREFIX = "modelhost.runtime:"
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
DEFAULT_MODEL_SERVER_TIMEOUT_S = 60

log = logging.getLogger("modelhost.runtime")


class ConfigError(ValueError):
    pass


def handler_options(env: Mapping[str, str]) -> HandlerOptions:
    return HandlerOptions(
        model_dir=env.get("MODELHOST_MODEL_DIR") or "/opt/ml/model",
        program=env.get("SAGEMAKER_PROGRAM") or None,
        default_accept=env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON,
    )


def server_options(env: Mapping[str, str]) -> ServerOptions:
    try:
        batching = BatchPolicy.from_env(env)
    except BatchConfigError as err:
        raise ConfigError(str(err)) from None
    return ServerOptions(
        host=env.get("MODELHOST_BIND_HOST") or "127.0.0.1",
        port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080),
        max_body_bytes=_int(env, "MODELHOST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        batching=batching,
        unix_path=env.get("MODELHOST_UNIX_SOCKET") or None,
    )


def worker_count(env: Mapping[str, str]) -> int:
    count = _int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1)
    if count < 1:
        raise ConfigError(f"SAGEMAKER_MODEL_SERVER_WORKERS must be at least 1, got {count}")
    return count


def model_server_timeout_s(env: Mapping[str, str]) -> int:
    """SAGEMAKER_MODEL_SERVER_TIMEOUT: seconds a request may take (the toolkits' default 60)."""
    timeout = _int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_MODEL_SERVER_TIMEOUT_S)
    return timeout or DEFAULT_MODEL_SERVER_TIMEOUT_S


def log_level(env: Mapping[str, str]) -> int:
    """SAGEMAKER_CONTAINER_LOG_LEVEL as a logging level: a number or a level name."""
    raw = (env.get("SAGEMAKER_CONTAINER_LOG_LEVEL") or "").strip()
    if not raw:
        return logging.INFO
    if raw.isdigit():
        return int(raw)
    level = LOG_LEVELS.get(raw.upper())
    if level is None:
        raise ConfigError(
            f"SAGEMAKER_CONTAINER_LOG_LEVEL must be a number (10, 20, 30, 40) or a level name "
            f"(DEBUG, INFO, WARNING, ERROR), got {raw!r}"
        )
    return level


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


def _prepare(env: Mapping[str, str]) -> tuple[HandlerOptions, ServerOptions, int]:
    """Everything before the model loads; raises ConfigError, SourceDirError, RequirementsError."""
    level = log_level(env)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(level)
    h_options, s_options, workers = handler_options(env), server_options(env), worker_count(env)
    log.debug("model server timeout %d s", model_server_timeout_s(env))
    block_imports(env.get(BLOCK_ENV))
    huggingface.set_offline(os.environ)
    cache = envs_dir(env)
    code_dir = resolve_code_dir(env, Path(h_options.model_dir).absolute(), cache)
    installed = ensure_requirements(code_dir, cache)
    if installed is not None:
        if env.get(REQUIREMENTS_ACTIVE_ENV) != str(installed):
            _restart_with(installed)  # does not return
        activate(installed)
    return dataclasses.replace(h_options, code_dir=str(code_dir)), s_options, workers


REQUIREMENTS_ACTIVE_ENV = "MODELHOST_REQUIREMENTS_ACTIVE"


def _restart_with(installed: Path) -> None:
    """Start this server again with the installed requirements first on the path. numpy and
    friends are already imported by now, so a version pinned in requirements.txt would
    otherwise be installed but never loaded (SageMaker installs before the server starts)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(installed), env.get("PYTHONPATH")) if p)
    env[REQUIREMENTS_ACTIVE_ENV] = str(installed)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "modelhost.runtime", "serve"], env)


def serve(env: Mapping[str, str]) -> int:
    try:
        h_options, s_options, workers = _prepare(env)
    except ConfigError as err:
        _say(f"bad configuration: {err}")
        return 1
    except (SourceDirError, RequirementsError) as err:
        _say(str(err))
        return 1
    if workers > 1 and multimodel.enabled(os.environ):
        _say("SAGEMAKER_MODEL_SERVER_WORKERS ignored: a multi-model server has one process")
        workers = 1  # every worker would hold its own models: a load would reach one of them
    if workers == 1:
        return load_and_serve(h_options, s_options)
    # Workers share the TCP port (SO_REUSEPORT); a Unix socket path can have only one owner.
    s_options = dataclasses.replace(s_options, unix_path=None)
    try:
        reserved = reserve_port(s_options.host, s_options.port)
    except OSError as err:
        _say(f"cannot listen on {s_options.host}:{s_options.port}: {err}")
        return 1
    s_options = dataclasses.replace(s_options, port=reserved.getsockname()[1])
    loop_factory = reuse_port_loop_factory()
    with reserved:
        return supervise(
            workers,
            lambda index, ready, fail: load_and_serve(
                h_options, s_options, ready, fail, loop_factory
            ),
            _say,
        )


def load_and_serve(
    h_options: HandlerOptions,
    s_options: ServerOptions,
    ready: Callable[[], None] | None = None,
    fail: Callable[[str], None] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Load the model and serve it until SIGTERM (one process); the exit status."""
    handler: ModelHandler | MultiModels
    try:
        if multimodel.enabled(os.environ):
            handler = MultiModels(h_options.default_accept, h_options.program)
        else:
            handler = load_handler(h_options)
    except ModelLoadError as err:
        traceback.print_exception(err.cause, file=sys.stderr)
        # a missing framework: its message alone says what to do
        why = str(err.cause) if isinstance(err.cause, FrameworkNotInstalled) else str(err)
        _say(why)
        if fail is not None:
            fail(why)
        return 1

    def on_ready(host: str, port: int) -> None:
        _say(f"serving on http://{host}:{port} (pid {os.getpid()})")
        if ready is not None:
            ready()

    try:
        if loop_factory is None:
            server.run(handler, s_options, on_ready)
        else:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(server.serve(handler, s_options, on_ready))
    except OSError as err:
        why = f"cannot listen on {s_options.host}:{s_options.port}: {err}"
        _say(why)
        if fail is not None:
            fail(why)
        return 1
    _say("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelhost.runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=["serve", "zygote"],
        help="serve the model in the model dir; or (zygote) fork servers on request",
    )
    parser.add_argument("--fd", type=int, help="zygote: the control socket's descriptor")
    args = parser.parse_args(argv)
    if args.command == "zygote":
        from modelhost.runtime import zygote

        return zygote.main(args.fd)
    return serve(os.environ)


if __name__ == "__main__":
    sys.exit(main())
