"""The long API fuzz run: >= 10,000 generated requests (tests/fixtures/fuzz_requests.py) against
one live server holding a model, an endpoint configuration and an InService endpoint, every
answer judged by the oracle; prints the figures docs/robustness.md reports.

    .venv/bin/python bench/fuzz_api.py [--examples 10000] [--seed 14] [--no-state-check]

Exit status 1 when the oracle found anything (each finding is printed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from tests.fixtures import fuzz_oracle as oracle  # noqa: E402
from tests.fixtures import fuzz_requests as fz  # noqa: E402


def run(examples: int, seed_value: int, state_check: bool) -> int:
    tally = oracle.Tally()
    by_service: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="modelhost-fuzz-") as tmp:
        live = oracle.seeded_server(Path(tmp))
        probe = oracle.StateProbe(Path(tmp) / "state.db") if state_check else None
        started = time.monotonic()

        @seed(seed_value)
        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(req=fz.requests())
        def one(req: fz.Request) -> None:
            key = f"{req.service}/{req.protocol}"
            by_service[key] = by_service.get(key, 0) + 1
            tally.violations += oracle.judge(live.port, req, probe, tally)

        try:
            one()
        finally:
            elapsed = time.monotonic() - started
            alive = live.process is not None and live.process.poll() is None
            live.stop()
    print(f"requests sent: {tally.sent} in {elapsed:.0f} s ({tally.sent / elapsed:.0f}/s), "
          f"seed {seed_value}, state checked: {state_check}")  # fmt: skip
    print(f"server alive at the end: {alive}")
    print("by service/protocol:", dict(sorted(by_service.items())))
    print("by kind:", dict(sorted(tally.by_kind.items())))
    print("by status:", dict(sorted(tally.by_status.items())))
    print("error codes:", dict(sorted(tally.by_code.items(), key=lambda kv: -kv[1])))
    print(f"oracle violations: {len(tally.violations)}")
    for line in tally.violations[:50]:
        print("  ", line[:400])
    return 1 if tally.violations or not alive else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-state-check", action="store_true")
    args = parser.parse_args()
    raise SystemExit(run(args.examples, args.seed, not args.no_state_check))


if __name__ == "__main__":
    main()
