"""The client's address and scheme as a trusted proxy forwards them, and only a trusted one.

Behind a reverse proxy every request comes from the proxy's address over plain HTTP. werkzeug's
``ProxyFix`` takes the client's address from ``X-Forwarded-For`` and the scheme from
``X-Forwarded-Proto``, the last value of each (the one the nearest proxy wrote), but only for a
request whose peer is in FORWARDED_ALLOW_IPS: from anyone else those headers are the client's own
words and are ignored. The rate limit's client address and the dashboard cookie's ``Secure`` follow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class TrustedProxies:
    """WSGI middleware: ``ProxyFix`` for a request from a trusted proxy, the request as it is otherwise."""

    def __init__(self, app: WSGIApplication, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        self.app = app
        self.forwarded = ProxyFix(app, x_for=1, x_proto=1)
        self.anyone = "*" in allowed
        self.networks = tuple(ipaddress.ip_network(entry) for entry in allowed if entry != "*")

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (REMOTE_ADDR) is a trusted proxy; decided as gunicorn decides it."""
        if self.anyone:
            return True
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return True  # no IP address: a UNIX socket, which only a local proxy can reach; so gunicorn
        return any(address in network for network in self.networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        app = self.forwarded if self.trusts(environ.get("REMOTE_ADDR")) else self.app
        return app(environ, start_response)


def init_app(app: Flask) -> None:
    """Read forwarded addresses and schemes from the proxies in the config's FORWARDED_ALLOW_IPS."""
    app.wsgi_app = TrustedProxies(app.wsgi_app, app.config["FORWARDED_ALLOW_IPS"])  # type: ignore[method-assign]
