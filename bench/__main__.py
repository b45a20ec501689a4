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

from bench import scenarios
from bench.harness import Bench
from bench.scenarios import Row


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | measure | asset-sync | baseline | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        base = f"{r.baseline:,.1f}" if r.baseline is not None else ""
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.scenario} | {r.measure} | {r.value:,.1f} {r.unit} | {base} | "
            f"{r.ratio()} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller event counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8")
    args = parser.parse_args()
    only = {int(x) for x in args.only.split(",")}
    rows: list[Row] = []
    print(
        f"# asset-sync bench {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{'quick' if args.quick else 'full'}, median of {args.repeat}",
        flush=True,
    )
    with Bench() as bench:
        if 8 in only:
            rows += scenarios.validation_cost(args.repeat)
        if 1 in only:
            rows += scenarios.drain_instant(bench, args.repeat, args.quick)
        reference: dict[str, Any] = {}
        if only & {2, 4}:
            slow_rows, reference = scenarios.drain_slow(bench, args.repeat, args.quick)
            rows += slow_rows
        if 3 in only:
            rows += scenarios.autodesk_batching(bench, args.repeat, args.quick)
        if 4 in only:
            rows += scenarios.isolation(bench, args.quick, reference)
        if 5 in only:
            rows += scenarios.rate_limit(bench, args.repeat, args.quick)
        if 6 in only:
            rows += scenarios.scale_out(bench, args.quick)
        if 7 in only:
            rows += scenarios.memory(bench, args.quick)
        print(table(rows), flush=True)


if __name__ == "__main__":
    main()
