"""`python -m modelhost.runtime zygote`: a model-server parent that has already imported what
model servers need, and forks a ready-to-load server process on request.

Starting a fresh Python and importing numpy and scikit-learn costs about a second on a small
VM, before any model is loaded; a fork of a process that did it already costs a few
milliseconds (docs/benchmarks.md, "Cold start"). The modelhost server starts one zygote and
asks it for built-in model server instances (backends/zygote.py); everything else (BYO
executables, containers, instances whose environment changes what Python imports) is started
as before.

Protocol, one JSON object per line on the stream socket inherited as fd ``--fd``:
  zygote -> server   {"ready": true}                      once the imports are done
  server -> zygote   {"spawn": {"env", "cwd", "log", "cpus", "memory"}}
  zygote -> server   {"pid": N} | {"error": "why"}         the answer to each spawn, in order
  zygote -> server   {"exit": N, "status": S}              a child ended (S as Popen.returncode)
The zygote dies with the server (PR_SET_PDEATHSIG), and its children with it.

A child is what ``python -m modelhost.runtime serve`` would be: its own session (process
group), stdout and stderr to the log, the cwd and environment it was given (the imports the
zygote made are kept: only instances whose environment does not change them come here), the CPU
affinity and address-space limit of its instance type, thread pools sized by its
OMP_NUM_THREADS (threadpoolctl), numpy's global random state reseeded (Python's ``random``
reseeds itself after a fork).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

from modelhost.children import die_with_parent

# Imported once in the zygote, shared by every child (copy-on-write): the built-in server and
# the frameworks the demo and most sklearn models need. A module that is not installed is
# skipped. MODELHOST_ZYGOTE_PRELOAD replaces the list (comma-separated).
DEFAULT_PRELOAD = (
    "modelhost.runtime.__main__",
    "uvloop",
    "numpy",
    "scipy",
    "joblib",
    "sklearn",
    "sklearn.base",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "threadpoolctl",
)
PRELOAD_ENV = "MODELHOST_ZYGOTE_PRELOAD"


def preload(names: list[str]) -> list[str]:
    """Import ``names``; the ones that imported."""
    done = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # not installed, or broken: its instances import it themselves
            continue
        done.append(name)
    return done


def main(fd: int) -> int:
    die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raw = os.environ.get(PRELOAD_ENV)
    names = [n.strip() for n in raw.split(",") if n.strip()] if raw else list(DEFAULT_PRELOAD)
    preload(names)
    control = socket.socket(fileno=fd)
    Zygote(control).run()
    return 0


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector (wakeup fd)
        self.send({"ready": True})
        with selectors.DefaultSelector() as sel:
            sel.register(self.control, selectors.EVENT_READ, "control")
            sel.register(self.wake_r, selectors.EVENT_READ, "wake")
            while True:
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(self.wake_r, 512)
                    elif not self.read():
                        return  # the server closed the socket: it is gone
                self.reap()

    def read(self) -> bool:
        data = self.control.recv(65536)
        if not data:
            return False
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.handle(json.loads(line))
        return True

    def handle(self, message: dict[str, Any]) -> None:
        try:
            pid = self.fork(message["spawn"])
        except Exception as exc:  # fork failed (EAGAIN, ENOMEM): the server falls back
            self.send({"error": f"{type(exc).__name__}: {exc}"})
            return
        self.children.add(pid)
        self.send({"pid": pid})

    def reap(self) -> None:
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped already: its status is lost
                done, status = pid, 255 << 8
            if done == 0:
                continue
            self.children.discard(pid)
            self.send({"exit": pid, "status": _returncode(status)})

    def send(self, message: dict[str, Any]) -> None:
        self.control.sendall(json.dumps(message).encode() + b"\n")

    def fork(self, spawn: dict[str, Any]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            code = 1
            try:
                self.become_child(spawn)
                from modelhost.runtime.__main__ import serve

                code = serve(os.environ)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        return pid

    def become_child(self, spawn: dict[str, Any]) -> None:
        """What Popen(start_new_session=True, preexec_fn=backends.local._limits) and the
        server's environment give a freshly started instance."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        self.control.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.setsid()
        die_with_parent()
        if spawn.get("cpus"):
            os.sched_setaffinity(0, spawn["cpus"])
        if spawn.get("memory"):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_AS, (spawn["memory"], spawn["memory"]))
        log = os.open(spawn["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.chdir(spawn["cwd"])
        os.environ.clear()
        os.environ.update(spawn["env"])
        _fresh_state(spawn["env"])


def _fresh_state(env: dict[str, str]) -> None:
    """What a new interpreter would have had: numpy's global random state from the OS's
    entropy, native thread pools of the instance's size."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    threads = env.get("OMP_NUM_THREADS", "")
    pools = sys.modules.get("threadpoolctl")
    if pools is not None and threads.isdigit():
        with contextlib.suppress(Exception):
            pools.threadpool_limits(int(threads))


def _returncode(status: int) -> int:
    """A wait status as Popen.returncode has it: the exit code, or -signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
