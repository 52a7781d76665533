"""The dashboard and Swagger UI in a real headless Chromium: they load offline, show data, buttons work."""

from __future__ import annotations

import shutil
import threading
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from harness.browser import Browser
from harness.servers import unavailable
from storage import models, queries

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("Chromium", "no chromium on PATH")
    chromium = Browser(executable, str(tmp_path_factory.mktemp("chromium-profile")))
    yield chromium
    chromium.close()


@pytest.fixture
def base(app):
    """The app served over HTTP on a free port, for the browser."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(10)


def other_hosts(base: str, urls: list[str]) -> set[str]:
    """The hosts, other than the app's, that the page fetched anything from."""
    hosts = {urlsplit(u).netloc for u in urls if urlsplit(u).scheme in ("http", "https")}
    return hosts - {urlsplit(base).netloc}


def status_of(app, notification_id: str) -> str:
    with app.app_context():
        return queries.get(notification_id).status


def test_dashboard_shows_real_data_and_retry_and_cancel_work(browser, app, base, seeded):
    browser.requested.clear()
    browser.navigate(f"{base}/dashboard/")
    assert browser.evaluate("document.querySelector('#workers').innerText").count("worker-1") == 1
    push_row = browser.evaluate("document.querySelector('tr[data-queue=push]').innerText").split()
    assert push_row[-4:] == ["0", "1", "0", "0"]
    assert (
        browser.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"
    )  # CSS came

    browser.navigate(f"{base}/dashboard/queues/email?tab=failed")
    assert "SMTP 550 no such user" in browser.evaluate("document.querySelector('#notifications').innerText")
    browser.click_and_wait(f"tr[data-id='{seeded['failed']}'] button.retry")
    assert "will be retried now" in browser.evaluate("document.querySelector('.notice').innerText")
    assert status_of(app, seeded["failed"]) == models.PENDING

    browser.navigate(f"{base}/dashboard/queues/push")
    browser.click_and_wait(f"tr[data-id='{seeded['scheduled']}'] button.cancel")  # accepts the confirm()
    assert "cancelled" in browser.evaluate("document.querySelector('.notice').innerText")
    assert status_of(app, seeded["scheduled"]) == models.CANCELLED
    assert browser.evaluate("document.querySelectorAll('#notifications tr[data-id]').length") == 0

    assert other_hosts(base, browser.requested) == set()


def test_swagger_ui_loads_from_installed_files(browser, base):
    browser.requested.clear()
    browser.navigate(f"{base}/docs")
    browser.await_true("!!document.querySelector('.swagger-ui .info .title')")
    assert "Notification service" in browser.evaluate(
        "document.querySelector('.swagger-ui .info .title').innerText"
    )
    browser.await_true("document.querySelectorAll('.opblock').length > 5")
    assert other_hosts(base, browser.requested) == set()
