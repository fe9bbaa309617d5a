"""The three kinds of token, and the key that signs the first.

- access token: a JWT (HS256) valid 15 minutes, carrying the user id, role and
  `pwd`, the time of the user's last password change, so a change refuses
  every access token signed before it;
- refresh token: an opaque random secret (`ldr_...`) valid 14 days, stored as
  its sha256, replaced on every use (see service.refresh);
- API token: an opaque random secret (`ldt_...`) for scripts, stored as its
  sha256, valid until revoked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from lastedocation.auth.models import User
from lastedocation.errors import StudioError, Unauthorized
from lastedocation.settings import Settings

ACCESS_TTL = timedelta(minutes=15)
REFRESH_TTL = timedelta(days=14)
API_TOKEN_PREFIX = "ldt_"
REFRESH_TOKEN_PREFIX = "ldr_"
MIN_KEY_CHARS = 32
_ALGORITHM = "HS256"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(value: datetime) -> datetime:
    # SQLite drops the zone of stored times: they are written in UTC
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def password_stamp(user: User) -> int:
    """The user's last password change in whole microseconds (exact, unlike a float)."""
    return (utc(user.password_changed_at) - _EPOCH) // timedelta(microseconds=1)


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The start of a secret, enough to tell tokens apart in a list, too little to use."""
    return secret[:12]


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    role: str
    password_stamp: int


class TokenSigner:
    """Issues and reads access tokens with one key."""

    def __init__(self, key: bytes, *, ttl: timedelta = ACCESS_TTL) -> None:
        self._key = key
        self.ttl = ttl

    def issue(self, user: User, *, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": str(user.id),
            "role": user.role,
            "pwd": password_stamp(user),
            "typ": "access",
            "iat": now,
            "exp": now + self.ttl,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def read(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(
                "the access token has expired; refresh it or sign in again"
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the access token is not valid") from None
        if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
            raise Unauthorized("the access token is not valid")
        return AccessClaims(int(claims["sub"]), str(claims.get("role")), int(claims.get("pwd", -1)))


def load_signing_key(settings: Settings) -> bytes:
    """LASTEDOCATION_SECRET_KEY, or the key in DATA_DIR/secret.key (made on first use,
    readable by its owner only)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.secret_key_path
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".secret.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            # link, not rename: when another process made the key meanwhile, keep theirs
            with contextlib.suppress(FileExistsError):
                os.link(staged, path)
        finally:
            staged.unlink(missing_ok=True)
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_KEY_CHARS:
        raise StudioError(
            f"{path} holds no usable key (fewer than {MIN_KEY_CHARS} characters); delete it "
            "and start again (everyone will have to sign in again)"
        )
    return key.encode()
