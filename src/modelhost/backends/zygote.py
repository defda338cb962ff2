"""The server's side of the zygote (runtime/zygote.py): a model-server process that has
imported numpy, scikit-learn and the built-in server once, and forks instances on request in
milliseconds instead of a fresh interpreter's second.

``Zygote.spawn`` answers a ``ZygoteChild`` (what the backends need of a ``Popen``: ``pid``,
``poll``, ``wait``, a process group of its own), or None when the zygote cannot serve this
start (not ready yet, gone, or a fork failed): the caller then starts the process as before.
One reader thread takes the zygote's messages: spawn answers, in order, and exit statuses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from modelhost.children import die_with_parent

log = logging.getLogger(__name__)

SPAWN_TIMEOUT_S = 10.0
WAIT_STEP_S = 0.01  # ZygoteChild.wait's poll, for when the zygote died first
# Environment variables that change what an interpreter imports or how: an instance whose
# value differs from the zygote's starts a fresh interpreter instead.
INTERPRETER_VARS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONOPTIMIZE",
    "PYTHONHASHSEED",
    "PYTHONMALLOC",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "MODELHOST_BLOCK_IMPORTS",
    "MODELHOST_ZYGOTE_PRELOAD",
)


class ZygoteChild:
    """An instance process the zygote forked (not this process's child: the zygote reaps it
    and reports its status)."""

    def __init__(self, pid: int, zygote: Zygote) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._zygote = zygote
        self._ended = threading.Event()

    def poll(self) -> int | None:
        if self.returncode is None and self._zygote.gone and not _alive(self.pid):
            self._end(-9)  # the zygote died first, and took this one with it
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended.wait(WAIT_STEP_S) and self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"instance process {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def _end(self, code: int) -> None:
        self.returncode = code
        self._ended.set()


class Zygote:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        """``env``: the zygote's environment (what instances get that does not vary)."""
        self.env = dict(env)
        self.log_path = log_path
        self.gone = False
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._ready = threading.Event()
        self._replies: queue.Queue[ZygoteChild | str] = queue.Queue()
        self._children: dict[int, ZygoteChild] = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self.gone

    def start(self) -> None:
        """Start the zygote (returns at once; it is ready once its imports are done)."""
        ours, theirs = socket.socketpair()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf, contextlib.closing(theirs):
            self._process = subprocess.Popen(
                [sys.executable, "-m", "modelhost.runtime", "zygote", "--fd", str(theirs.fileno())],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._socket = ours
        threading.Thread(target=self._read, name="zygote-reader", daemon=True).start()

    def accepts(self, env: dict[str, str]) -> bool:
        """Whether an instance with environment ``env`` may be forked from this zygote."""
        return all(env.get(k) == self.env.get(k) for k in INTERPRETER_VARS)

    def spawn(
        self, env: dict[str, str], cwd: Path, log_path: Path, cpus: list[int], memory: int
    ) -> ZygoteChild | None:
        if not self.ready or not self.accepts(env) or self._socket is None:
            return None
        message = {
            "spawn": {"env": env, "cwd": str(cwd), "log": str(log_path), "cpus": cpus}
            | {"memory": memory}
        }
        with self._lock:
            try:
                self._socket.sendall(json.dumps(message).encode() + b"\n")
                reply = self._replies.get(timeout=SPAWN_TIMEOUT_S)
            except (OSError, queue.Empty) as exc:
                log.warning("the zygote did not answer (%s); starting instances afresh", exc)
                self.close()
                return None
        if isinstance(reply, str):
            log.warning("the zygote could not fork an instance: %s", reply)
            return None
        return reply

    def close(self) -> None:
        """Stop the zygote (its children get SIGTERM with it: stop them first)."""
        self.gone = True
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)

    def _read(self) -> None:
        sock = self._socket
        assert sock is not None
        buffer = b""
        try:
            while chunk := sock.recv(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._handle(json.loads(line))
        except (OSError, ValueError) as exc:
            log.warning("the zygote's channel broke: %s", exc)
        finally:
            self.gone = True
            self._replies.put("the zygote is gone")
            sock.close()

    def _handle(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            child = self._children.pop(message["exit"], None)
            if child is not None:
                child._end(message["status"])
        elif "pid" in message:
            child = ZygoteChild(message["pid"], self)
            self._children[child.pid] = child
            self._replies.put(child)
        elif "error" in message:
            self._replies.put(str(message["error"]))
        elif message.get("ready"):
            log.info("the zygote is ready: instances start by fork")
            self._ready.set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
