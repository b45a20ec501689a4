"""``python -m bench [--quick] [--repeat N] [--only 1,2,...]``: run the scenarios, print a table.

Each scenario starts from a fresh topic on one local broker; the vendor simulator runs in its
own process; the service and the baseline are separate processes on the same 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from typing import Any

from bench import freshness, hot_path, http_clients, parking, peer, scenarios
from bench.harness import Bench
from bench.scenarios import Row

HEADER = """| scenario | measure | asset-sync | baseline | ratio | target | met |
| --- | --- | --- | --- | --- | --- | --- |"""


def line(r: Row) -> str:
    base = f"{r.baseline:,.1f}" if r.baseline is not None else ""
    met = "" if r.met is None else ("yes" if r.met else "**no**")
    return (
        f"| {r.scenario} | {r.measure} | {r.value:,.1f} {r.unit} | {base} | "
        f"{r.ratio()} | {r.target} | {met} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller event counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10,11,12,13,14")
    args = parser.parse_args()
    only = {int(x) for x in args.only.split(",")}
    rows: list[Row] = []
    print(
        f"# asset-sync bench {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{'quick' if args.quick else 'full'}, median of {args.repeat}",
        flush=True,
    )
    print(HEADER, flush=True)

    def report(new: list[Row]) -> None:  # each scenario's rows as soon as it is done
        rows.extend(new)
        for row in new:
            print(line(row), flush=True)

    with Bench() as bench:
        if 8 in only:
            report(scenarios.validation_cost(args.repeat))
        if 1 in only:
            report(scenarios.drain_instant(bench, args.repeat, args.quick))
        reference: dict[str, Any] = {}
        if only & {2, 4}:
            slow_rows, reference = scenarios.drain_slow(bench, args.repeat, args.quick)
            report(slow_rows)
        if 3 in only:
            report(scenarios.autodesk_batching(bench, args.repeat, args.quick))
        if 4 in only:
            report(scenarios.isolation(bench, args.quick, reference))
        if 5 in only:
            report(scenarios.rate_limit(bench, args.repeat, args.quick))
        if 6 in only:
            report(scenarios.scale_out(bench, args.quick))
        if 7 in only:
            report(scenarios.memory(bench, args.quick))
        if 9 in only:
            report(scenarios.shared_rate_limit(bench, args.quick))
        if 10 in only:
            report(freshness.freshness(bench, args.repeat, args.quick))
        if 12 in only:  # 30 minutes (2 with --quick): not in the default set's hour
            report(parking.long_outage(bench, args.quick))
        if 11 in only:  # builds the Go simulator and Benthos into .local/bin the first time
            report(peer.peer(bench, args.repeat, args.quick))
        if 13 in only:  # the HTTP client alone, against the Go simulator
            report(http_clients.http_clients(args.repeat, args.quick))
        if 14 in only:  # the service's own work per event, in one process
            report(hot_path.hot_path(args.quick))
    met = [r.met for r in rows if r.met is not None]
    print(f"\n{sum(met)} of {len(met)} targets met", flush=True)


if __name__ == "__main__":
    main()
