"""The built-in server's MMS container API (runtime/multimodel.py), driven in-process through
a stand-in connection: load, 409, list, invoke by name and by target-model header, unload, 404."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

from modelhost.runtime.handlers import InvocationResult, StreamingResult
from modelhost.runtime.multimodel import MultiModels

CODE = """
def model_fn(model_dir):
    return open(f"{model_dir}/name.txt").read()


def transform_fn(model, data, content_type, accept):
    return f"{model}:{data.decode() if isinstance(data, bytes) else data}"
"""


class Conn:
    closing = False

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any]] = []
        self.done = asyncio.Event()

    def respond(self, status: int, body: bytes, content_type: bytes) -> None:
        doc = json.loads(body) if content_type == b"application/json" else body.decode()
        self.answers.append((status, doc))
        self.done.set()

    def answer(self, result: InvocationResult | StreamingResult, echo: bytes | None) -> None:
        assert isinstance(result, InvocationResult)
        self.answers.append((200, result.body.decode()))
        self.done.set()

    def fail(self, exc: Exception) -> None:
        self.answers.append((500, str(exc)))
        self.done.set()


def _model(root: Path, name: str) -> str:
    (root / name / "code").mkdir(parents=True)
    (root / name / "code" / "inference.py").write_text(textwrap.dedent(CODE))
    (root / name / "name.txt").write_text(name)
    return str(root / name)


async def _call(models: MultiModels, method: bytes, url: bytes, body: bytes = b"") -> Any:
    conn = Conn()
    models.handle(conn, method, url, body, {})
    await asyncio.wait_for(conn.done.wait(), 30)
    return conn.answers[0]


def test_load_invoke_list_unload(tmp_path: Path) -> None:
    async def main() -> None:
        models = MultiModels("application/json")
        load = json.dumps({"model_name": "m1", "url": _model(tmp_path, "one")}).encode()
        status, doc = await _call(models, b"POST", b"/models", load)
        assert status == 200 and doc["modelName"] == "m1" and doc["memoryBytes"] >= 0
        assert (await _call(models, b"POST", b"/models", load))[0] == 409
        load2 = json.dumps({"model_name": "m2", "url": _model(tmp_path, "two")}).encode()
        assert (await _call(models, b"POST", b"/models", load2))[0] == 200
        assert await _call(models, b"POST", b"/models/m1/invoke", b"x") == (200, "one:x")
        assert await _call(models, b"POST", b"/models/m2/invoke", b"y") == (200, "two:y")
        status, listing = await _call(models, b"GET", b"/models")
        assert sorted(m["modelName"] for m in listing["models"]) == ["m1", "m2"]
        conn = Conn()
        models.invoke(conn, b"z", {b"x-amzn-sagemaker-target-model": b"m2"})
        assert conn.answers == [(200, "two:z")]
        assert (await _call(models, b"DELETE", b"/models/m1"))[0] == 200
        assert (await _call(models, b"DELETE", b"/models/m1"))[0] == 404
        assert (await _call(models, b"POST", b"/models/m1/invoke", b"x"))[0] == 404
        assert (await _call(models, b"GET", b"/models/m2"))[1]["modelName"] == "m2"
        bad = json.dumps({"model_name": "bad", "url": str(tmp_path / "missing")}).encode()
        status, text = await _call(models, b"POST", b"/models", bad)
        assert status == 500 and "loading model bad failed" in text
        assert (await _call(models, b"POST", b"/models", b"{}"))[0] == 400
        models.close()

    asyncio.run(main())
