"""Browser sessions for the web UI: an HttpOnly cookie, and CSRF protection.

Signing in on the login page starts a session: a row in `refresh_tokens` (its family
is the session id; it is never rotated, only revoked) and a cookie holding a signed
token with the user id, the session id and the password stamp, valid 12 hours. A
request with the cookie is that user while the session is not revoked (sign-out,
password change) and the password has not changed since.

CSRF: every unsafe request made with the session cookie must carry the session's CSRF
token in the `X-CSRF-Token` header (htmx and the page's scripts send it) or a
`csrf_token` form field. The token is an HMAC of the session id under the studio's
key, so it is bound to that session, changes at every sign-in, and cannot be forged
by whoever can set cookies for the site (a second cookie, readable by the page,
carries it to the page's scripts, but the server never trusts that cookie's value).
Before sign-in (the sign-in and set-up forms) the page's random token is repeated
from a cookie (double submit). Requests with an `Authorization: Bearer` token carry
no ambient credentials and need no CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
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
    return BrowserSession(cookie, _csrf_for(key, family), int(SESSION_TTL.total_seconds()))


def _csrf_for(key: bytes, session_id: str) -> str:
    mac = hmac.new(key, b"csrf:" + session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_token(*, key: bytes, session_cookie: str | None, csrf_cookie: str | None) -> str:
    """The token a page must send back: its session's, when the browser has a valid
    session cookie; otherwise the pre-sign-in token from the CSRF cookie (or a new one)."""
    if session_cookie:
        try:
            return _csrf_for(key, str(_claims(key, session_cookie)["sid"]))
        except Unauthorized:
            pass
    return csrf_cookie or secrets.token_urlsafe(32)


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


def check_csrf(
    *,
    method: str,
    key: bytes,
    session_cookie: str | None,
    csrf_cookie: str | None,
    sent: str | None,
) -> None:
    """Unsafe requests must repeat their session's CSRF token (before sign-in: the
    CSRF cookie)."""
    if method.upper() in SAFE_METHODS:
        return
    expected = csrf_token(key=key, session_cookie=session_cookie, csrf_cookie=csrf_cookie)
    if not csrf_cookie and not session_cookie:
        expected = ""  # no cookie at all: nothing to compare with
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise Forbidden(
            "this request lacks the page's CSRF token: reload the page and try again",
            rule="csrf",
        )
