"""The embedded default: "sent" messages land in files under OUTBOX_DIR, no server needed to see them."""

from __future__ import annotations

import json
import logging
import mailbox
import os
import threading
from datetime import UTC, datetime

from actors.providers.base import Envelope, TransientDeliveryError
from actors.providers.smtp import build_message
from actors.providers.webhook import push_payload

logger = logging.getLogger(__name__)


class MaildirOutbox:
    """Email into the Maildir ``<directory>/email``; read it with any mail client or ``mailbox.Maildir``."""

    name = "outbox"

    def __init__(self, directory: str, sender: str = "notifications@localhost") -> None:
        self.path = os.path.join(directory, "email")
        self.sender = sender
        # Maildir's unique file names use a class-wide counter that is not thread-safe.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MaildirOutbox({self.path})"

    def deliver(self, envelope: Envelope) -> None:
        """Add the email, built exactly as SMTP would send it, to the Maildir."""
        message = build_message(envelope, self.sender)
        try:
            with self._lock:
                # Opened per delivery, so a Maildir removed while running is simply made again.
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                mailbox.Maildir(self.path, create=True).add(message)
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write to {self.path}: {exc!r}") from exc
        logger.debug("Delivered %s to %r", envelope.notification_id, self)


class JsonLinesOutbox:
    """Push notifications appended as JSON lines to ``<directory>/push.jsonl``."""

    name = "outbox"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "push.jsonl")

    def __repr__(self) -> str:
        return f"JsonLinesOutbox({self.path})"

    def deliver(self, envelope: Envelope) -> None:
        """Append one line: the webhook's payload plus ``delivered_at``."""
        record = push_payload(envelope) | {"delivered_at": datetime.now(UTC).isoformat()}
        # ensure_ascii escapes U+2028 and friends too, so the record is one line for every reader.
        line = (json.dumps(record, ensure_ascii=True) + "\n").encode()
        try:
            os.makedirs(self.directory, exist_ok=True)
            # One write() on an O_APPEND descriptor lands whole at the end, whatever other processes do.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TransientDeliveryError(f"cannot append to {self.path}: {exc!r}") from exc
        if written != len(line):  # only on a full disk; the torn line is left for a reader to skip
            raise TransientDeliveryError(f"short write to {self.path}: {written} of {len(line)} bytes")
        logger.debug("Delivered %s to %r", envelope.notification_id, self)
