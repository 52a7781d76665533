"""A fault-injection run's figures: what was accepted in batches, then delivered, duplicated and lost."""

from __future__ import annotations

from harness.payloads import push_item
from harness.processes import Service
from harness.receivers import PushReceiver
from harness.waiting import wait_until


def accept_batch(service: Service, count: int, prefix: str) -> list[str]:
    """POST ``count`` push notifications due now in one batch (recipients ``<prefix><i>``); their ids."""
    items = [push_item(i, recipient_id=f"{prefix}{i}") for i in range(count)]
    status, answer = service.request("POST", "/notifications/batch", {"notifications": items})
    assert status == 202, answer
    return answer["notification_ids"]


def statuses(service: Service) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in ("Delivered", "Failed"):
        _, answer = service.request("GET", f"/notifications?status={status}&limit=1")
        counts[status] = answer["count"]
    return counts


def figures(accepted: list[str], receiver: PushReceiver, service: Service) -> dict[str, int]:
    # A worker killed while sending leaves a partial request behind: that is no delivery.
    received = [r.body["notification_id"] for r in receiver.requests if r.body]
    unique = set(received)
    counts = statuses(service)
    return {
        "accepted": len(accepted),
        "delivered": counts["Delivered"],
        "failed": counts["Failed"],
        "received": len(received),
        "duplicates": len(received) - len(unique),
        "lost": len(set(accepted) - unique),
    }


def delivered_figures(service: Service, accepted: list[str], receiver: PushReceiver) -> dict[str, int]:
    """Await every accepted notification Delivered; return the run's figures."""
    wait_until(
        lambda: statuses(service)["Delivered"] == len(accepted),
        timeout=120,
        what=f"all {len(accepted)} accepted notifications Delivered",
    )
    return figures(accepted, receiver, service)
