"""Typed configuration, read once from the environment; the only module that reads os.environ."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import secrets
import socket
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class SettingsError(ValueError):
    """A variable holds a value the service cannot start with."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = _env(name, default)
    if value:
        _url_scheme(name, value, schemes)
    return value


def _url_scheme(name: str, value: str, schemes: tuple[str, ...]) -> None:
    if value.split(":", 1)[0] not in schemes:
        raise SettingsError(
            f"{name} must start with one of {', '.join(s + '://' for s in schemes)}, got {value!r}"
        )


def _broker_urls(name: str, *, fallback: str) -> tuple[str, ...]:
    """A broker URL, or several ``amqp://`` ones (a RabbitMQ cluster's nodes) separated by ``,`` or ``;``."""
    used = name if _env(name, "") else fallback
    raw = _env(used, "")
    urls = tuple(url.strip() for url in re.split(r"[,;]", raw) if url.strip())
    for url in urls:
        _url_scheme(used, url, ("amqp", "amqps", "redis", "rediss"))
    if len(urls) > 1 and not all(url.startswith(("amqp://", "amqps://")) for url in urls):
        raise SettingsError(f"{used} lists several URLs: only RabbitMQ (amqp://) URLs can be listed")
    return urls


def _urls(name: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated URLs, in order of preference; empty means none."""
    urls = tuple(url.strip() for url in _env(name, "").split(",") if url.strip())
    for url in urls:
        _url_scheme(name, url, schemes)
    return urls


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env(name, default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _api_keys(name: str) -> tuple[str, ...]:
    """Comma-separated keys, each plain or ``sha256:<64 hex digits>``; empty means no keys."""
    keys = tuple(key.strip() for key in _env(name, "").split(",") if key.strip())
    for key in keys:
        if key.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", key):
            raise SettingsError(f"{name} has a sha256: entry that is not 64 hex digits")
    return keys


def _hosts(name: str) -> frozenset[str]:
    """Comma-separated host names or addresses, as written in URLs (without brackets), lowercased."""
    return frozenset(h.strip().lower().strip("[]") for h in _env(name, "").split(",") if h.strip())


def _addresses(name: str, default: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or networks, or ``*`` for any, exactly as gunicorn reads the same
    variable: unset is the default, but set and empty is no address at all."""
    raw = os.environ.get(name, default).strip()
    entries = tuple(entry.strip() for entry in raw.split(",") if entry) if raw else ()
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry)  # strict: 10.0.0.1/8 is refused, as gunicorn refuses it
        except ValueError:
            raise SettingsError(
                f"{name} must be IP addresses or networks separated by commas, or *, got {entry!r}"
            ) from None
    return entries


def _file(name: str) -> str:
    """A path to a file that must exist when set; empty means unset."""
    value = _env(name, "")
    if value and not os.path.isfile(value):
        raise SettingsError(f"{name} names no readable file: {value!r}")
    return value


def _vapid_subject(name: str, default: str) -> str:
    """A ``mailto:`` address or an ``https://`` URL: how a push service can reach the sender (RFC 8292)."""
    value = _env(name, default)
    if not re.fullmatch(r"mailto:[^@\s]+@[^@\s]+|https://[^/\s]+(/\S*)?", value, re.IGNORECASE):
        raise SettingsError(f"{name} must be a mailto: address or an https:// URL, got {value!r}")
    return value


