"""Settings: read once from the environment; a bad value stops start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.processes import ROOT


def start_with(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import settings"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_RETRY_ATTEMPTS", "five"),
        ("MAX_RETRY_ATTEMPTS", "-1"),
        ("RETRY_DELAY", "soon"),
        ("APPROPRIATE_HOURS_START", "25"),
        ("METRICS_ENABLED", "maybe"),
        ("PUSH_METRICS_PORT", "70000"),
        ("DATABASE_URL", "mysql://nope"),
        ("BROKER_URL", "kafka://nope"),
        ("BROKER_URL", "amqp://node-1/vh,kafka://node-2"),
        ("BROKER_URL", "redis://one:6379/0,redis://two:6379/0"),
        ("CLOUDAMQP_URL", "amqp://node-1/vh;http://node-2"),
        ("RABBITMQ_QUEUE_TYPE", "mirrored"),
        ("SMTP_URL", "smtp://relay-1:25, http://relay-2"),
        ("DEFAULT_TIMEZONE", "Mars/Olympus"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(variable, value):
    result = start_with(**{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr


def test_hours_must_start_before_they_end():
    result = start_with(APPROPRIATE_HOURS_START="22", APPROPRIATE_HOURS_END="8")
    assert result.returncode != 0
    assert "APPROPRIATE_HOURS_START" in result.stderr


def test_fractional_retry_delay_and_cloudamqp_url_are_accepted():
    script = "import settings; print(settings.RETRY_DELAY, settings.BROKER_URL)"
    env = {**os.environ, "RETRY_DELAY": "0.25", "CLOUDAMQP_URL": "amqp://u:p@host/vh"}
    env.pop("BROKER_URL", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["0.25", "amqp://u:p@host/vh"]


def test_a_cluster_is_listed_node_by_node_with_commas_or_semicolons():
    script = "import settings; print(*settings.BROKER_URLS); print(settings.RABBITMQ_QUEUE_TYPE)"
    env = {
        **os.environ,
        "BROKER_URL": "amqp://u:p@node-1:5672/vh, amqp://u:p@node-2:5672/vh;amqp://u:p@node-3:5672/vh,",
        "RABBITMQ_QUEUE_TYPE": "Quorum",
    }
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    urls, queue_type = result.stdout.splitlines()
    assert urls.split() == [f"amqp://u:p@node-{n}:5672/vh" for n in (1, 2, 3)]
    assert queue_type == "quorum"
