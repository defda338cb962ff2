"""modelhost vs MLServer vs BentoML: one sklearn iris model, one wrk load, one machine.

Trains LogisticRegression on iris (sklearn.datasets.load_iris, no download), saves it with joblib
and serves that one file from every server, all on 127.0.0.1 and free ports:
  MLServer   (throwaway venv) mlserver_sklearn.SKLearnModel, V2 inference protocol, twice: its
             default (parallel_workers=1: inference in a worker process) and parallel_workers=0
             (inference in the HTTP process); debug=false (no access log) in both
  BentoML    (throwaway venv) a `@bentoml.service` with an api taking a numpy array
             (bench/compare/bento_service.py), `bentoml serve`, 1 worker
  modelhost  (this repo's .venv) `modelhost serve`, the model deployed through boto3
             (CreateModel/CreateEndpointConfig/CreateEndpoint, ml.m5.large x 1, built-in sklearn
             handlers), measured through the router (InvokeEndpoint) and directly at the instance
With batching (--batching on, or auto: once `git log` has a commit mentioning batching) each side
also gets adaptive batching with the same limits, 32 rows and 2 ms: a second modelhost endpoint
with MODELHOST_BATCHING=true (router), a second MLServer model (parallel_workers=0,
max_batch_size/max_batch_time) and a second BentoML api (batchable=True).
The venvs are built once under --cache-dir (pinned versions: bench/compare/venvs.py).

Each server gets the one-row request [[5.1, 3.5, 1.4, 0.2]] in its own JSON format. wrk
(keep-alive POST, --latency) runs --duration seconds per cell, c=1 (-t1 -c1) and c=32 (-t2 -c32),
servers alternating (order reversed every other round), --rounds times; before each run it waits
(bounded) for other processes on the machine to go quiet. Reports the median and [min-max] of
req/s, p50 and p99, the server's CPU per request, the cores wrk itself used (it shares the
machine with the server) and the c=32 req/s ratio of each modelhost path to the best
MLServer/BentoML configuration, like for like (goal: >= 2x through the router).

  .venv/bin/python bench/compare_servers.py [--quick] [--markdown FILE] [--json FILE]
Needs wrk, and PyPI on the first run (venvs). Once the venvs exist: about 6 min, 9.5 min with
batching (8 paths x 2 cells x 3 rounds x 10 s); --quick (3 s, 1 round) about 2 min.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    HOST,
    REPO,
    Server,
    Wrk,
    WrkResult,
    cpu_seconds,
    free_port,
    instance_pids,
    load_average,
    machine,
    med,
    post,
    process_env,
    require_wrk,
    spread,
    system_busy_seconds,
)
from compare import venvs

ROW = [5.1, 3.5, 1.4, 0.2]
EXPECTED_CLASS = 0  # setosa
CELLS = {"c1": (1, 1), "c32": (2, 32)}  # name: (wrk threads, connections)
GOAL_RATIO = 2.0
READY_TIMEOUT_S = 120.0
BATCHING_ENV = {"MODELHOST_BATCHING": "true"}
JSON_CT = "application/json"


@dataclass
class Target:
    name: str
    family: str  # "mlserver", "bentoml" or "modelhost"
    url: str
    body: bytes
    check: Callable[[Any], bool]  # the decoded JSON answer predicts EXPECTED_CLASS
    roots: list[int]  # the server's processes (their descendants are found later)
    batching: bool = False
    pids: list[int] = field(default_factory=list)
    wrk: Wrk | None = None
    runs: dict[str, list[WrkResult]] = field(default_factory=lambda: {c: [] for c in CELLS})

    @property
    def competitor(self) -> bool:
        return self.family != "modelhost"


# -- processes -----------------------------------------------------------------------------


def descendants(roots: list[int]) -> list[int]:
    """`roots` and every process below them (by parent pid), from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = list(dict.fromkeys(roots)), list(roots)
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in found]
        found += frontier
    return found


