"""A small Chrome DevTools Protocol client: headless Chromium, one page, navigate, evaluate, click.

Dialogs (``confirm()``) are accepted as they open, and every URL the page requests is recorded, so
a test can check that nothing was fetched from another host.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import urllib.request
from typing import Any

import websocket

from harness.waiting import wait_until

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
)


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol's websocket."""

    def __init__(self, executable: str, profile: str, timeout: float = 15) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = wait_until(
            lambda: _read_port(os.path.join(profile, "DevToolsActivePort")), timeout, what="the DevTools port"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout)
        self._ids = itertools.count(1)
        self.requested: list[str] = []
        self._loaded = False
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(10)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self._ids)
        self.socket.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            reply = self._receive()
            if reply.get("id") == call:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def navigate(self, url: str) -> None:
        self._loaded = False
        self.send("Page.navigate", url=url)
        self._await_load()

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click_and_wait(self, selector: str) -> None:
        """Click the element and wait for the page it leads to (a form's POST and redirect)."""
        self._loaded = False
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self._await_load()

    def await_true(self, expression: str) -> None:
        wait_until(lambda: self.evaluate(expression), self.timeout, what=expression)

    def screenshot(self, path: str) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as file:
            file.write(base64.b64decode(data))

    def _receive(self) -> dict[str, Any]:
        message = json.loads(self.socket.recv())
        method = message.get("method")
        if method == "Page.loadEventFired":
            self._loaded = True
        elif method == "Network.requestWillBeSent":
            self.requested.append(message["params"]["request"]["url"])
        elif method == "Page.javascriptDialogOpening":
            self.socket.send(
                json.dumps(
                    {
                        "id": next(self._ids),
                        "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True},
                    }
                )
            )
        return message

    def _await_load(self) -> None:
        # Each look reads the next message (recv blocks), so there is nothing to sleep between looks.
        wait_until(self._loaded_yet, self.timeout, interval=0, what="the page's load event")

    def _loaded_yet(self) -> bool:
        if not self._loaded:
            self._receive()
        return self._loaded


def _read_port(path: str) -> int | None:
    try:
        with open(path) as file:
            first = file.readline().strip()
    except FileNotFoundError:
        return None
    return int(first) if first else None
