"""A local 3-node RabbitMQ cluster of its own, run by rabbitmq_cluster.sh (what ``make cluster`` runs).

Its nodes have their own names, ports, data and Erlang cookie: starting, stopping and querying them
never touches the shared RabbitMQ.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from harness.processes import ROOT
from harness.servers import Unavailable

NODES = ("a", "b", "c")


class Cluster:
    """The nodes ``<name>-a@localhost``, ``-b`` and ``-c``, with their data under ``directory``."""

    def __init__(self, directory: Path, name: str | None = None, port: int | None = None) -> None:
        self.name = name or f"notif-test-{uuid.uuid4().hex[:6]}"
        self.port = port or _free_base_port()
        self.env = {
            **os.environ,
            "CLUSTER_DIR": str(directory),
            "CLUSTER_NAME": self.name,
            "CLUSTER_PORT": str(self.port),
        }

    def start(self) -> Cluster:
        if not (shutil.which("rabbitmq-server") or Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()):
            raise Unavailable("a local RabbitMQ cluster", "rabbitmq-server is not installed")
        self.script("start")
        return self

    def stop(self) -> None:
        self.script("stop")

    def script(self, *args: str) -> str:
        result = subprocess.run(
            [str(ROOT / "rabbitmq_cluster.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if result.returncode:
            raise RuntimeError(f"rabbitmq_cluster.sh {' '.join(args)}: {result.stderr}")
        return result.stdout

    def ctl(self, node: str, *args: str) -> str:
        """rabbitmqctl against node ``a``, ``b`` or ``c``, quietly."""
        return self.script("ctl", node, "-q", *args)

    def letter(self, node: str) -> str:
        """``a`` for ``<name>-a@localhost``."""
        return node.removeprefix(f"{self.name}-").removesuffix("@localhost")

    def amqp(self, letter: str, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port + NODES.index(letter)}/{vhost}"

    def broker_url(self, vhost: str, *order: str) -> str:
        """A BROKER_URL listing the nodes in ``order`` (a, b, c unless given)."""
        return ",".join(self.amqp(letter, vhost) for letter in order or NODES)

    def add_vhost(self) -> str:
        vhost = f"notif_test_{uuid.uuid4().hex[:8]}"
        self.ctl("a", "add_vhost", vhost)
        self.ctl("a", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return vhost

    def queues(self, vhost: str, via: str) -> dict[str, dict[str, Any]]:
        """Each queue's type, leader, members and online members, as node ``via`` reports them."""
        columns = ("name", "type", "leader", "members", "online")
        listed = self.ctl(via, "list_queues", "-p", vhost, "--formatter", "json", *columns)
        return {q["name"]: q for q in json.loads(listed)}

    def consumers(self, vhost: str, queue: str, via: str) -> int | None:
        """How many consumers the queue has, asked of node ``via``; None while it cannot say."""
        try:
            with pika.BlockingConnection(pika.URLParameters(self.amqp(via, vhost))) as connection:
                return connection.channel().queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.AMQPError:
            return None


def _free_base_port() -> int:
    """A base port whose AMQP, distribution and CLI ports (see rabbitmq_cluster.sh) are all free."""
    for _ in range(100):
        base = random.randrange(10_000, 19_000)
        ports = [base + i for i in range(3)] + [base + 20_000 + i for i in range(3)]
        ports += [base + 30_000 + i for i in range(11)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for a local RabbitMQ cluster")
