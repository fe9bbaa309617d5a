"""Failed sign-ins are limited per account and per address (a fake clock: no waiting)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.auth.ratelimit import LoginLimiter
from lastedocation.errors import TooManyRequests
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PASSWORD, add_account

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, login_limiter=LoginLimiter(clock=clock))
    with TestClient(app) as client:
        add_account(settings, ADMIN, role="admin")
        yield client


def _login(client: TestClient, username: str = ADMIN, password: str = PASSWORD) -> int:
    body = {"username": username, "password": password}
    return client.post("/api/v1/auth/login", json=body).status_code


def test_five_failures_lock_the_account_for_the_window(
    limited: TestClient, clock: FakeClock
) -> None:
    for _ in range(5):
        assert _login(limited, password="wrong password") == 401
        clock.now += 10
    locked = limited.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert locked.status_code == 429  # even the right password: guessing must stop
    assert int(locked.headers["retry-after"]) == 300 - 50
    assert locked.json()["retry_after_s"] == 250
    assert _login(limited, username="Admin") == 429  # the same account, spelled otherwise
    clock.now += 249
    assert _login(limited) == 429
    clock.now += 1  # the first failure leaves the window
    assert _login(limited) == 200
    assert _login(limited, password="wrong password") == 401  # success cleared the count
    assert _login(limited) == 200


def test_twenty_failures_lock_the_address(limited: TestClient, clock: FakeClock) -> None:
    for i in range(20):
        assert _login(limited, username=f"guess{i}", password="wrong password") == 401
    assert _login(limited) == 429  # a real account, but from this address
    clock.now += 300
    assert _login(limited) == 200


def test_limiter_counts_in_a_sliding_window(clock: FakeClock) -> None:
    limiter = LoginLimiter(per_account=2, per_address=3, window_s=60, clock=clock, max_keys=4)
    limiter.failed(username="a", address="1.1.1.1")
    clock.now += 30
    limiter.failed(username="a", address="1.1.1.1")
    with pytest.raises(TooManyRequests) as raised:
        limiter.check(username="a", address="2.2.2.2")
    assert raised.value.retry_after_s == 30
    limiter.check(username="b", address="2.2.2.2")
    clock.now += 30
    limiter.check(username="a", address="1.1.1.1")  # the first failure slid out
    for name in "cdefgh":  # more keys than max_keys: old ones are forgotten, not kept forever
        limiter.failed(username=name, address="3.3.3.3")
        clock.now += 61
    assert len(limiter._failures) <= 4