class Proc:
    """A server in its own process group; `stop` kills the whole group."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
                # the leader is gone; give the rest of the group the same signal once more
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                return

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout:.0f} s:\n{self.tail()}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


# -- the servers -----------------------------------------------------------------------------


def train(dest: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    dest.mkdir(parents=True)
    joblib.dump(model, dest / "model.joblib")
    return dest


def start_mlserver(
    python: Path, work: Path, model: Path, workers: int, batching: bool, stack: contextlib.ExitStack
) -> list[Target]:
    """One `mlserver start`; with `batching` it also serves `iris-batched` (adaptive batching)."""
    root = work / f"mlserver-pw{workers}"
    http, grpc, metrics = free_ports(3)
    settings = {
        "host": HOST,
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "parallel_workers": workers,
        "debug": False,  # debug=true (the default) also turns on uvicorn's access log
        "metrics_dir": str(root / "metrics"),
    }
    models: dict[str, dict[str, Any]] = {"iris": {}}
    if batching:  # the same limits as modelhost's defaults: 32 rows, 2 ms
        models["iris-batched"] = {"max_batch_size": 32, "max_batch_time": 0.002}
    for name, extra in models.items():
        model_settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(model / "model.joblib")},
            **extra,
        }
        (root / name).mkdir(parents=True)
        (root / name / "model-settings.json").write_text(json.dumps(model_settings))
    (root / "settings.json").write_text(json.dumps(settings))
    cmd = [str(python.parent / "mlserver"), "start", str(root)]
    proc = Proc(f"mlserver pw={workers}", cmd, root, clean_env(), root / "server.log")
    stack.callback(proc.stop)
    body = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    label = "MLServer (default, 1 worker)" if workers else "MLServer (parallel_workers=0)"
    targets = []
    for name in models:
        base = f"http://{HOST}:{http}/v2/models/{name}"
        proc.wait_ready(f"{base}/ready")
        targets.append(
            Target(
                label.replace(")", ", adaptive batching)") if name != "iris" else label,
                "mlserver",
                f"{base}/infer",
                json.dumps(body).encode(),
                lambda a: a["outputs"][0]["data"] == [EXPECTED_CLASS],
                [proc.popen.pid],
                batching=name != "iris",
            )
        )
    return targets


def start_bentoml(
    python: Path, work: Path, model: Path, batching: bool, stack: contextlib.ExitStack
) -> list[Target]:
    """One `bentoml serve`: /predict, and with `batching` also /predict_batched."""
    root = work / "bentoml"
    root.mkdir()
    port = free_port()
    env = clean_env(
        BENCH_MODEL_PATH=str(model / "model.joblib"),
        BENTOML_HOME=str(root / "home"),
        BENTOML_DO_NOT_TRACK="true",
    )
    cmd = [str(python.parent / "bentoml"), "serve", "bento_service:IrisClassifier"]
    cmd += ["--host", HOST, "--port", str(port)]
    proc = Proc("bentoml", cmd, REPO / "bench" / "compare", env, root / "server.log")
    stack.callback(proc.stop)
    proc.wait_ready(f"http://{HOST}:{port}/readyz")
    routes = {"BentoML (1 worker)": "predict"}
    if batching:
        routes["BentoML (1 worker, adaptive batching)"] = "predict_batched"
    return [
        Target(
            label,
            "bentoml",
            f"http://{HOST}:{port}/{route}",
            json.dumps({"rows": [ROW]}).encode(),
            lambda a: a == [EXPECTED_CLASS],
            [proc.popen.pid],
            batching=route != "predict",
        )
        for label, route in routes.items()
    ]


def _modelhost_answer(answer: Any) -> bool:
    if isinstance(answer, dict):
        answer = answer.get("predictions")
    return bool(answer == [EXPECTED_CLASS])


def deploy(url: str, name: str, model: Path, environment: dict[str, str]) -> None:
    """CreateModel + CreateEndpointConfig + CreateEndpoint through boto3; wait InService."""
    import boto3

    sm = boto3.client(
        "sagemaker",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"ModelDataUrl": str(model.resolve()), "Environment": environment},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] == "InService":
            return
        if desc["EndpointStatus"] == "Failed":
            raise RuntimeError(f"endpoint {name} failed: {desc.get('FailureReason')}")
        time.sleep(0.05)
    raise RuntimeError(f"endpoint {name} not InService in {READY_TIMEOUT_S:.0f} s")


def start_modelhost(
    model: Path, batching: bool, batching_direct: bool, stack: contextlib.ExitStack
) -> list[Target]:
    server = stack.enter_context(Server())
    assert server.process is not None
    variants = {"": {}, " + batching": BATCHING_ENV} if batching else {"": {}}
    for suffix, environment in variants.items():
        deploy(server.url, "iris" + suffix.replace(" + ", "-"), model, environment)
    instances = {}
    for pid in instance_pids(server.data_dir):
        env = process_env(pid)
        suffix = " + batching" if env.get("MODELHOST_BATCHING") == "true" else ""
        instances[suffix] = (pid, int(env["SAGEMAKER_BIND_TO_PORT"]))
    if set(instances) != set(variants):
        raise RuntimeError(f"expected instances {list(variants)}, found {instances}")
    targets = []
    for suffix, (pid, port) in instances.items():
        name = "iris" + suffix.replace(" + ", "-")
        paths = {
            "router": (f"{server.url}/endpoints/{name}/invocations", [server.process.pid, pid]),
            "direct": (f"http://{HOST}:{port}/invocations", [pid]),
        }
        if suffix and not batching_direct:
            del paths["direct"]
        for via, (url, roots) in paths.items():
            targets.append(
                Target(
                    f"modelhost{suffix} ({via})",
                    "modelhost",
                    url,
                    json.dumps([ROW]).encode(),
                    _modelhost_answer,
                    roots,
                    batching=bool(suffix),
                )
            )
    return targets


# -- batching commit -----------------------------------------------------------------------


def batching_committed() -> bool:
    out = subprocess.run(
        ["git", "-C", str(REPO), "log", "--oneline"], capture_output=True, text=True, check=False
    )
    return "batching" in out.stdout.lower()


def decide_batching(mode: str, wait_min: float) -> bool:
    if mode != "auto":
        return mode == "on"
    deadline = time.monotonic() + wait_min * 60
    while not batching_committed():
        if time.monotonic() >= deadline:
            print("no commit mentioning batching: the batching variant is skipped", flush=True)
            return False
        print("waiting for a commit mentioning batching (polling git log every 60 s)", flush=True)
        time.sleep(60)
    return True


# -- measuring -----------------------------------------------------------------------------


class Quiet:
    """Waits, before each wrk run, until processes other than ours use < `threshold` cores.

    The machine may be shared (other builds, tests, benchmarks): each check samples 1 s of
    /proc/stat minus the CPU of our servers; waiting stops after `per_run` seconds, and for good
    once `budget` seconds have been spent, so the run stays bounded.
    """

    def __init__(self, ours: list[int], threshold: float, per_run: float, budget: float):
        self.ours, self.threshold, self.per_run, self.budget = ours, threshold, per_run, budget
        self.spent = 0.0  # sampling and waiting, seconds
        self.checked = self.busy = 0  # runs checked, and of those found busy

    def foreign_cores(self) -> float:
        busy, ours, start = system_busy_seconds(), cpu_seconds(self.ours), time.monotonic()
        time.sleep(1.0)
        busy, ours = system_busy_seconds() - busy, cpu_seconds(self.ours) - ours
        return max(0.0, busy - ours) / (time.monotonic() - start)

    def wait(self) -> None:
        if self.threshold <= 0 or self.spent >= self.budget:
            return
        start = time.monotonic()
        self.checked += 1
        first = True
        while (load := self.foreign_cores()) >= self.threshold:
            self.busy += first
            first = False
            spent = time.monotonic() - start
            if spent >= self.per_run or self.spent + spent >= self.budget:
                print(f"    (machine still busy: {load:.2f} other cores; going on)", flush=True)
                break
        self.spent += time.monotonic() - start


def measure(targets: list[Target], duration: float, rounds: int, quiet: Quiet) -> None:
    for rnd in range(rounds):
        for cell, (threads, conns) in CELLS.items():
            for t in targets if rnd % 2 == 0 else targets[::-1]:
                assert t.wrk is not None
                quiet.wait()
                r = t.wrk.run(t.url, threads, conns, duration, watch={"server": t.pids})
                t.runs[cell].append(r)
                wrk_cores = r.cpu_us["wrk"] * r.rps / 1e6
                errors = f"  {r.errors} ERRORS" if r.errors else ""
                print(
                    f"  round {rnd + 1} {cell:>3} {t.name:<52} {r.rps:>7,.0f} req/s  "
                    f"p50 {r.p50_us:>6.0f} us  p99 {r.p99_us:>7.0f} us  server CPU/req "
                    f"{r.cpu_us['server']:>5.0f} us  wrk {wrk_cores:.2f} cores  "
                    f"other {r.other_cpu:.2f} cores{errors}",
                    flush=True,
                )


def best_competitor(
    targets: list[Target], batching: bool | None, index: int | None = None
) -> Target | None:
    """The competitor with the most c=32 req/s (median, or in round `index`), among those with
    `batching` as given (None: any)."""

    def rps(t: Target) -> float:
        runs = t.runs["c32"]
        return med([r.rps for r in runs]) if index is None else runs[index].rps

    pool = [t for t in targets if t.competitor and batching in (None, t.batching)]
    return max(pool, key=rps) if pool else None


def _ratio(t: Target, targets: list[Target], batching: bool | None) -> dict[str, Any] | None:
    best = best_competitor(targets, batching)
    if best is None:
        return None
    per_round = []
    for i, run in enumerate(t.runs["c32"]):
        best_i = best_competitor(targets, batching, i)
        assert best_i is not None
        per_round.append(run.rps / best_i.runs["c32"][i].rps)
    best_rps = med([r.rps for r in best.runs["c32"]])
    return {
        "best": best.name,
        "best_rps": best_rps,
        "ratio": med([r.rps for r in t.runs["c32"]]) / best_rps,
        "per_round": per_round,
    }


def summarize(targets: list[Target]) -> dict[str, Any]:
    rows = []
    for t in targets:
        row: dict[str, Any] = {"name": t.name}
        for cell, runs in t.runs.items():
            row[cell] = {
                "rps": spread([r.rps for r in runs]),
                "p50": spread([r.p50_us for r in runs]),
                "p99": spread([r.p99_us for r in runs]),
                "cpu": spread([r.cpu_us["server"] for r in runs]),
                "wrk_cores": spread([r.cpu_us["wrk"] * r.rps / 1e6 for r in runs], "{:.2f}"),
                "wrk_cores_median": med([r.cpu_us["wrk"] * r.rps / 1e6 for r in runs]),
                "other": spread([r.other_cpu for r in runs], "{:.2f}"),
                "errors": sum(r.errors for r in runs),
                "rps_median": med([r.rps for r in runs]),
            }
        rows.append(row)
    ratios = {
        t.name: {"like": _ratio(t, targets, t.batching), "any": _ratio(t, targets, None)}
        for t in targets
        if not t.competitor
    }
    goals = {
        name: r["like"]["ratio"] >= GOAL_RATIO
        for name, r in ratios.items()
        if "(router)" in name and r["like"] is not None
    }
    return {"rows": rows, "ratios": ratios, "goals": goals}


def table(summary: dict[str, Any]) -> str:
    head = (
        "| server | c=1 req/s | c=1 p50 us | c=1 p99 us | c=32 req/s | c=32 p50 us | "
        "c=32 p99 us | server CPU/req at c=32, us | wrk cores at c=32 | "
        "other load at c=32, cores |"
    )
    lines = [head, "|" + "---|" * 10]
    for row in summary["rows"]:
        c1, c32 = row["c1"], row["c32"]
        errors = c1["errors"] + c32["errors"]
        name = row["name"] + (f" ({errors} wrk errors)" if errors else "")
        lines.append(
            f"| {name} | {c1['rps']} | {c1['p50']} | {c1['p99']} | {c32['rps']} | {c32['p50']} "
            f"| {c32['p99']} | {c32['cpu']} | {c32['wrk_cores']} | {c32['other']} |"
        )
    return "\n".join(lines)


def ratio_lines(summary: dict[str, Any]) -> list[str]:
    out = []
    for name, r in summary["ratios"].items():
        parts = []
        for key, what in (("like", "like for like"), ("any", "any configuration")):
            x = r[key]
            if x is None or (key == "any" and x["best"] == r["like"]["best"]):
                continue
            per = ", ".join(f"{v:.2f}" for v in x["per_round"])
            parts.append(
                f"**{x['ratio']:.2f}x** the best {what}, {x['best']} at {x['best_rps']:,.0f} "
                f"req/s (per round {per})"
            )
        out.append(f"- {name}: " + "; ".join(parts))
    for name, met in summary["goals"].items():
        x = summary["ratios"][name]["like"]
        out.append(
            f"- Goal, {name} >= {GOAL_RATIO:g}x the best of MLServer/BentoML at c=32 (like for "
            f"like): **{'MET' if met else 'NOT MET'}** ({x['ratio']:.2f}x {x['best']})"
        )
    return out


# -- report ----------------------------------------------------------------------------------


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0] if text else "wrk ?"


def collect_versions(pythons: dict[str, Path]) -> dict[str, dict[str, str]]:
    found = {
        "modelhost": venvs.versions(
            sys.executable, ["modelhost", "boto3", "uvloop", "httptools", *venvs.SHARED_REPORTED]
        )
    }
    rev = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    found["modelhost"]["git HEAD"] = rev + (
        f" (+ uncommitted changes in {len(dirty)} files under src/)" if dirty else ""
    )
    for name, py in pythons.items():
        found[name] = venvs.versions(py, venvs.REPORTED[name] + venvs.SHARED_REPORTED)
    return found


def markdown(
    summary: dict[str, Any],
    info: dict[str, str],
    versions: dict[str, dict[str, str]],
    args: argparse.Namespace,
    batching: bool,
    quiet: Quiet,
) -> str:
    ver = "\n".join(
        f"- {env}: " + ", ".join(f"{k} {v}" for k, v in vs.items()) for env, vs in versions.items()
    )
    cores = [row["c32"]["wrk_cores_median"] for row in summary["rows"]]
    flags = (
        ""
        if (args.duration, args.rounds) == (10, 3)
        else " " + " ".join(f"--{k} {getattr(args, k):g}" for k in ("duration", "rounds"))
    )
    if batching:
        flags += " --batching on"
        batch_text = (
            "- Adaptive batching on every side, with the same limits (32 rows, 2 ms):\n"
            "  modelhost `+ batching` is a second endpoint whose model has `Environment\n"
            '  {"MODELHOST_BATCHING": "true"}` (defaults: 32 rows, 2 ms); MLServer serves a\n'
            "  second model `iris-batched` (`max_batch_size: 32, max_batch_time: 0.002`);\n"
            "  BentoML a second api `predict_batched` (`batchable=True, max_batch_size=32`;\n"
            "  its dispatcher picks the wait itself)."
        )
    else:
        batch_text = "- Adaptive batching was not measured in this run."
    rounds = f"{args.rounds} round" + ("s" if args.rounds != 1 else "")
    return f"""
