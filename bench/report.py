"""`python -m bench.report [--quick]`: the figures in bench/results/*.json as Markdown (bench/README.md)."""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.common import RESULTS, fmt


def _load(name: str, quick: bool) -> dict[str, Any] | None:
    path = RESULTS / f"{name}{'-quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(quick: bool) -> str:
    out: list[str] = []
    machine = None
    if doc := _load("ingest", quick):
        machine = doc["machine"]
        out.append(f"### ingest ({doc['mode']}, {doc['params']['seconds']} s per run)\n")
        out.append(
            _table(
                ["concurrency", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"],
                [
                    [
                        *(r[k] for k in ("concurrency", "requests_per_s", "p50_ms", "p90_ms", "p99_ms")),
                        r["max_ms"],
                        r["http_errors"] + r["socket_errors"] + r["timeouts"],
                    ]
                    for r in doc["results"]["runs"]
                ],
            )
        )
    if doc := _load("bulk", quick):
        out.append(f"\n### bulk ({doc['mode']}, {doc['params']['seconds']} s per run, 1,000 per batch)\n")
        out.append(
            _table(
                ["client threads", "notifications/s", "p50 ms/batch", "p99 ms/batch", "errors"],
                [
                    [r["concurrency"], r["notifications_per_s"], r["p50_ms"], r["p99_ms"], r["errors"]]
                    for r in doc["results"]["runs"]
                ],
            )
        )
    if doc := _load("e2e", quick):
        res = doc["results"]
        base = res["noop_ceiling"][0]["messages_per_s"]
        out.append(f"\n### e2e ({doc['mode']}, N = {doc['params']['n']:,})\n")
        rows = [
            [
                f"pipeline, PUBLISH_CONFIRMS={str(r['publish_confirms']).lower()}",
                r["deliveries_per_s"],
                f"{r['deliveries_per_s'] / base:.0%}",
                r["first_accept_to_last_delivery_s"],
                r["accept_to_delivery_p50_s"],
                r["accept_to_delivery_p99_s"],
            ]
            for r in res["pipeline"]
        ]
        rows += [
            [
                f"no-op actor -p {c['processes']} -t {c['threads']}",
                c["messages_per_s"],
                f"{c['messages_per_s'] / base:.0%}",
                c["drain_seconds"],
                None,
                None,
            ]
            for c in res["noop_ceiling"]
        ]
        headers = ["what", "per s", "of -p 1 ceiling", "span s", "accept->delivery p50 s", "p99 s"]
        out.append(_table(headers, rows))
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
