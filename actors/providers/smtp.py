"""Email over SMTP: plain, STARTTLS or implicit TLS, one short connection per message, relays in turn."""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from actors.providers.base import Envelope, PermanentDeliveryError, TransientDeliveryError

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
# C0, DEL, C1 and the Unicode line/paragraph separators: anything a header could be split on.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _one_line(text: str) -> str:
    """Fold control characters to single spaces so a value can never start a header of its own."""
    return _CONTROL_CHARS.sub(" ", text).strip()


def message_id_for(notification_id: str, sender: str) -> str:
    """The Message-ID a notification always gets, so a resent copy can be recognised as the same."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    # Percent-encoding keeps the left part a dot-atom and two different ids distinct.
    return f"<{quote(notification_id, safe='.-_~')}@{_one_line(domain)}>"


def recipient_address(envelope: Envelope) -> str:
    """The one address an envelope goes to; PermanentDeliveryError if it is not exactly one."""
    recipient = (envelope.address or envelope.recipient_id).strip()
    addresses = getaddresses([recipient]) if not _CONTROL_CHARS.search(recipient) else []
    # A recipient id without "@" is no address: its profile lost the email it had at acceptance.
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        raise PermanentDeliveryError(f"invalid email recipient {envelope.address or envelope.recipient_id!r}")
    return addresses[0][1]


# Headers whose value is one <URL> a mail client must read as it is. The default policy folds a long
# header and, a URL having no space to fold at, RFC 2047-encodes it instead: no client follows that.
_LINKS = frozenset({"list-unsubscribe"})
# RFC 5322's limit for a line, the header's name included.
_MAX_LINE = 998


class _LinkPolicy(EmailPolicy):
    """The default policy, but headers in _LINKS are written as they are, on one line."""

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in _LINKS:
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in _LINKS:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_POLICY = _LinkPolicy()


def build_message(envelope: Envelope, sender: str) -> EmailMessage:
    """The email for an envelope; raises PermanentDeliveryError for a recipient no server could take.

    With an HTML part it is multipart/alternative, the text first: readers show the last part they can.
    """
    recipient_address(envelope)
    message = EmailMessage(policy=_POLICY)
    message["From"] = _one_line(sender)
    message["To"] = (envelope.address or envelope.recipient_id).strip()
    message["Subject"] = _one_line(envelope.subject or "") or "Notification"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id_for(envelope.notification_id, sender)
    _add_unsubscribe(message, envelope)
    message.set_content(envelope.content)
    if envelope.html:
        message.add_alternative(envelope.html, subtype="html")
    return message


def _add_unsubscribe(message: EmailMessage, envelope: Envelope) -> None:
    """RFC 2369's List-Unsubscribe with RFC 8058's one-click POST, when the envelope has a link."""
    url = envelope.unsubscribe_url
    if not url:
        return
    if not url.isascii() or _CONTROL_CHARS.search(url) or len("List-Unsubscribe: <>") + len(url) > _MAX_LINE:
        # Only a recipient id of hundreds of non-ASCII characters makes a token this long.
        logger.warning(
            "No List-Unsubscribe for %s: its link is not one short ASCII line", envelope.notification_id
        )
        return
    message["List-Unsubscribe"] = f"<{url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"


class RelayRefused(PermanentDeliveryError):
    """A relay's 5xx to us, not to the message (greeting, EHLO, AUTH, MAIL FROM): another may take it."""