## modelhost vs MLServer vs BentoML

The same scikit-learn model (LogisticRegression on iris, saved once with joblib and loaded by
every server), the same one-row request `[[5.1, 3.5, 1.4, 0.2]]` in each server's own JSON
format, the same load generator, the same machine, everything on 127.0.0.1. Measured by
`bench/compare_servers.py`.

Machine: {info["nproc"]} cores ({info["cpu"]}), {info["memory"]} memory, Linux {info["kernel"]},
Python {info["python"]}, {info["wrk"]}.

Versions (MLServer and BentoML are installed only into throwaway venvs under
`{args.cache_dir}`; they are not modelhost dependencies):
{ver}

Servers:
- MLServer: `mlserver start` with `mlserver_sklearn.SKLearnModel`, V2 inference protocol
  (`POST /v2/models/iris/infer` with
  `{{"inputs":[{{"name":"predict","shape":[1,4],"datatype":"FP32","data":[...]}}]}}`),
  `debug: false` (the default `true` adds uvicorn's access log); once with its default
  `parallel_workers: 1` (inference in a worker process), once with `parallel_workers: 0`
  (inference in the HTTP process).
- BentoML: `bentoml serve` of a `@bentoml.service(workers=1)` class with a sync `@bentoml.api`
  taking `rows: np.ndarray` (`POST /predict` with `{{"rows": [[...]]}}`;
  `bench/compare/bento_service.py`).
- uvloop (0.21: MLServer 1.7.1's worker crashes under 0.23) and httptools are added to both
  venvs (plain `pip install mlserver` / `bentoml` pull in neither), so both run on their
  fastest event loop and HTTP parser.
- modelhost: `modelhost serve`; the model directory (`model.joblib`, no `inference.py`: the
  built-in sklearn handlers) deployed with boto3 (CreateModel with the directory as
  `ModelDataUrl`, CreateEndpointConfig ml.m5.large x 1, CreateEndpoint). `(router)`:
  `POST /endpoints/iris/invocations`, the InvokeEndpoint route (router, then instance);
  `(direct)`: `POST /invocations` on the instance's own port.
{batch_text}

Command: `.venv/bin/python bench/compare_servers.py{flags}`. For each server it runs
`wrk -t1 -c1 -d{args.duration:g}s --latency -s post.lua URL` and
`wrk -t2 -c32 -d{args.duration:g}s --latency -s post.lua URL` (keep-alive POST); the servers
alternate, in reverse order every other round, {rounds}. Each cell: median [min-max] over the
rounds. Server CPU/req: user + system CPU of all the server's processes per request (modelhost
through the router: router + instance; MLServer: with its worker). wrk shares the
{info["nproc"]} cores with the server under test: it used {min(cores):.2f}-{max(cores):.2f}
cores at c=32, more for the faster servers, so the client's share of the machine handicaps
the fastest server most. Other load: cores busy with anything but wrk and the server under test
(other jobs on this shared machine, the idle servers, unattributed kernel time). Before a run
the script samples it for 1 s and waits while it is >= {args.quiet_cores:g} cores (at most 15 s
a run, {args.quiet_budget:g} s of sampling and waiting in all): this time {quiet.checked} runs
were checked and {quiet.busy} found the machine busy. Results move ~20% between runs here.

{table(summary)}

c=32 req/s ratios (median over rounds; like for like = the competitor configurations with the
same batching setting):

{chr(10).join(ratio_lines(summary))}
"""


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--cache-dir", type=Path, default=venvs.DEFAULT_CACHE)
    parser.add_argument(
        "--batching",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: when `git log` has a commit mentioning batching",
    )
    parser.add_argument(
        "--wait-for-batching",
        type=float,
        default=0.0,
        metavar="MIN",
        help="with --batching auto, poll git log up to MIN minutes",
    )
    parser.add_argument(
        "--batching-direct", action="store_true", help="also measure batching at the instance"
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.25,
        help="before each run wait (bounded) until other processes use fewer cores; 0: never",
    )
    parser.add_argument("--quiet-budget", type=float, default=30.0, help="seconds, in all")
    parser.add_argument("--markdown", type=Path, help="write the docs section here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 3.0, 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop every server
    require_wrk()
    pythons = {name: venvs.ensure(args.cache_dir, name) for name in venvs.ENVS}
    versions = collect_versions(pythons)
    info = {**machine(), "wrk": wrk_version()}
    print(f"machine: {info}", flush=True)
    for env, vs in versions.items():
        print(f"{env}: " + ", ".join(f"{k} {v}" for k, v in vs.items()), flush=True)
    batching = decide_batching(args.batching, args.wait_for_batching)
    print(f"load average before: {load_average()}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="modelhost-compare-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        model = train(work / "model")
        started = time.monotonic()
        targets = [
            *start_mlserver(pythons["mlserver"], work, model, 1, False, stack),
            *start_mlserver(pythons["mlserver"], work, model, 0, batching, stack),
            *start_bentoml(pythons["bentoml"], work, model, batching, stack),
            *start_modelhost(model, batching, args.batching_direct, stack),
        ]
        print(f"all servers ready in {time.monotonic() - started:.1f} s", flush=True)
        for i, t in enumerate(targets):
            status, answer = post(t.url, t.body, JSON_CT)
            if status != 200 or not t.check(json.loads(answer)):
                raise RuntimeError(f"{t.name}: unexpected answer {status} {answer[:300]!r}")
            (work / f"wrk{i}").mkdir()
            t.wrk = Wrk(t.body, JSON_CT, work / f"wrk{i}")
            t.wrk.run(t.url, 2, 32, 1.0)  # warm-up: connections, worker pools, caches
            t.pids = descendants(t.roots)
            print(f"{t.name}: {t.url} answers {answer[:80]!r}; pids {t.pids}", flush=True)
        n_runs = len(targets) * len(CELLS) * args.rounds
        print(f"{n_runs} wrk runs of {args.duration:g} s", flush=True)
        ours = sorted({pid for t in targets for pid in t.pids})
        quiet = Quiet(ours, args.quiet_cores, per_run=15.0, budget=args.quiet_budget)
        measure(targets, args.duration, args.rounds, quiet)
        print(
            f"quiet checks: {quiet.checked} runs checked, {quiet.busy} found other load, "
            f"{quiet.spent:.0f} s sampling and waiting",
            flush=True,
        )
    summary = summarize(targets)
    print("\nmedian [min-max] over rounds\n" + table(summary) + "\n")
    print("\n".join(ratio_lines(summary)))
    if args.markdown:
        args.markdown.write_text(markdown(summary, info, versions, args, batching, quiet))
    if args.json:
        raw = {t.name: {c: [vars(r) for r in rs] for c, rs in t.runs.items()} for t in targets}
        args.json.write_text(
            json.dumps({"summary": summary, "runs": raw, "versions": versions}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
