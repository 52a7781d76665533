"""A status webhooks receiver's side: its secret, and the events received, verified with standardwebhooks."""

from __future__ import annotations

import base64
from typing import Any

from standardwebhooks.webhooks import Webhook

from harness.receivers import PushReceiver

SECRET = "whsec_" + base64.b64encode(b"status-webhook-test-secret-32by").decode()


def verified(receiver: PushReceiver, secret: str = SECRET) -> list[tuple[str, dict[str, Any]]]:
    """Every request received, as (webhook-id, event); raises if any signature does not verify."""
    verifier = Webhook(secret)
    return [
        (request.headers["webhook-id"], verifier.verify(request.raw, request.headers))
        for request in list(receiver.requests)
    ]