_periods = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def _webhook_secret(name: str, *, required: bool) -> str:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of at least 24 bytes."""
    value = _env(name, "")
    if not value:
        if required:
            raise SettingsError(f"{name} must be set when STATUS_WEBHOOK_URL is")
        return ""
    prefix, _, encoded = value.partition("_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        key = b""
    if prefix != "whsec" or len(key) < 24:
        raise SettingsError(f"{name} must be whsec_ followed by the base64 of at least 24 bytes")
    return value


def _rate(name: str) -> tuple[int, int] | None:
    """``<count>/<second|minute|hour|day>`` as (count, seconds); empty means no limit."""
    raw = _env(name, "")
    if not raw:
        return None
    count, _, period = raw.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or period.strip().lower() not in _periods:
        raise SettingsError(
            f"{name} must look like 1000/minute (per second, minute, hour or day), got {raw!r}"
        )
    return int(count), _periods[period.strip().lower()]


def _secret_key(name: str, path: str, *, required: bool) -> str:
    value = _env(name, "")
    if value:
        if len(value) < 16:
            raise SettingsError(f"{name} must be at least 16 characters long")
        return value
    if required:
        raise SettingsError(
            f"{name} must be set when BROKER_URL is: every web and worker process signs and checks the"
            " unsubscribe links with it (python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    try:
        # O_EXCL: of processes starting together, one writes it and the others read that one.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    for _ in range(100):
        with open(path) as file:
            stored = file.read().strip()
        if stored:
            return stored
        time.sleep(0.01)  # another process created the file and is writing it
    raise SettingsError(f"{name}: the key in {path} is empty; delete the file to have a new one made")


DATABASE_URL: str = _url(
    "DATABASE_URL", "sqlite:///var/notifications.db", ("sqlite", "postgres", "postgresql")
)
# Empty means the embedded, in-process broker. PaaS add-ons publish the URL as CLOUDAMQP_URL. A
# RabbitMQ cluster is listed node by node: connections go to the first that answers.
BROKER_URLS: tuple[str, ...] = _broker_urls("BROKER_URL", fallback="CLOUDAMQP_URL")
BROKER_URL: str = ",".join(BROKER_URLS)  # the same as one string; empty without a broker
# Queues replicated on a RabbitMQ cluster's nodes (quorum), or each on one node (classic, Dramatiq's).
RABBITMQ_QUEUE_TYPE: str = _choice("RABBITMQ_QUEUE_TYPE", "classic", ("classic", "quorum"))

MAX_RETRY_ATTEMPTS: int = _int("MAX_RETRY_ATTEMPTS", 5, minimum=0, maximum=100)
RETRY_DELAY: float = _float("RETRY_DELAY", 1.0)
RETRY_MAX_DELAY: float = _float("RETRY_MAX_DELAY", 300.0)

APPROPRIATE_HOURS_START: int = _int("APPROPRIATE_HOURS_START", 8, minimum=0, maximum=23)
APPROPRIATE_HOURS_END: int = _int("APPROPRIATE_HOURS_END", 22, minimum=1, maximum=24)
if APPROPRIATE_HOURS_START >= APPROPRIATE_HOURS_END:
    raise SettingsError("APPROPRIATE_HOURS_START must be earlier than APPROPRIATE_HOURS_END")

# The database is the schedule: only rows due within this many seconds are handed to the broker.
SCHEDULE_HORIZON: float = _float("SCHEDULE_HORIZON", 60.0, minimum=1.0)
SCHEDULER_INTERVAL: float = _float("SCHEDULER_INTERVAL", 1.0, minimum=0.01)
DISPATCH_BATCH_SIZE: int = _int("DISPATCH_BATCH_SIZE", 500, minimum=1, maximum=10000)
# Notifications per delivery message: a worker claims and finishes them with one statement each.
DELIVERY_BATCH_SIZE: int = _int("DELIVERY_BATCH_SIZE", 50, minimum=1, maximum=1000)
# A queued message that has not been claimed this long after its due time is presumed lost.
DISPATCH_LEASE: float = _float("DISPATCH_LEASE", 600.0, minimum=1.0)
# A claimed row whose worker has not finished within this many seconds is presumed dead.
PROCESSING_LEASE: float = _float("PROCESSING_LEASE", 120.0, minimum=1.0)
# How long a worker waits for an unreachable database before giving the message back for a retry.
DATABASE_WAIT: float = _float("DATABASE_WAIT", 300.0)
PUBLISH_CONFIRMS: bool = _bool("PUBLISH_CONFIRMS", True)

DEFAULT_TIMEZONE: str = _env("DEFAULT_TIMEZONE", "UTC")
try:
    ZoneInfo(DEFAULT_TIMEZONE)
except (ZoneInfoNotFoundError, ValueError):
    raise SettingsError(f"DEFAULT_TIMEZONE is not an IANA timezone: {DEFAULT_TIMEZONE!r}") from None

# Delivery providers; the outbox under OUTBOX_DIR is used for a channel whose URL is unset.
# One relay, or several separated by commas: a transient failure on one tries the next at once.
SMTP_URLS: tuple[str, ...] = _urls("SMTP_URL", ("smtp", "smtp+starttls", "smtps"))
SMTP_URL: str = ",".join(SMTP_URLS)
EMAIL_FROM: str = _env("EMAIL_FROM", "notifications@localhost")
SMTP_TIMEOUT: float = _float("SMTP_TIMEOUT", 30.0, minimum=0.1)
PUSH_WEBHOOK_URL: str = _url("PUSH_WEBHOOK_URL", "", ("http", "https"))
PUSH_TIMEOUT: float = _float("PUSH_TIMEOUT", 10.0, minimum=0.1)
OUTBOX_DIR: str = _env("OUTBOX_DIR", "var/outbox")

# Status webhooks (Standard Webhooks): an event POSTed to STATUS_WEBHOOK_URL for each notification
# that becomes Delivered, Failed or Cancelled, signed with STATUS_WEBHOOK_SECRET, retried for up to
# STATUS_WEBHOOK_MAX_AGE seconds. Unset URL: no events are written.
STATUS_WEBHOOK_URL: str = _url("STATUS_WEBHOOK_URL", "", ("http", "https"))
STATUS_WEBHOOK_SECRET: str = _webhook_secret("STATUS_WEBHOOK_SECRET", required=bool(STATUS_WEBHOOK_URL))
STATUS_WEBHOOK_MAX_AGE: float = _float("STATUS_WEBHOOK_MAX_AGE", 86400.0, minimum=1.0)
STATUS_WEBHOOK_TIMEOUT: float = _float("STATUS_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)

# Access: with API keys set, every endpoint but /health needs one (never logged, compared in constant time).
API_KEYS: tuple[str, ...] = _api_keys("API_KEYS")
# HTTP Basic password for /dashboard, accepted besides the API keys; empty means keys only.
DASHBOARD_PASSWORD: str = _env("DASHBOARD_PASSWORD", "")
# Requests per API key (per client address without keys), as (count, window seconds); None is no limit.
RATE_LIMIT: tuple[int, int] | None = _rate("RATE_LIMIT")
# The proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (the client's address and
# scheme); gunicorn reads the same variable for its own wsgi.url_scheme, and gunicorn.conf.py hands it this.
FORWARDED_ALLOW_IPS: tuple[str, ...] = _addresses("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# What a client may send: the whole body, and the push `data` object serialised and nested.
MAX_REQUEST_BYTES: int = _int(
    "MAX_REQUEST_BYTES", 2 * 1024 * 1024, minimum=16 * 1024, maximum=64 * 1024 * 1024
)
MAX_DATA_BYTES: int = _int("MAX_DATA_BYTES", 4096, minimum=2, maximum=1024 * 1024)
MAX_DATA_DEPTH: int = _int("MAX_DATA_DEPTH", 5, minimum=1, maximum=32)

PORT: int = _int("PORT", 5000, minimum=1, maximum=65535)
WEB_CONCURRENCY: int = _int("WEB_CONCURRENCY", 2, minimum=1, maximum=64)
WEB_THREADS: int = _int("WEB_THREADS", 8, minimum=1, maximum=256)
# Like Dramatiq itself: a worker process per core.
WORKER_PROCESSES: int = _int("WORKER_PROCESSES", os.cpu_count() or 1, minimum=1, maximum=64)
WORKER_THREADS: int = _int("WORKER_THREADS", 8, minimum=1, maximum=256)

# Hosts a client-given URL (a push endpoint) may name although they are not public addresses; one
# listed may also be reached over http://. Compared with the host as written: localhost is not 127.0.0.1.
PUSH_ENDPOINT_ALLOWLIST: frozenset[str] = _hosts("PUSH_ENDPOINT_ALLOWLIST")

# Push to devices. Web Push (and UnifiedPush) signs with this VAPID key, created on first use when
# missing; workers on several hosts must share one file, since subscriptions are bound to the key.
VAPID_PRIVATE_KEY_FILE: str = _env("VAPID_PRIVATE_KEY_FILE", "var/vapid_private.pem")
VAPID_SUBJECT: str = _vapid_subject("VAPID_SUBJECT", "mailto:" + EMAIL_FROM)
# FCM HTTP v1: a Google service-account JSON; the project defaults to the file's project_id.
FCM_CREDENTIALS_FILE: str = _file("FCM_CREDENTIALS_FILE")
FCM_PROJECT_ID: str = _env("FCM_PROJECT_ID", "")
FCM_URL: str = _url("FCM_URL", "https://fcm.googleapis.com", ("http", "https")).rstrip("/")
# APNs, token-based: the .p8 key, its key id, the team id, and the app's bundle id as topic.
APNS_KEY_FILE: str = _file("APNS_KEY_FILE")
APNS_KEY_ID: str = _env("APNS_KEY_ID", "")
APNS_TEAM_ID: str = _env("APNS_TEAM_ID", "")
APNS_TOPIC: str = _env("APNS_TOPIC", "")
APNS_URL: str = _url("APNS_URL", "https://api.push.apple.com", ("https",)).rstrip("/")
APNS_SANDBOX_URL: str = _url("APNS_SANDBOX_URL", "https://api.sandbox.push.apple.com", ("https",)).rstrip("/")
# CA certificates trusted besides the system's, for a private APNs gateway.
APNS_CA_FILE: str = _file("APNS_CA_FILE")

METRICS_ENABLED: bool = _bool("METRICS_ENABLED", True)
# Where gunicorn's workers keep the API's Prometheus metrics so that any of them can report the sum
# (prometheus_client reads the same variable); empty: one process, metrics in memory.
PROMETHEUS_MULTIPROC_DIR: str = _env("PROMETHEUS_MULTIPROC_DIR", "")
# How often each worker process records that it is alive, and how many messages it holds.
WORKER_HEARTBEAT_INTERVAL: float = _float("WORKER_HEARTBEAT_INTERVAL", 10.0, minimum=0.1)
PUSH_METRICS_PORT: int = _int("PUSH_METRICS_PORT", 5001, minimum=1, maximum=65535)
EMAIL_METRICS_PORT: int = _int("EMAIL_METRICS_PORT", 5002, minimum=1, maximum=65535)
WEBHOOKS_METRICS_PORT: int = _int("WEBHOOKS_METRICS_PORT", 5003, minimum=1, maximum=65535)

LOG_LEVEL: str = _env("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")

# Recorded on events and used to group metrics by the host that handled a notification.
HOSTNAME: str = _env("HOSTNAME", socket.gethostname())

# Where clients reach this service: the links in emails (one-click unsubscribe) start with it.
PUBLIC_URL: str = _url("PUBLIC_URL", "http://127.0.0.1:5000", ("http", "https")).rstrip("/")
# Signs the unsubscribe links. The embedded default makes one, once, into SECRET_KEY_FILE; with a
# broker, web and workers may run on several hosts, which must all share one: it must be set.
SECRET_KEY_FILE: str = _env("SECRET_KEY_FILE", "var/secret_key")
SECRET_KEY: str = _secret_key("SECRET_KEY", SECRET_KEY_FILE, required=bool(BROKER_URL))
