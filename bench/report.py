"""`python -m bench.report [--quick]`: the figures in bench/results/*.json as Markdown (bench/README.md)."""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.common import RESULTS, fmt
from bench.rounds import ROUNDS, TARGETS, rounds_text, verdict


def _load(name: str, quick: bool) -> dict[str, Any] | None:
    path = RESULTS / f"{name}{'-quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


ROUND_HEADERS = ("service rounds", "ceiling rounds")


def report(quick: bool) -> str:
    out: list[str] = []
    machine = None
    ratio_rows = []
    for name in ("ingest", "bulk", "e2e"):
        if doc := _load(name, quick):
            machine = machine or doc["machine"]
            for key, s in doc["results"].items():
                if key not in TARGETS or "ratio" not in s:
                    continue
                what, ceiling, target, _ = TARGETS[key]
                p99 = (
                    f"{s['service_p99_median']:.0f} vs {s['ceiling_p99_median']:.0f} ms "
                    f"({s['p99_ratio']:.2f})"
                    if s.get("p99_ratio") is not None
                    else "-"
                )
                ratio_rows.append(
                    [
                        what,
                        ceiling,
                        f"**{s['ratio']:.2f}**",
                        f"{s['service_median']:,.0f} vs {s['ceiling_median']:,.0f} {s.get('unit', '')}",
                        p99,
                        target,
                        verdict(key, s),
                        rounds_text(s["service_rounds"]),
                        rounds_text(s["ceiling_rounds"]),
                    ]
                )
    if ratio_rows:
        out.append(f"### ratios to ceilings, interleaved ({ROUNDS} rounds each, medians)\n")
        out.append(
            _table(
                [*("benchmark", "ceiling", "ratio", "medians", "p99", "target", "met"), *ROUND_HEADERS],
                ratio_rows,
            )
        )
    if doc := _load("precision", quick):
        res = doc["results"]
        out.append(
            f"\n### precision ({doc['mode']}, N = {res['n']:,} "
            f"due within {doc['params']['window_s']:.0f} s)\n"
        )
        out.append(
            _table(
                ["lateness by", "p50 s", "p90 s", "p99 s", "max s", "undelivered at end"],
                [
                    [
                        "delivered_at - due_at",
                        *(res["by_delivered_at"][k] for k in ("p50", "p90", "p99", "max")),
                        res["undelivered_at_end"],
                    ],
                    [
                        "endpoint arrival - due_at",
                        *(res["by_arrival"][k] for k in ("p50", "p90", "p99", "max")),
                        None,
                    ],
                ],
            )
        )
    if doc := _load("schedule_scale", quick):
        res = doc["results"]
        out.append(
            f"\n### schedule_scale ({doc['mode']}, {res['accepted']:,} accepted in {res['accept_seconds']} s "
            f"= {res['accepted_per_s']:,.0f}/s)\n"
        )
        rows = []
        for label in ("before", "after"):
            s = res[label]
            rss = s["rss_mib"]
            rows.append(
                [
                    label,
                    s["rows"],
                    s["database_mib"],
                    sum(q["ready"] + q["unacked"] for q in s["queues"].values()),
                    round(sum(q["memory_bytes"] for q in s["queues"].values()) / 1024, 1),
                    s["rabbitmq_node_memory_mib"].get("rss_bytes"),
                    max(rss.get("dramatiq worker", [0])),
                    max(rss.get("gunicorn worker", [0])),
                    s["idle_cpu_percent_workers"],
                    s["scheduler_pass_ms"],
                ]
            )
        headers = ["when", "rows", "database MiB", "queued", "queues KiB", "RabbitMQ node RSS MiB"]
        headers += [
            "dramatiq worker RSS MiB",
            "gunicorn worker RSS MiB",
            "idle CPU % workers",
            "scheduler query ms",
        ]
        out.append(_table(headers, rows))
    if doc := _load("memory", quick):
        res = doc["results"]
        out.append(
            f"\n### memory ({doc['mode']}, {doc['params']['load_seconds']} s of load at "
            f"{res['load']['requests_per_s']:,.0f} requests/s; RSS MiB)\n"
        )
        out.append(
            _table(
                ["process", "count", "idle", "peak under load", "peak incl. drain", "after"],
                [list(r.values()) for r in res["rss"]],
            )
        )
    if machine:
        out.insert(
            0,
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
            f"{machine['os']}; Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
            f"RabbitMQ {machine['rabbitmq']}, {machine['wrk']}; commit {machine['commit']}.\n",
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(report("--quick" in sys.argv[1:]))
