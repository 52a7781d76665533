"""The dashboard at /dashboard: what it shows, its actions, and their anti-forgery token."""

from __future__ import annotations

import re

import pytest


def token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)[1]


def test_overview_shows_queues_schedule_workers_and_timeline(client, seeded):
    html = client.get("/dashboard/").text
    row = re.search(r'<tr data-queue="push">(.*?)</tr>', html, re.S)[1]
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells[-4:] == ["0", "1", "0", "0"]  # due: overdue, next hour, next day, later
    assert "worker-1" in html and '<td class="num">2</td>' in html
    assert 'aria-label="push notifications per hour"' in html
    assert "<rect" in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere


def test_each_queue_shows_its_type_and_a_queue_of_another_type_stands_out(client, seeded, monkeypatch):
    from actors import queues

    types = {"push": "quorum", "email": "not quorum"}
    monkeypatch.setattr(
        queues, "stats", lambda broker, names: [queues.QueueStats(n, 0, 0, 0, 2, types[n]) for n in names]
    )
    html = client.get("/dashboard/").text
    assert '<td class="type">quorum</td>' in re.search(r'<tr data-queue="push">(.*?)</tr>', html, re.S)[1]
    assert '<td class="type bad">not quorum</td>' in html
    assert ">quorum</span> · ready 0" in client.get("/dashboard/queues/push").text


def test_queue_tabs_list_their_notifications(client, seeded):
    scheduled = client.get("/dashboard/queues/push").text
    assert seeded["scheduled"] in scheduled and "soon-user" in scheduled and "Cancel" in scheduled
    failed = client.get("/dashboard/queues/email?tab=failed").text
    assert "SMTP 550 no such user" in failed and "Retry now" in failed
    assert client.get("/dashboard/queues/email?tab=dead").status_code == 200
    assert client.get("/dashboard/queues/sms").status_code == 404


def test_notification_page_shows_fields_and_history(client, seeded):
    html = client.get(f"/dashboard/notifications/{seeded['failed']}").text
    assert "broken@example.com" in html and "SMTP 550 no such user" in html
    assert "<td>created</td>" in html
    assert client.get("/dashboard/notifications/00000000-0000-0000-0000-000000000000").status_code == 404


def test_retry_makes_a_failed_notification_due_now(client, seeded):
    page = f"/dashboard/notifications/{seeded['failed']}"
    response = client.post(
        f"{page}/retry", data={"csrf_token": token(client.get(page).text), "next": "/dashboard/queues/email"}
    )
    assert response.status_code == 303
    assert response.location.startswith("/dashboard/queues/email?notice=")
    assert client.get(f"/notifications/{seeded['failed']}").json["status"] == "Pending"
    assert "forced" in client.get(page).text


def test_cancel_from_the_dashboard_and_twice_says_why(client, seeded):
    page = f"/dashboard/notifications/{seeded['scheduled']}"
    csrf = token(client.get(page).text)
    client.post(f"{page}/cancel", data={"csrf_token": csrf})
    assert client.get(f"/notifications/{seeded['scheduled']}").json["status"] == "Cancelled"
    again = client.post(f"{page}/cancel", data={"csrf_token": csrf}, follow_redirects=True).text
    assert "only Pending ones can be" in again


@pytest.mark.parametrize("sent", [None, "0" * 64])
def test_posts_without_the_cookies_token_are_refused(client, seeded, sent):
    page = f"/dashboard/notifications/{seeded['scheduled']}"
    client.get(page)  # sets the cookie
    data = {"csrf_token": sent} if sent else {}
    assert client.post(f"{page}/cancel", data=data).status_code == 403
    assert client.get(f"/notifications/{seeded['scheduled']}").json["status"] == "Pending"


def test_actions_never_redirect_off_the_dashboard(client, seeded):
    page = f"/dashboard/notifications/{seeded['scheduled']}"
    response = client.post(
        f"{page}/cancel", data={"csrf_token": token(client.get(page).text), "next": "https://evil.example/"}
    )
    assert response.location.startswith(page)


def test_dead_letters_of_the_embedded_broker_can_be_requeued_and_dropped(client, seeded):
    from actors import broker, delivery

    letters = broker.dead_letters_by_queue["push"]
    letters.clear()
    for n in range(2):
        letters.append(delivery.deliver_push.message({seeded["scheduled"]: n}))
    html = client.get("/dashboard/queues/push?tab=dead").text
    assert html.count('name="message_id"') == 4  # requeue and drop for each
    csrf, first = token(html), letters[0].message_id
    client.post("/dashboard/queues/push/dead/requeue", data={"csrf_token": csrf, "message_id": first})
    assert [m.message_id for m in letters] != [first] and len(letters) == 1
    response = client.post("/dashboard/queues/push/dead/drop", data={"csrf_token": csrf})
    assert "1+dead-lettered+message+dropped" in response.location
    assert letters == []
    broker.flush_all()
