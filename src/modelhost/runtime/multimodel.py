"""The built-in server as a multi-model server: the MMS container API (CONTRACT.md section 4).

With ``SAGEMAKER_MULTI_MODEL=true`` the server loads no model at start. The platform (or anyone)
manages models with

- ``POST /models`` ``{"model_name": n, "url": dir}``: load the model directory ``dir`` (its
  ``code/inference.py`` honoured, any framework the loaders know) as ``n``; 200, 409 when ``n``
  is loaded already, 507 when the process is out of memory, 500 naming the cause otherwise.
  The answer carries ``memoryBytes``: what the load added to the process (the larger of the
  resident size's growth and malloc's bytes in use; modelhost's extension: the router budgets
  instances with it).
- ``GET /models``, ``GET /models/<n>``, ``DELETE /models/<n>`` (404 when not loaded);
- ``POST /models/<n>/invoke``: the handler chain of model ``n``; 404 when not loaded.
  ``POST /invocations`` with ``X-Amzn-SageMaker-Target-Model`` reaches the model loaded under
  that name too.

Loads run on one worker thread, one at a time (so each one's memory growth is its own), while
the event loop keeps answering the models already loaded.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import unquote

from modelhost.runtime.handlers import HandlerOptions, ModelHandler, load_handler
from modelhost.runtime.invokers import PlainInvoker, Responder

ENV = "SAGEMAKER_MULTI_MODEL"
TARGET_MODEL = b"x-amzn-sagemaker-target-model"
JSON_TYPE = b"application/json"
LOG_TAIL_LINES = 4  # of a failed load's traceback, in the answer (the caller's ModelError)


class Replier(Responder, Protocol):
    """A connection as the models API answers it."""

    def respond(self, status: int, body: bytes, content_type: bytes) -> None: ...


def enabled(env: dict[str, str] | os._Environ[str]) -> bool:
    return (env.get(ENV) or "").strip().lower() == "true"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc 2.33+
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return cast(Callable[[], _MallInfo2], fn)


_MALLINFO2 = _mallinfo2()


def heap_bytes() -> int:
    """Bytes malloc has handed out and not had back (glibc; 0 elsewhere). Unlike the resident
    size it grows by what a load allocates even when the memory reuses what an unloaded model
    freed."""
    if _MALLINFO2 is None:
        return 0
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def rss_bytes() -> int:
    """This process's resident set size."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(slots=True)
class LoadedModel:
    name: str
    url: str
    invoker: PlainInvoker
    memory_bytes: int
    load_ms: float
    loaded_at: float

    def entry(self) -> dict[str, Any]:
        return {
            "modelName": self.name,
            "modelUrl": self.url,
            "memoryBytes": self.memory_bytes,
            "loadMs": round(self.load_ms, 3),
        }


class MultiModels:
    """The loaded models of one server process, and the MMS API over them. Also the server's
    invoker for ``POST /invocations`` (by the target-model header)."""

    counts_reading = False

    def __init__(self, default_accept: str, program: str | None = None) -> None:
        self.default_accept = default_accept
        self.program = program
        self.models: dict[str, LoadedModel] = {}
        self.loading: set[str] = set()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model-load")

    # -- Invoker (POST /invocations) -----------------------------------------------------

    def invoke(self, conn: Responder, body: bytes, headers: dict[bytes, bytes]) -> None:
        target = headers.get(TARGET_MODEL)
        model = self.models.get(target.decode("latin-1")) if target is not None else None
        if model is None:
            _text(conn, 404, f"model {target!r} is not loaded")
            return
        model.invoker.invoke(conn, body, headers)

    # -- the MMS API ---------------------------------------------------------------------

    def handle(
        self, conn: Replier, method: bytes, url: bytes, body: bytes, headers: dict[bytes, bytes]
    ) -> None:
        path = unquote(url.partition(b"?")[0].decode("latin-1")).rstrip("/")
        parts = path.split("/")[2:]  # "", "models", ...
        if not parts:
            if method == b"GET":
                _json(conn, 200, {"models": [m.entry() for m in self.models.values()]})
            elif method == b"POST":
                self._load(conn, body)
            else:
                _text(conn, 405, "method not allowed")
            return
        name = parts[0]
        model = self.models.get(name)
        if len(parts) == 2 and parts[1] == "invoke" and method == b"POST":
            if model is None:
                _text(conn, 404, f"model {name} is not loaded")
            else:
                model.invoker.invoke(conn, body, headers)
        elif len(parts) == 1 and method in (b"GET", b"DELETE"):
            if model is None:
                _text(conn, 404, f"model {name} is not loaded")
            elif method == b"GET":
                _json(conn, 200, {"models": [model.entry()]} | model.entry())
            else:
                self._unload(conn, model)
        else:
            _text(conn, 404, f"not found: {path}")

    def _load(self, conn: Replier, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
            name, url = request["model_name"], request["url"]
            if not isinstance(name, str) or not isinstance(url, str) or not name or "/" in name:
                raise ValueError("model_name and url must be strings (model_name without '/')")
        except (ValueError, KeyError, TypeError) as exc:
            _text(conn, 400, f"bad load request: {exc}")
            return
        if name in self.models or name in self.loading:
            _text(conn, 409, f"model {name} is already loaded")
            return
        self.loading.add(name)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._load_now, name, url)
        future.add_done_callback(lambda f: self._loaded(conn, name, f))

    def _load_now(self, name: str, url: str) -> LoadedModel:
        rss, heap = rss_bytes(), heap_bytes()
        started = time.perf_counter()
        handler: ModelHandler = load_handler(
            HandlerOptions(model_dir=url, program=self.program, default_accept=self.default_accept)
        )
        elapsed = (time.perf_counter() - started) * 1000
        grown = max(0, rss_bytes() - rss, heap_bytes() - heap)
        return LoadedModel(name, url, PlainInvoker(handler), grown, elapsed, time.time())

    def _loaded(self, conn: Replier, name: str, future: asyncio.Future[LoadedModel]) -> None:
        self.loading.discard(name)
        try:
            model = future.result()
        except MemoryError:
            _text(conn, 507, f"out of memory loading model {name}")
            return
        except Exception as exc:  # ModelLoadError: the one line worth reporting
            lines = traceback.format_exception(getattr(exc, "cause", None) or exc)
            sys.stderr.write("".join(lines))
            print(f"modelhost.runtime: loading model {name} failed: {exc}", file=sys.stderr)
            tail = "".join(lines[-LOG_TAIL_LINES:]).strip()
            _text(conn, 500, f"loading model {name} failed: {exc}\n{tail}")
            return
        self.models[name] = model
        print(
            f"modelhost.runtime: loaded model {name} from {model.url} in {model.load_ms:.1f} ms "
            f"(+{model.memory_bytes} bytes resident)",
            file=sys.stderr,
            flush=True,
        )
        if not conn.closing:
            _json(conn, 200, {"status": f"Model {name} loaded"} | model.entry())

    def _unload(self, conn: Replier, model: LoadedModel) -> None:
        started = time.perf_counter()
        del self.models[model.name]
        del model  # reference counting frees it now; cycles wait for the collector
        _json(
            conn,
            200,
            {"status": "unloaded", "unloadMs": round((time.perf_counter() - started) * 1e3, 3)},
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _text(conn: Responder, status: int, message: str) -> None:
    reply = getattr(conn, "respond", None)
    if reply is not None:
        reply(status, message.encode("utf-8", "replace"), b"text/plain; charset=utf-8")


def _json(conn: Replier, status: int, doc: dict[str, Any]) -> None:
    conn.respond(status, json.dumps(doc).encode(), JSON_TYPE)
