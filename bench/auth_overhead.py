"""What SigV4 verification costs InvokeEndpoint's fast path: keys on vs keys off.

1. Micro: ``Gate.check_invoke`` on a boto3-signed InvokeEndpoint (the headers boto3 sends),
   best of --micro-repeats timings of 2,000 calls, beside ``Gate.required()`` with no keys
   (all a keyless server pays). In-process, no server.
2. End to end: `modelhost serve` (temporary data dir, 127.0.0.1), the echo fixture deployed,
   wrk sending one signed request (signed once with botocore: a signature stays valid for
   15 minutes) at c=1 and c=32, alternating keys off (no keys file) and keys on (a key
   created while the server runs; it notices within 0.1 s), --repeats times. Reports req/s,
   p50 and the server's CPU per request for both, and the ratios on/off.

Needs wrk.  Not run in CI:  .venv/bin/python bench/auth_overhead.py [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _harness import REPO, Server, Wrk, WrkResult, med, require_wrk, spread
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modelhost.auth.gate import Gate
from modelhost.auth.keys import AccessKey, KeyRing, add_key
from modelhost.auth.policy import Policy

ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
ENDPOINT = "bench-auth"
CELLS = {"c1": (1, 1), "c32": (2, 32)}
REGION = "us-east-1"


def signed_headers(key: AccessKey, url: str, host: str) -> dict[str, str]:
    """The headers boto3 sends for InvokeEndpoint, signed by botocore now."""
    request = AWSRequest(
        "POST",
        url,
        data=BODY,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "Boto3/1.35 md/Botocore#1.35 ua/2.0 os/linux lang/python#3.11",
            "amz-sdk-invocation-id": "0b1c5b0e-4e3a-4a43-a2f4-5a1f0b1c5b0e",
            "amz-sdk-request": "attempt=1",
            "Host": host,
        },
    )
    SigV4Auth(Credentials(key.access_key_id, key.secret), "sagemaker", REGION).add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


def micro(repeats: int) -> dict[str, float]:
    """Per-call microseconds: the check on a signed request, and the keyless server's test."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.json"
        empty = Gate(KeyRing(Path(tmp) / "none.json"), REGION, True, "123456789012")
        key = add_key(path, "bench", Policy.parse("invoke"))
        gate = Gate(KeyRing(path), REGION, True, "123456789012")
        path_b = f"/endpoints/{ENDPOINT}/invocations".encode()
        headers = signed_headers(key, "http://127.0.0.1:8765" + path_b.decode(), "127.0.0.1:8765")
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        gate.check_invoke(path_b, raw, BODY, ENDPOINT)  # it passes

        def check() -> None:
            gate.check_invoke(path_b, raw, BODY, ENDPOINT)

        n = 2000
        on = min(timeit.repeat(check, number=n, repeat=repeats)) / n * 1e6
        off = min(timeit.repeat(empty.required, number=n, repeat=repeats)) / n * 1e6
    print(f"micro: check_invoke {on:.1f} us/call; keys off (required()) {off:.2f} us/call")
    return {"check_invoke_us": on, "keys_off_us": off}


def wait_mode(url: str, on: bool, timeout: float = 5.0) -> None:
    """Until an unsigned InvokeEndpoint is refused (keys on) or answered (keys off)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            url, data=BODY, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5):
                refused = False
        except urllib.error.HTTPError as err:
            refused = err.code == 403
        if refused == on:
            return
        time.sleep(0.02)
    raise RuntimeError(f"the server did not turn keys {'on' if on else 'off'}")


def end_to_end(duration: float, repeats: int) -> dict[str, dict[str, list[WrkResult]]]:
    results: dict[str, dict[str, list[WrkResult]]] = {c: {"off": [], "on": []} for c in CELLS}
    with Server() as server:
        server.deploy(ENDPOINT, str(ECHO))
        url = f"{server.url}/endpoints/{ENDPOINT}/invocations"
        keys, parked = server.data_dir / "keys.json", server.data_dir / "keys.parked"
        key = add_key(parked, "bench", Policy.parse("invoke"))
        headers = signed_headers(key, url, server.url.removeprefix("http://"))
        assert server.process is not None
        watch = {"router": [server.process.pid]}
        with tempfile.TemporaryDirectory() as tmp:
            wrk = Wrk(BODY, "application/json", Path(tmp), "auth")
            lines = "".join(
                f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items() if k != "Host"
            )
            script = wrk.script.read_text().replace("\nfunction done", f"\n{lines}\nfunction done")
            wrk.script.write_text(script)
            for rep in range(repeats):
                for cell, (threads, conns) in CELLS.items():
                    order = ("off", "on") if rep % 2 == 0 else ("on", "off")
                    for mode in order:
                        # keys on: the keys file in place; off: moved aside (no keys)
                        src, dst = (parked, keys) if mode == "on" else (keys, parked)
                        if src.exists():
                            src.replace(dst)
                        wait_mode(url, mode == "on")
                        r = wrk.run(url, threads, conns, duration, watch=watch)
                        if r.errors:
                            raise RuntimeError(f"{mode} {cell}: {r.errors} wrk errors")
                        results[cell][mode].append(r)
                        print(
                            f"  rep {rep + 1} {cell:>3} keys {mode:<3} {r.rps:>9,.0f} req/s "
                            f"p50 {r.p50_us:>6.0f} us  server CPU/req "
                            f"{r.cpu_us['router']:>5.1f} us  other load {r.other_cpu:.2f} cores",
                            flush=True,
                        )
    return results


def summarize(results: dict[str, dict[str, list[WrkResult]]]) -> dict[str, object]:
    print("\nmedian [min-max] over repeats")
    out: dict[str, object] = {}
    for cell, modes in results.items():
        for mode, runs in modes.items():
            print(
                f"  {cell:>3} keys {mode:<3} req/s {spread([r.rps for r in runs]):>22}  "
                f"p50 us {spread([r.p50_us for r in runs]):>14}  "
                f"server CPU/req us {spread([r.cpu_us['router'] for r in runs], '{:.1f}'):>18}"
            )
        on, off = modes["on"], modes["off"]
        rps = med([r.rps for r in on]) / med([r.rps for r in off])
        cpu = med([r.cpu_us["router"] for r in on]) - med([r.cpu_us["router"] for r in off])
        p50 = med([r.p50_us for r in on]) - med([r.p50_us for r in off])
        print(
            f"  {cell}: req/s on/off {rps:.3f}; added p50 {p50:.0f} us; added CPU/req {cpu:.1f} us"
        )
        out[cell] = {
            "rps_ratio_on_off": rps,
            "added_p50_us": p50,
            "added_cpu_us_per_request": cpu,
            "runs": {mode: [vars(r) for r in runs] for mode, runs in modes.items()},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_wrk()
    report: dict[str, object] = {"micro": micro(args.micro_repeats)}
    report["end_to_end"] = summarize(end_to_end(args.duration, args.repeats))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