class SmtpProvider:
    """Sends through the relay an ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URL names."""

    name = "smtp"

    def __init__(
        self, url: str, sender: str, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"SMTP URL must start with smtp://, smtp+starttls:// or smtps://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"SMTP URL has no host: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else ""
        self.sender = sender
        self.envelope_sender = parseaddr(sender)[1] or sender
        self.timeout = timeout
        self.ssl_context = ssl_context
        if self.ssl_context is None and self.scheme != "smtp":
            self.ssl_context = ssl.create_default_context()
        # smtplib would otherwise resolve our FQDN again for every connection's EHLO.
        self._local_hostname = socket.getfqdn()

        #: The relay as events and logs name it: its URL without the credentials.
        self.address = f"{self.scheme}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"SmtpProvider({self.address})"

    def deliver(self, envelope: Envelope) -> str:
        """Send one email, return the relay; 4xx and network trouble are transient, 5xx permanent."""
        message = build_message(envelope, self.sender)
        recipient = recipient_address(envelope)
        try:
            self._send(message, recipient)
        except smtplib.SMTPRecipientsRefused as exc:
            # Not an SMTPResponseException: the codes are per recipient, and we send to exactly one.
            code, text = next(iter(exc.recipients.values()), (-1, b"recipient refused"))
            raise _by_code(code, text, self.address) from exc
        except smtplib.SMTPDataError as exc:
            # Refused at DATA: the message or its recipient, which no other relay would take either.
            raise _by_code(exc.smtp_code, exc.smtp_error, self.address) from exc
        except smtplib.SMTPResponseException as exc:
            # Greeting, EHLO, AUTH or MAIL FROM: this relay's verdict on us, not on the message.
            raise _by_code(exc.smtp_code, exc.smtp_error, self.address, permanent=RelayRefused) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Disconnects, timeouts, refused connections, TLS failures, a server lacking STARTTLS/AUTH:
            # all may pass once the network or the relay's configuration is fixed.
            raise TransientDeliveryError(f"SMTP {self.address}: {exc!r}") from exc
        logger.debug("Delivered %s to %s via %s", envelope.notification_id, recipient, self.address)
        return self.address

    def _send(self, message: EmailMessage, recipient: str) -> None:
        smtp = self._connect()
        try:
            if self.username is not None:
                smtp.login(self.username, self.password)
            smtp.send_message(message, from_addr=self.envelope_sender, to_addrs=[recipient])
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
            # The conversation is intact, so say goodbye properly.
            _quit_quietly(smtp)
            raise
        except BaseException:
            # The connection's state is unknown (timeout, reset): a QUIT could wait out another timeout.
            smtp.close()
            raise
        # Delivery is decided once the server accepted DATA; trouble saying goodbye must not undo that.
        _quit_quietly(smtp)

    def _connect(self) -> smtplib.SMTP:
        # Given a host, the constructor connects and reads the greeting, closing the socket if either fails.
        smtp: smtplib.SMTP
        if self.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self._local_hostname,
                timeout=self.timeout,
                context=self.ssl_context,
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, local_hostname=self._local_hostname, timeout=self.timeout
            )
        if self.scheme == "smtp+starttls":
            try:
                smtp.starttls(context=self.ssl_context)
            except BaseException:
                smtp.close()
                raise
        return smtp


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _by_code(
    code: int,
    text: bytes | str,
    relay: str,
    *,
    permanent: type[PermanentDeliveryError] = PermanentDeliveryError,
) -> TransientDeliveryError | PermanentDeliveryError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    reason = f"SMTP {code} {_one_line(text)} from {relay}"
    if 500 <= code <= 599:
        return permanent(reason)
    # 4xx by definition; anything stranger (a -1 from smtplib, a 3xx where 2xx was due) is not a verdict.
    return TransientDeliveryError(reason)


class SmtpFailover:
    """Several relays in order of preference: the first that takes a message delivers it.

    A transient failure (network trouble, a timeout, a 4xx) or a relay refusing us moves on to the
    next relay at once; a 5xx about the message or its recipient ends the attempt, since every relay
    would say the same. When no relay took it, the attempt is transient if any relay's failure was.
    """

    name = "smtp"

    def __init__(self, relays: Sequence[SmtpProvider]) -> None:
        if not relays:
            raise ValueError("SmtpFailover needs at least one relay")
        self.relays = tuple(relays)

    def __repr__(self) -> str:
        return f"SmtpFailover({', '.join(relay.address for relay in self.relays)})"

    def deliver(self, envelope: Envelope) -> str:
        """Send through the first relay that takes the email; return that relay."""
        failures: list[PermanentDeliveryError | TransientDeliveryError] = []
        for relay in self.relays:
            try:
                return relay.deliver(envelope)
            except (TransientDeliveryError, RelayRefused) as exc:
                logger.warning(
                    "Relay %s did not take %s, trying the next: %s",
                    relay.address,
                    envelope.notification_id,
                    exc,
                )
                failures.append(exc)
        reason = "no relay took it: " + "; ".join(failure.reason for failure in failures)
        if any(failure.transient for failure in failures):
            raise TransientDeliveryError(reason) from failures[-1]
        raise PermanentDeliveryError(reason) from failures[-1]
