"""Shared pieces of the wrk benchmarks: a throwaway modelhost server, control-plane calls, the
instance processes it starts, and wrk runs whose Lua ``done()`` prints the results as JSON.

Everything binds to and targets 127.0.0.1. `Server` stops every process it started (the
server, then any instance process left under its data directory) on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
WRK_INSTALL_HINT = (
    "wrk is not installed. Install it with:\n"
    "  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y wrk\n"
    "  macOS:         brew install wrk\n"
    "  from source:   https://github.com/wg/wrk"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


# -- processes ---------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def instance_pids(data_dir: Path) -> list[int]:
    """`python -m modelhost.runtime` processes whose cwd or model dir is under `data_dir`."""
    root = str(data_dir.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if b"modelhost.runtime" not in _read(f"/proc/{pid}/cmdline"):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        model_dir = process_env(pid).get("MODELHOST_MODEL_DIR", "")
        if (cwd.startswith(root) or model_dir.startswith(root)) and not _is_zygote(pid):
            found.append(pid)
    return found


def _is_zygote(pid: int) -> bool:
    """The zygote itself (runtime/zygote.py), not an instance it forked: those keep its
    command line, and have it as their parent."""
    if b"zygote" not in _read(f"/proc/{pid}/cmdline"):
        return False
    try:
        ppid = int(_read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return False
    return b"zygote" not in _read(f"/proc/{ppid}/cmdline")


def process_env(pid: int) -> dict[str, str]:
    env = {}
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of the given processes (threads included), in seconds."""
    total = 0
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat").decode()
        if stat:
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def system_busy_seconds() -> float:
    """CPU time all processes of the machine spent busy (not idle or iowait), in seconds."""
    fields = [int(x) for x in _read("/proc/stat").split(b"\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    return " ".join(_read("/proc/loadavg").decode().split()[:3])


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# -- server ------------------------------------------------------------------------------


@dataclass
class Server:
    """`modelhost serve` on a free 127.0.0.1 port with a temporary data directory."""

    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    data_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelhost-bench-"))
    )
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
        # The benchmarks put model data in the plain local store (and measure the router, not
        # an idle S3 server beside it).
        env["MODELHOST_EMBEDDED_S3"] = "false"
        env.update(self.env)
        cmd = [sys.executable, "-m", "modelhost.cli.main", "serve", "--host", HOST]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"modelhost serve exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"modelhost serve not ready in {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """SIGTERM the server (it stops its instances), then kill whatever is left."""
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            leftovers = instance_pids(self.data_dir)
            if leftovers:
                print(f"killing leftover instance processes {leftovers}", file=sys.stderr)
                _kill(leftovers, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and instance_pids(self.data_dir):
                    time.sleep(0.05)
                _kill(instance_pids(self.data_dir), signal.SIGKILL)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- control plane -----------------------------------------------------------------

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """One SageMaker control-plane call (awsJson1.1); raises on an error response."""
        req = urllib.request.Request(
            f"{self.url}/",
            data=json.dumps(request).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"SageMaker.{operation}",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{operation} failed ({err.code}): {err.read().decode()}") from None
        return json.loads(body) if body else {}

    def endpoint_status(self, name: str) -> str:
        status: str = self.call("DescribeEndpoint", {"EndpointName": name})["EndpointStatus"]
        return status

    def wait_status(self, name: str, timeout: float = 60.0, poll: float = 0.02) -> str:
        """Poll DescribeEndpoint until InService or Failed (raises on Failed or timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            desc = self.call("DescribeEndpoint", {"EndpointName": name})
            if desc["EndpointStatus"] == "InService":
                return "InService"
            if desc["EndpointStatus"] == "Failed":
                raise RuntimeError(f"endpoint {name} failed: {desc.get('FailureReason')}")
            time.sleep(poll)
        raise RuntimeError(f"endpoint {name} not InService within {timeout:.0f} s")

    def wait_gone(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.call("DescribeEndpoint", {"EndpointName": name})
            except RuntimeError as exc:
                if "Could not find" in str(exc) or "not found" in str(exc):
                    return
                raise
            time.sleep(0.05)
        raise RuntimeError(f"endpoint {name} not deleted within {timeout:.0f} s")

    def deploy(self, name: str, model_data: str, instance_type: str = "ml.m5.large") -> None:
        """CreateModel + CreateEndpointConfig + CreateEndpoint (1 instance), wait InService."""
        self.call(
            "CreateModel",
            {"ModelName": name, "PrimaryContainer": {"ModelDataUrl": model_data}},
        )
        self.call(
            "CreateEndpointConfig",
            {
                "EndpointConfigName": name,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": name,
                        "InstanceType": instance_type,
                        "InitialInstanceCount": 1,
                    }
                ],
            },
        )
        self.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
        self.wait_status(name)

    def instance(self) -> tuple[int, int]:
        """(pid, port) of the one instance process of this server."""
        pids = instance_pids(self.data_dir)
        if len(pids) != 1:
            raise RuntimeError(f"expected one instance process, found {pids}")
        port = process_env(pids[0]).get("SAGEMAKER_BIND_TO_PORT")
        if port is None:  # forked from the zygote: /proc shows the zygote's environment
            ports = re.findall(rb"started i-\w+ for .* on port (\d+)", self.log_path.read_bytes())
            if not ports:
                raise RuntimeError(f"no port found for instance {pids[0]}")
            port = ports[-1].decode()
        return pids[0], int(port)


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# -- wrk ---------------------------------------------------------------------------------

_LUA = """\
wrk.method = "POST"
local f = assert(io.open("{body_path}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "{content_type}"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "p50_us": %.1f, "p90_us": %.1f, ' ..
    '"p99_us": %.1f, "mean_us": %.1f, "max_us": %.1f, "err_connect": %d, "err_read": %d, ' ..
    '"err_write": %d, "err_status": %d, "err_timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write, e.status,
    e.timeout))
end
"""


@dataclass
class WrkResult:
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    requests: int
    errors: int
    cpu_us: dict[str, float]  # CPU per request: wrk and each watched process group
    other_cpu: float  # cores busy with anything but wrk and the watched processes (noise)


class Wrk:
    def __init__(self, body: bytes, content_type: str, workdir: Path, name: str = "post") -> None:
        """wrk POSTing ``body`` (any bytes, any size: wrk reads it from a file)."""
        self.binary = require_wrk()
        body_path = workdir / f"{name}.body"
        body_path.write_bytes(body)
        if '"' in str(body_path) or "\\" in str(body_path):
            raise ValueError(f"cannot name {body_path} in a Lua string")
        self.script = workdir / f"{name}.lua"
        self.script.write_text(_LUA.format(body_path=body_path, content_type=content_type))

    def run(
        self,
        url: str,
        threads: int,
        connections: int,
        duration: float,
        watch: Mapping[str, Sequence[int]] | None = None,
    ) -> WrkResult:
        """One wrk run (keep-alive, POST); `watch` names pids whose CPU/request to report."""
        cmd = [self.binary, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s"]
        cmd += ["--latency", "--timeout", "5s", "-s", str(self.script), url]
        watch = watch or {}
        before = {name: cpu_seconds(pids) for name, pids in watch.items()}
        busy, wrk_cpu, start = system_busy_seconds(), children_cpu_seconds(), time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
        elapsed = time.monotonic() - start
        busy, wrk_cpu = system_busy_seconds() - busy, children_cpu_seconds() - wrk_cpu
        after = {name: cpu_seconds(pids) for name, pids in watch.items()}
        ours = wrk_cpu + sum(after[name] - before[name] for name in watch)
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        data = json.loads(line.removeprefix("WRKJSON "))
        n = max(1, data["requests"])
        errors = sum(v for k, v in data.items() if k.startswith("err_"))
        return WrkResult(
            rps=data["requests"] / (data["duration_us"] / 1e6),
            p50_us=data["p50_us"],
            p90_us=data["p90_us"],
            p99_us=data["p99_us"],
            mean_us=data["mean_us"],
            requests=data["requests"],
            errors=errors,
            cpu_us={
                "wrk": wrk_cpu / n * 1e6,
                **{name: (after[name] - before[name]) / n * 1e6 for name in watch},
            },
            other_cpu=max(0.0, busy - ours) / elapsed,
        )


# -- reporting ---------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """'median [min-max]'."""
    return f"{fmt.format(med(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def machine() -> dict[str, str]:
    cpu = "?"
    for line in _read("/proc/cpuinfo").decode().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in _read("/proc/meminfo").decode().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
