"""Fixtures: the app and client (flaskr), a throwaway PostgreSQL database and RabbitMQ vhost per run,
the receivers. They are thin: what they stand up is in harness/.

Tests that need PostgreSQL or RabbitMQ skip when it is unreachable, and fail instead under CI=true.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid

# Before any project module reads settings: the embedded broker and a scratch outbox.
for _name in ("BROKER_URL", "CLOUDAMQP_URL", "SMTP_URL", "PUSH_WEBHOOK_URL", "API_KEYS"):
    os.environ.pop(_name, None)
os.environ.setdefault("OUTBOX_DIR", tempfile.mkdtemp(prefix="outbox-"))


def _push_settings() -> dict[str, str]:
    """Devices of every kind may be registered in this process, and sent to the local push services.

    The local services listen on 127.0.0.1; the VAPID key is the run's own. FCM's and APNs' settings
    name credentials of no service: the tests that send to those kinds start service processes with
    the local services' credentials.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = tempfile.mkdtemp(prefix="push-settings-")
    service_account = os.path.join(directory, "service-account.json")
    with open(service_account, "w") as file:
        file.write('{"type": "service_account", "project_id": "in-process-tests"}')
    apns_key = os.path.join(directory, "AuthKey_TESTKEY123.p8")
    with open(apns_key, "wb") as file:
        file.write(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return {
        "PUSH_ENDPOINT_ALLOWLIST": "127.0.0.1",
        "VAPID_PRIVATE_KEY_FILE": os.path.join(directory, "vapid_private.pem"),
        "FCM_CREDENTIALS_FILE": service_account,
        "APNS_KEY_FILE": apns_key,
        "APNS_KEY_ID": "TESTKEY123",
        "APNS_TEAM_ID": "TESTTEAM12",
        "APNS_TOPIC": "org.example.tests",
    }


os.environ.setdefault("SECRET_KEY", "test-secret-key-of-this-run-0123456789")
# The actors read their retry backoff at import: 10 ms for the workers in this process, so that the
# in-process delivery tests retry in milliseconds; and the push settings above. Taken out again once
# read, so that the service processes tests start keep the defaults or set their own.
_THIS_PROCESS_ONLY = ({} if "RETRY_DELAY" in os.environ else {"RETRY_DELAY": "0.01"}) | _push_settings()
os.environ.update(_THIS_PROCESS_ONLY)

import peewee  # noqa: E402
import pytest  # noqa: E402

import storage  # noqa: E402
from api import create_app  # noqa: E402
from harness import factories  # noqa: E402
from harness.receivers import PushReceiver, SmtpReceiver  # noqa: E402
from harness.servers import Servers, required, throwaway_name  # noqa: E402

SERVERS = Servers.from_environment("TEST")
for _name in _THIS_PROCESS_ONLY:  # settings has read it
    del os.environ[_name]


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test process, dropped at the end."""
    with required():
        name = SERVERS.create_database(throwaway_name("notif_test"))
    yield SERVERS.database_url(name)
    storage.db.obj.close() if isinstance(storage.db.obj, peewee.Database) else None
    SERVERS.drop_database(name)


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """A PostgreSQL database of its own for one test, for processes started by that test."""
    name = SERVERS.create_database(throwaway_name(postgres_url.rsplit("/", 1)[1], 6))
    yield SERVERS.database_url(name)
    SERVERS.drop_database(name)


@pytest.fixture(scope="session")
def rabbitmq_url():
    """A throwaway RabbitMQ vhost for this test process, deleted at the end."""
    with required():
        vhost = SERVERS.create_vhost(throwaway_name("notif_test"))
    yield SERVERS.broker_url(vhost)
    SERVERS.delete_vhost(vhost)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/notifications.db"
    url = request.getfixturevalue("postgres_url")
    storage.configure(url)
    with storage.db.connection_context():
        storage.db.execute_sql(
            "TRUNCATE notification, notification_event, worker_process, device, delivery, status_event"
        )
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


API_KEY = "test-key-0123456789"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def keyed_client(request, tmp_path):
    """A client presenting an API key to an app with keys set, on SQLite and on PostgreSQL.

    The PostgreSQL database is the run's: a test names its recipients uniquely (``recipient_id``).
    """
    sqlite = f"sqlite:///{tmp_path}/api.db"
    url = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    app = create_app({"TESTING": True, "DATABASE_URL": url, "RUN_WORKERS": False, "API_KEYS": (API_KEY,)})
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = API_KEY
    with app.app_context():
        yield client
    storage.db.close()


@pytest.fixture
def recipient_id():
    """A recipient id of this test's own."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def seeded(app):
    """Notifications in each state the dashboard shows, and a worker; their ids by role."""
    with app.app_context():
        return factories.dashboard_rows()


@pytest.fixture
def push_endpoint():
    """A real local HTTP endpoint receiving push notifications."""
    with PushReceiver() as receiver:
        yield receiver


@pytest.fixture
def smtp_server():
    """A real local SMTP server keeping what it is sent."""
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture
def report(request):
    """Record a line of figures to print at the end of the run (carried back from xdist workers)."""
    return lambda line: request.node.user_properties.append(("figures", line))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``rep_setup``, ``rep_call``, ``rep_teardown``), for fixtures
    that act on the outcome at teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


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
