"""Fixtures: the app and client (flaskr), a throwaway PostgreSQL database and RabbitMQ vhost per run.

Tests that need PostgreSQL or RabbitMQ skip when it is unreachable, and fail instead under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid

# Before any project module reads settings: the embedded broker and a scratch outbox.
for _name in ("BROKER_URL", "CLOUDAMQP_URL", "SMTP_URL", "PUSH_WEBHOOK_URL", "API_KEYS"):
    os.environ.pop(_name, None)
os.environ.setdefault("OUTBOX_DIR", tempfile.mkdtemp(prefix="outbox-"))
# The actors read their retry backoff at import: 10 ms for the workers in this process, so that the
# in-process delivery tests retry in milliseconds. Taken out again once read, so that the service
# processes tests start keep the default or set their own.
_THIS_PROCESS_ONLY = {} if "RETRY_DELAY" in os.environ else {"RETRY_DELAY": "0.01"}
os.environ.update(_THIS_PROCESS_ONLY)

import peewee  # noqa: E402
import pytest  # noqa: E402

import storage  # noqa: E402
from api import create_app  # noqa: E402

for _name in _THIS_PROCESS_ONLY:  # settings has read it
    del os.environ[_name]

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1")


def unavailable(what: str, reason: object) -> None:
    """Skip locally, fail in CI: a missing service must not turn CI green."""
    message = f"{what} unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test process, dropped at the end."""
    import psycopg2

    name = f"notif_test_{uuid.uuid4().hex[:10]}"
    try:
        _admin_sql(f'CREATE DATABASE "{name}"')
    except psycopg2.OperationalError as exc:
        unavailable("PostgreSQL", exc)
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    storage.db.obj.close() if isinstance(storage.db.obj, peewee.Database) else None
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_sql(statement: str) -> None:
    """Run one statement on a connection of its own (the server may have restarted meanwhile)."""
    import psycopg2

    admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(statement)
    finally:
        admin.close()


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """A PostgreSQL database of its own for one test, for processes started by that test."""
    name = f"{postgres_url.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}"
    _admin_sql(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq_url():
    """A throwaway RabbitMQ vhost for this test process, deleted at the end."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@{RABBIT_HOST}:5672/%2F")).close()
    except Exception as exc:
        unavailable("RabbitMQ", exc)
    vhost = f"notif_test_{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable("rabbitmqctl", exc)
    yield f"amqp://guest:guest@{RABBIT_HOST}:5672/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/notifications.db"
    url = request.getfixturevalue("postgres_url")
    storage.configure(url)
    with storage.db.connection_context():
        storage.db.execute_sql("TRUNCATE notification, notification_event, worker_process")
    return url


@pytest.fixture
def db(database_url):
    """The shared Database, pointed at a clean database."""
    database = storage.configure(database_url)
    yield database
    database.close()


@pytest.fixture
def app(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/api.db", "RUN_WORKERS": False})
    yield app
    storage.db.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def push_endpoint():
    """A real local HTTP endpoint receiving push notifications."""
    from tests.receivers import PushReceiver

    with PushReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture
def report(request):
    """Record a line of figures to print at the end of the run (carried back from xdist workers)."""
    return lambda line: request.node.user_properties.append(("figures", line))


def pytest_terminal_summary(terminalreporter):
    lines = [
        f"{report.nodeid.rsplit('::', 1)[-1]}: {value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "figures"
    ]
    if lines:
        terminalreporter.section("fault-injection figures")
        for line in lines:
            terminalreporter.write_line(line)
