"""Browser sessions for the web UI: an HttpOnly cookie, and CSRF protection.

Signing in on the login page starts a session: a row in `refresh_tokens` (its family
is the session id; it is never rotated, only revoked) and a cookie holding a signed
token with the user id, the session id and the password stamp, valid 12 hours. A
request with the cookie is that user while the session is not revoked (sign-out,
password change) and the password has not changed since.

CSRF: a second cookie, readable by the page, holds a random value that every unsafe
request authenticated by the session cookie must repeat in the `X-CSRF-Token` header
(htmx and the page's scripts send it) or a `csrf_token` form field. Requests with an
`Authorization: Bearer` token carry no ambient credentials and need no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from lastedocation.auth.models import RefreshToken, User
from lastedocation.auth.tokens import hash_secret, new_secret, password_stamp
from lastedocation.errors import Forbidden, Unauthorized

SESSION_COOKIE = "ldt_session"
CSRF_COOKIE = "ldt_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class BrowserSession:
    cookie: str  # the value of SESSION_COOKIE
    csrf: str  # the value of CSRF_COOKIE
    max_age: int  # seconds


def start(*, session: Session, key: bytes, user: User) -> BrowserSession:
    """A new browser session for `user` (after the password was checked)."""
    now = datetime.now(UTC)
    family = uuid.uuid4().hex
    session.add(
        RefreshToken(
            user_id=user.id,
            family=family,
            token_hash=hash_secret(new_secret("lds_")),  # never shown: the row is the record
            created_at=now,
            expires_at=now + SESSION_TTL,
        )
    )
    session.commit()
    claims = {
        "sub": str(user.id),
        "sid": family,
        "pwd": password_stamp(user),
        "typ": "browser",
        "iat": now,
        "exp": now + SESSION_TTL,
    }
    cookie = jwt.encode(claims, key, algorithm=_ALGORITHM)
    return BrowserSession(cookie, secrets.token_urlsafe(32), int(SESSION_TTL.total_seconds()))


def _claims(key: bytes, cookie: str) -> dict[str, object]:
    try:
        claims = jwt.decode(
            cookie, key, algorithms=[_ALGORITHM], options={"require": ["exp", "sub", "sid"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("your session has expired; sign in again") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("your session is not valid; sign in again") from None
    if claims.get("typ") != "browser" or not str(claims["sub"]).isdigit():
        raise Unauthorized("your session is not valid; sign in again")
    return claims


def user_for_cookie(*, session: Session, key: bytes, cookie: str) -> User:
    claims = _claims(key, cookie)
    row = session.scalar(
        select(RefreshToken).where(
            RefreshToken.family == str(claims["sid"]),
            RefreshToken.user_id == int(str(claims["sub"])),
        )
    )
    if row is None or row.revoked:
        raise Unauthorized("you were signed out; sign in again")
    user = session.get(User, row.user_id)
    if user is None:
        raise Unauthorized("the account of this session no longer exists")
    if password_stamp(user) != claims.get("pwd"):
        raise Unauthorized("the password was changed; sign in again")
    return user


def end(*, session: Session, key: bytes, cookie: str) -> None:
    """Sign out: the session's row is revoked, so the cookie stops working everywhere."""
    try:
        claims = _claims(key, cookie)
    except Unauthorized:
        return
    for row in session.scalars(
        select(RefreshToken).where(RefreshToken.family == str(claims["sid"]))
    ):
        row.revoked = True
    session.commit()


def check_csrf(*, method: str, cookie: str | None, sent: str | None) -> None:
    """Unsafe requests made with the session cookie must repeat the CSRF cookie."""
    if method.upper() in SAFE_METHODS:
        return
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise Forbidden(
            "this request lacks the page's CSRF token: reload the page and try again",
            rule="csrf",
        )
