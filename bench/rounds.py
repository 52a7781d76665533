"""Ratios to ceilings measured in the same run: alternating rounds, medians, the ratio, the targets."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from typing import Any

from bench.common import log, print_table

# Issue 16: every ceiling is measured in turn with what it bounds, at least this many rounds each.
ROUNDS = 5

# The targets of issue 16, by figure: (what, ceiling, target as text, test on the summary).
TARGETS: dict[str, tuple[str, str, str, Callable[[dict[str, Any]], bool]]] = {
    "push_c64": (
        "POST /notifications/push, c=64",
        "bare Flask, same gunicorn settings",
        ">= 0.5, p99 <= 1.2 x bare p99",
        lambda s: s["ratio"] >= 0.5 and s["p99_ratio"] is not None and s["p99_ratio"] <= 1.2,
    ),
    "push_c64_keys_limit": (
        "the same with API_KEYS and RATE_LIMIT",
        "the same bare Flask",
        ">= 0.4",
        lambda s: s["ratio"] >= 0.4,
    ),
    "batch_1000": (
        "POST /notifications/batch, 1,000 each",
        "PostgreSQL's own 1,000-row INSERTs",
        ">= 0.7",
        lambda s: s["ratio"] >= 0.7,
    ),
    "webhook_delivery": (
        "due now -> delivered, HTTP webhook",
        "no-op Dramatiq actor, same count, same broker",
        ">= 1.0",
        lambda s: s["ratio"] >= 1.0,
    ),
    "webpush_delivery": (
        "due now -> delivered, one Web Push device each",
        "the same no-op drain",
        ">= 0.5",
        lambda s: s["ratio"] >= 0.5,
    ),
}


def interleave(
    service: Callable[[], dict[str, Any]], ceiling: Callable[[], dict[str, Any]], rounds: int, what: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``service`` and ``ceiling`` in turn, ``rounds`` times each, so both see the same host."""
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for i in range(rounds):
        log(f"{what}: round {i + 1}/{rounds}, service")
        ours.append({**service(), "load_average_after": _load()})
        log(f"{what}: round {i + 1}/{rounds}, ceiling")
        theirs.append({**ceiling(), "load_average_after": _load()})
    return ours, theirs


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summarise(
    service: list[float],
    ceiling: list[float],
    *,
    service_p99: list[float] | None = None,
    ceiling_p99: list[float] | None = None,
) -> dict[str, Any]:
    """Median of each side, the ratio of the medians (and of the p99 medians), every round's value."""
    ours, theirs = statistics.median(service), statistics.median(ceiling)
    out: dict[str, Any] = {
        "service_rounds": list(service),
        "ceiling_rounds": list(ceiling),
        "service_median": ours,
        "ceiling_median": theirs,
        "ratio": round(ours / theirs, 3) if theirs else None,
        "p99_ratio": None,
    }
    if service_p99 and ceiling_p99:
        p99_ours, p99_theirs = statistics.median(service_p99), statistics.median(ceiling_p99)
        out |= {
            "service_p99_rounds": list(service_p99),
            "ceiling_p99_rounds": list(ceiling_p99),
            "service_p99_median": p99_ours,
            "ceiling_p99_median": p99_theirs,
            "p99_ratio": round(p99_ours / p99_theirs, 3) if p99_theirs else None,
        }
    return out


def verdict(key: str, summary: dict[str, Any]) -> bool:
    return summary["ratio"] is not None and TARGETS[key][3](summary)


def rounds_text(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in values)


def print_ratios(title: str, results: dict[str, dict[str, Any]]) -> None:
    """One line per figure: the ratio, both medians, the target and every round."""
    rows = []
    for key, s in results.items():
        target = TARGETS.get(key)
        p99 = (
            f"{s['service_p99_median']:.0f} vs {s['ceiling_p99_median']:.0f} ms ({s['p99_ratio']:.2f})"
            if s.get("p99_ratio") is not None
            else "-"
        )
        rows.append(
            [
                key,
                f"{s['ratio']:.2f}" if s["ratio"] is not None else "-",
                s["service_median"],
                s["ceiling_median"],
                p99,
                target[2] if target else "-",
                ("yes" if verdict(key, s) else "no") if target else "-",
                rounds_text(s["service_rounds"]),
                rounds_text(s["ceiling_rounds"]),
            ]
        )
    headers = ["figure", "ratio", "service", "ceiling", "p99 service vs ceiling", "target", "met"]
    print_table(title, [*headers, "service rounds", "ceiling rounds"], rows)


PRECISION_TARGET = "p99 < 0.25 s, max < 1 s"


def print_summary(figures: dict[str, Any], load_average: tuple[float, ...]) -> None:
    """The issue's table: every ratio with its target, then the precision figures."""
    rows = []
    for results in figures.values():
        for key, s in results.items():
            if key in TARGETS:
                what, ceiling, target, _ = TARGETS[key]
                p99 = f", p99 ratio {s['p99_ratio']:.2f}" if s.get("p99_ratio") is not None else ""
                rows.append(
                    [
                        what,
                        ceiling,
                        f"{s['ratio']:.2f}{p99}",
                        f"{s['service_median']:,.0f} vs {s['ceiling_median']:,.0f} {s.get('unit', '')}",
                        target,
                        "yes" if verdict(key, s) else "no",
                    ]
                )
    if precision := figures.get("precision"):
        by_db = precision["by_delivered_at"]
        rows.append(
            [
                f"{precision['n']:,} due within the window",
                "-",
                f"p99 {by_db['p99']:.3f} s, max {by_db['max']:.3f} s",
                "-",
                PRECISION_TARGET,
                "yes" if precision_met(by_db) else "no",
            ]
        )
    if rows:
        load = ", ".join(f"{x:.2f}" for x in load_average)
        print_table(
            f"Against issue 16's targets (load average at the end {load})",
            ["benchmark", "ceiling measured in the same run", "ratio", "medians", "target", "met"],
            rows,
        )


def precision_met(by_delivered_at: dict[str, Any]) -> bool:
    p99, worst = by_delivered_at["p99"], by_delivered_at["max"]
    return p99 is not None and worst is not None and p99 < 0.25 and worst < 1.0
