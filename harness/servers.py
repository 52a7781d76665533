"""Throwaway PostgreSQL databases and RabbitMQ vhosts on the shared servers, and what to do when one is away.

A server that cannot be reached or administered raises Unavailable; under pytest, ``required()`` turns
that into a skip locally and a failure under CI=true, so that a missing service cannot turn CI green.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import pika
import psycopg2
import pytest


class Unavailable(RuntimeError):
    """A server the tests or the benchmarks need cannot be reached or administered."""

    def __init__(self, what: str, reason: object) -> None:
        super().__init__(f"{what} unavailable: {reason}")
        self.what = what
        self.reason = reason


def unavailable(what: str, reason: object) -> NoReturn:
    """Skip locally, fail in CI: a missing service must not turn CI green."""
    message = f"{what} unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def required() -> Iterator[None]:
    """Within it, an Unavailable server skips the test (fails it under CI=true)."""
    try:
        yield
    except Unavailable as exc:
        unavailable(exc.what, exc.reason)


def throwaway_name(prefix: str, length: int = 10) -> str:
    """A database or vhost name of its own: ``prefix`` and random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:length]}"


@dataclass(frozen=True)
class Servers:
    """Where the shared PostgreSQL and RabbitMQ are, and as whom to make and drop databases and vhosts."""

    postgres_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    rabbitmq_host: str = "127.0.0.1"
    rabbitmq_user: str = "guest:guest"

    @classmethod
    def from_environment(cls, prefix: str) -> Servers:
        """From ``<prefix>_POSTGRES_URL``, ``_RABBITMQ_HOST`` and ``_RABBITMQ_USER``, else the defaults."""
        defaults = cls()
        return cls(
            os.environ.get(f"{prefix}_POSTGRES_URL", defaults.postgres_admin_url),
            os.environ.get(f"{prefix}_RABBITMQ_HOST", defaults.rabbitmq_host),
            os.environ.get(f"{prefix}_RABBITMQ_USER", defaults.rabbitmq_user),
        )

    def database_url(self, name: str) -> str:
        return f"{self.postgres_admin_url.rsplit('/', 1)[0]}/{name}"

    def broker_url(self, vhost: str) -> str:
        return f"amqp://{self.rabbitmq_user}@{self.rabbitmq_host}:5672/{vhost}"

    def create_database(self, name: str) -> str:
        """Create the database ``name``; returns the name."""
        try:
            self._admin_sql(f'CREATE DATABASE "{name}"')
        except psycopg2.OperationalError as exc:
            raise Unavailable(f"PostgreSQL at {self.postgres_admin_url}", exc) from None
        return name

    def drop_database(self, name: str) -> None:
        self._admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_vhost(self, name: str) -> str:
        """Create the vhost ``name``, open to the user; returns the name."""
        try:
            pika.BlockingConnection(pika.URLParameters(self.broker_url("%2F"))).close()
        except Exception as exc:
            raise Unavailable(f"RabbitMQ at {self.rabbitmq_host}", exc) from None
        self._rabbitmqctl("add_vhost", name)
        self._rabbitmqctl("set_permissions", "-p", name, self.rabbitmq_user.split(":")[0], ".*", ".*", ".*")
        return name

    def delete_vhost(self, name: str) -> None:
        self._rabbitmqctl("delete_vhost", name)

    def _admin_sql(self, statement: str) -> None:
        """Run one statement on a connection of its own (the server may have restarted meanwhile)."""
        admin = psycopg2.connect(self.postgres_admin_url, connect_timeout=3)
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(statement)
        finally:
            admin.close()

    @staticmethod
    def _rabbitmqctl(*args: str) -> None:
        try:
            subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise Unavailable("rabbitmqctl", "not found; vhosts are made with it (run as root)") from None
        except subprocess.CalledProcessError as exc:
            raise Unavailable("rabbitmqctl", f"{' '.join(args)}: {exc.stderr.decode().strip()}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise Unavailable("rabbitmqctl", exc) from None
