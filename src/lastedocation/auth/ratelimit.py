"""A sliding-window limit on failed sign-ins, per account and per client address.

In memory, so it counts per server process; that is enough for one studio
server, and a restart forgets (a restart is not something an attacker can do).
The clock is injectable so tests need not wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from lastedocation.errors import TooManyRequests

Clock = Callable[[], float]


class LoginLimiter:
    def __init__(
        self,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window_s: float = 300,
        clock: Clock = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # sign-ins run in the server's worker threads

    def check(self, *, username: str, address: str) -> None:
        """Raise TooManyRequests while either the account or the address is over its limit."""
        with self._lock:
            self._check(username=username, address=address)

    def _check(self, *, username: str, address: str) -> None:
        now = self.clock()
        for key, limit, what in (
            (f"user:{username}", self.per_account, "this account"),
            (f"addr:{address}", self.per_address, "your address"),
        ):
            failures = self._recent(key, now)
            if len(failures) >= limit:
                retry = max(1, math.ceil(failures[0] + self.window_s - now))
                raise TooManyRequests(
                    f"too many failed sign-ins for {what}; try again in {retry} s",
                    retry_after_s=retry,
                )

    def failed(self, *, username: str, address: str) -> None:
        with self._lock:
            now = self.clock()
            if len(self._failures) >= self.max_keys:
                self._forget_old(now)
            for key in (f"user:{username}", f"addr:{address}"):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *, username: str) -> None:
        # the address keeps its count: one good account must not reset guesses at others
        with self._lock:
            self._failures.pop(f"user:{username}", None)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures

    def _forget_old(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
