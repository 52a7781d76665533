"""`python -m bench [--quick] [--scale F] [NAME ...]`: run the benchmarks (all by default) and report."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from bench.common import BenchError, machine_info
from bench.rounds import print_summary
from harness.servers import Unavailable

BENCHMARKS = {
    "ingest": "POST /notifications/push at c=64, plain and with keys and limit, vs bare Flask, interleaved",
    "bulk": "POST /notifications/batch of 1,000 vs the table's own 1,000-row INSERTs, interleaved",
    "e2e": "due-now notifications to a push endpoint vs a no-op Dramatiq actor draining as many, interleaved",
    "precision": "100,000 notifications all due within one minute: lateness p50/p99/max",
    "webpush": "due-now notifications, a Web Push device each, vs a no-op Dramatiq actor, interleaved",
    "schedule_scale": "notifications scheduled for next week: accept time, database size, broker, RSS",
    "memory": "RSS of gunicorn and dramatiq workers at idle and under load",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME", help=", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of everything in ~2 min"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the full sizes (N, durations) by this, e.g. 0.2 on a slow machine",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record the service's workers with py-spy (collapsed stacks) into DIR; skews the figures",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, what in BENCHMARKS.items():
            print(f"{name:15} {what}")
        return 0
    names = args.names or list(BENCHMARKS)
    if args.profile:
        os.environ["BENCH_PROFILE_DIR"] = os.path.abspath(args.profile)
    machine = machine_info()
    print(
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB; Python "
        f"{machine['python']}, PostgreSQL {machine['postgresql']}, RabbitMQ {machine['rabbitmq']}; "
        f"commit {machine['commit']}; load average {machine['load_average']}"
    )
    print(
        f"Mode: {'quick (small N: smoke run, not the figures)' if args.quick else 'full'}; scale {args.scale}"
    )
    failed = []
    figures: dict[str, dict] = {}
    started = time.monotonic()
    for name in names:
        print(f"\n=== {name}: {BENCHMARKS[name]}", flush=True)
        began = time.monotonic()
        try:
            figures[name] = importlib.import_module(f"bench.{name}").run(quick=args.quick, scale=args.scale)
        except (BenchError, Unavailable, TimeoutError) as exc:
            failed.append(name)
            print(f"  {name} could not run: {exc}", file=sys.stderr)
        except Exception:
            failed.append(name)
            traceback.print_exc()
        print(f"  {name} took {time.monotonic() - began:.0f}s", flush=True)
    print_summary(figures, os.getloadavg())
    print(
        f"\nAll done in {time.monotonic() - started:.0f}s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
