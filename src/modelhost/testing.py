"""A pytest plugin for your own test suites: real modelhost servers, real models.

Installed with the package (entry point ``pytest11``), it gives:

- the fixture ``modelhost_server``: a ``modelhost serve`` process on a free 127.0.0.1 port with
  a temporary data directory, stopped (with every instance it started) after the test. For the
  test's duration the environment points boto3, the AWS CLI and the SageMaker SDK at it —
  ``AWS_ENDPOINT_URL_SAGEMAKER``, ``..._SAGEMAKER_RUNTIME``, ``..._STS``, ``..._CLOUDWATCH``,
  ``..._CLOUDWATCH_LOGS``, ``..._S3`` (the embedded S3 server, when it runs),
  ``SAGEMAKER_USER_CONFIG_OVERRIDE`` — with test credentials and region, so code under test
  needs no ``endpoint_url``::

      def test_deploy(modelhost_server):
          sm = boto3.client("sagemaker")        # talks to modelhost
          ...

  Server settings go in a marker: ``@pytest.mark.modelhost(env={"MODELHOST_EMBEDDED_S3":
  "false"})`` (any ``MODELHOST_*`` setting; the test's own environment is passed on too).
- the fixture ``modelhost_session_server``: one server for the whole session, the environment
  pointed at it from its first use to the end of the session; its settings come from the
  fixture ``modelhost_session_env`` (override it in ``conftest.py``).
- :func:`serve`, a context manager for a server at any other scope (a module's fixture, a
  script), and :class:`ModelhostServer` itself (``start()``/``stop()``, or ``with``), which
  can be subclassed for a suite's own helpers (this project's tests do).

A server dies with the process that started it: on Linux it gets SIGTERM when that thread
exits, however it exits (``PR_SET_PDEATHSIG``; start it from the thread that outlives it, the
main thread for fixtures), so a pytest killed with SIGKILL leaves no ``modelhost serve``
behind; elsewhere the servers still running are stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pytest

from modelhost.children import die_with_parent
from modelhost.sdkconfig import FILE_NAME as SDK_CONFIG
from modelhost.storage.embedded import client_endpoint

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3
POLL_S = 0.05
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
SERVICES = ("SAGEMAKER", "SAGEMAKER_RUNTIME", "STS", "CLOUDWATCH", "CLOUDWATCH_LOGS")
# Variables that would point clients elsewhere (or at real AWS): unset while a server's
# environment is in force.
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
# What a server's environment sets: not passed on to another server started meanwhile.
POINTERS = (*(f"AWS_ENDPOINT_URL_{s}" for s in (*SERVICES, "S3")), "SAGEMAKER_USER_CONFIG_OVERRIDE")


class PortTaken(RuntimeError):
    """Another process took the port between picking it and the server binding it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ModelhostServer:
    """A ``modelhost serve`` process on 127.0.0.1 with its own data directory: ``start()``
    (waits until it answers; a port taken meanwhile gets a fresh one), ``stop()``; as a context
    manager, started on entry (unless running already) and stopped on exit. ``start()`` after
    ``stop()`` restarts it on the same port and data directory. Settings (``MODELHOST_*``) go
    in ``env``, over this process's environment and the class's ``defaults``."""

    defaults: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self, data_dir: Path, port: int | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.env: dict[str, str] = dict(env or {})
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.s3_url: str | None = None  # the embedded S3 server's, once started (if it runs)
        self._log_start = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def environment(self) -> dict[str, str]:
        """The variables that point AWS clients at this server."""
        env = {f"AWS_ENDPOINT_URL_{s}": self.url for s in SERVICES}
        if self.s3_url:
            env["AWS_ENDPOINT_URL_S3"] = self.s3_url
        env["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(self.data_dir / SDK_CONFIG)
        return env | CREDENTIALS | {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` pointed at this server (S3: its S3 server)."""
        import boto3

        url = self.url
        if service == "s3":
            if self.s3_url is None:
                raise RuntimeError(f"the server at {self.url} runs no embedded S3 server")
            url = self.s3_url
        make: Any = boto3.client  # any service name: boto3-stubs types each one separately
        return make(
            service,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            **kwargs,
        )

    def log(self) -> str:
        """The server's log (every start of it on this data directory)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def start(self) -> ModelhostServer:
        """Start ``modelhost serve`` and wait until it answers."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._launch()
                self._wait_ready()
            except PortTaken:
                self.stop()
                if attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()
                continue
            except BaseException:
                self.stop()
                raise
            self.s3_url = client_endpoint(self.data_dir)
            return self
        raise AssertionError("unreachable")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Send ``sig`` (SIGTERM: the server stops its instances and exits) and wait; SIGKILL
        to its process group if it has not exited within ``timeout``. Its exit status (None:
        never started)."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait(KILL_TIMEOUT_S)
        _running.discard(self)
        return proc.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> ModelhostServer:
        return self if self.running else self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if k not in POINTERS}
        env = {**self.defaults, **inherited, **self.env}
        env |= {
            "MODELHOST_DATA_DIR": str(self.data_dir),
            "MODELHOST_HOST": "127.0.0.1",
            "MODELHOST_PORT": str(self.port),
        }
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelhost.cli.main", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: Ctrl-C reaches pytest, whose teardown stops it; a
                # stop that times out kills the group.
                start_new_session=True,
                preexec_fn=_dies_with(os.getpid()),
            )
        _running.add(self)

    def _this_start_log(self) -> str:
        return self.log()[self._log_start :]

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self._this_start_log()
                if "cannot listen on" in log:
                    raise PortTaken(log[-4000:])
                raise RuntimeError(f"modelhost serve exited early:\n{log[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(POLL_S)
        raise RuntimeError(
            f"modelhost serve not ready in {START_TIMEOUT_S} s:\n{self._this_start_log()[-4000:]}"
        )


def _dies_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, between fork and exec
        die_with_parent()
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


_running: set[ModelhostServer] = set()


@atexit.register
def _stop_the_rest() -> None:
    """Servers still running when the interpreter exits (a run interrupted past its
    fixtures' teardown): stopped, where no PR_SET_PDEATHSIG would do it."""
    for server in list(_running):
        server.stop(timeout=KILL_TIMEOUT_S)


def start_server(data_dir: Path, env: Mapping[str, str] | None = None) -> ModelhostServer:
    """Start ``modelhost serve`` on a free loopback port and wait until it answers."""
    return ModelhostServer(data_dir, env=env).start()


@contextlib.contextmanager
def pointed_at(server: ModelhostServer) -> Iterator[None]:
    """Point this process's environment (boto3, the AWS CLI, the SageMaker SDK) at ``server``
    while the block runs; the variables are restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        _point(patch, server)
        yield


def _point(patch: pytest.MonkeyPatch, server: ModelhostServer) -> None:
    for name in CLEARED:
        patch.delenv(name, raising=False)
    for name, value in server.environment.items():
        patch.setenv(name, value)


@contextlib.contextmanager
def serve(
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    environment: bool = False,
) -> Iterator[ModelhostServer]:
    """A running server for the block (any scope: a session's or a module's fixture, a
    script), stopped with its instances at the end. ``data_dir`` None: a temporary directory,
    removed afterwards. ``environment``: point this process's environment at it meanwhile
    (:func:`pointed_at`)."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            temp = tempfile.TemporaryDirectory(prefix="modelhost-", ignore_cleanup_errors=True)
            data_dir = Path(stack.enter_context(temp))
        server = stack.enter_context(ModelhostServer(data_dir, env=env))
        if environment:
            stack.enter_context(pointed_at(server))
        yield server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "modelhost(env): settings (MODELHOST_* variables) for the modelhost_server fixture",
    )


@pytest.fixture
def modelhost_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModelhostServer]:
    """A modelhost server of the test's own, and the environment pointing AWS clients at it."""
    marker = request.node.get_closest_marker("modelhost")
    env: dict[str, str] = dict(marker.kwargs.get("env", {})) if marker is not None else {}
    with ModelhostServer(tmp_path_factory.mktemp("modelhost"), env=env) as server:
        _point(monkeypatch, server)
        yield server


@pytest.fixture(scope="session")
def modelhost_session_env() -> dict[str, str]:
    """Settings (``MODELHOST_*``) for ``modelhost_session_server``: override this fixture in
    your ``conftest.py``."""
    return {}


@pytest.fixture(scope="session")
def modelhost_session_server(
    tmp_path_factory: pytest.TempPathFactory, modelhost_session_env: dict[str, str]
) -> Iterator[ModelhostServer]:
    """One modelhost server for the whole session; the environment points AWS clients at it
    from the first test that uses it to the end of the session."""
    data_dir = tmp_path_factory.mktemp("modelhost-session")
    with serve(data_dir, modelhost_session_env, environment=True) as server:
        yield server
