"""Password hashing with argon2id at the OWASP-recommended cost
(m=19456 KiB, t=2, p=1), and the rules a new password must meet."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from lastedocation.errors import InvalidInput

MIN_LENGTH = 10
MAX_LENGTH = 1024  # hashing cost does not depend on length, but a request body should be small

_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)


def check_new_password(password: str, *, field: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            f"`{field}` must be at least {MIN_LENGTH} characters long; a few words make a good one",
            field=field,
        )
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"`{field}` must be at most {MAX_LENGTH} characters", field=field)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's."""
    return _HASHER.check_needs_rehash(password_hash)


@cache
def _dummy_hash() -> str:
    return _HASHER.hash("not a password anyone has")


def waste_time_like_verify(password: str) -> None:
    """Spend what a verify costs, so an unknown username answers as slowly as a known one."""
    verify_password(_dummy_hash(), password)
