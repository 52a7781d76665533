"""RATE_LIMIT per API key, counted in the database so that every process shares the count."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from api import create_app
from storage import ratelimit

KEYS = ("key-one-0123456789", "key-two-0123456789")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock(60 * 16_666 + 10.0)  # 10 s into a 60-second window


@pytest.fixture
def client(database_url, clock):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RUN_WORKERS": False,
            "API_KEYS": KEYS,
            "RATE_LIMIT": (3, 60),
            "RATE_LIMIT_CLOCK": clock,
        }
    )
    with app.app_context():
        ratelimit.RateLimitWindow.delete().execute()
    return app.test_client()


def get(client, key=KEYS[0]):
    return client.get("/notifications", headers={"X-API-Key": key})


def test_requests_over_the_limit_get_429_with_retry_after(client, clock):
    assert [get(client).status_code for _ in range(3)] == [200, 200, 200]
    refused = get(client)
    assert refused.status_code == 429
    assert refused.json["code"] == 429
    assert refused.headers["Retry-After"] == "50"
    clock.now += 50  # the next window
    assert get(client).status_code == 200


def test_each_key_has_its_own_budget_and_health_is_not_counted(client):
    for _ in range(3):
        get(client, KEYS[0])
        client.get("/health")
    assert get(client, KEYS[0]).status_code == 429
    assert get(client, KEYS[1]).status_code == 200
    assert client.get("/health").status_code == 200


def test_unauthenticated_requests_are_refused_before_they_are_counted(client):
    for _ in range(5):
        assert client.get("/notifications").status_code == 401
    assert get(client).status_code == 200


def test_the_spec_documents_the_429(client):
    spec = client.get("/openapi.json", headers={"X-API-Key": KEYS[1]}).json
    assert "Retry-After" in spec["paths"]["/notifications"]["get"]["responses"]["429"]["headers"]


def test_concurrent_hits_each_get_their_own_count(db):
    """One atomic upsert per hit: on separate connections no two hits can read the same count."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(lambda _: ratelimit.hit("client", 7), range(200)))
    assert sorted(counts) == list(range(1, 201))
    assert ratelimit.hit("client", 8) == 1
    assert ratelimit.forget_before(8) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_counter_commits_asynchronously_and_nothing_else_does(db):
    """The counter skips the wait for the disk; the session, and a transaction around it, do not."""
    ratelimit.RateLimitWindow.delete().execute()
    assert ratelimit.hit("client", 9) == 1
    assert db.execute_sql("SHOW synchronous_commit").fetchone()[0] == "on"
    with db.atomic():
        assert ratelimit.hit("client", 9) == 2
        assert db.execute_sql("SHOW synchronous_commit").fetchone()[0] == "on"
    assert ratelimit.hit("client", 9) == 3
