"""Account services: users, sign-in, refresh, sign-out, password change, API tokens.

Refresh tokens rotate: each use revokes the presented token and issues its
successor in the same family. A revoked token presented again means that two
parties hold the chain (one of them stole it), so the whole family is revoked
and both must sign in again.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lastedocation import ownership
from lastedocation.auth.models import ROLES, ApiToken, RefreshToken, User
from lastedocation.auth.passwords import (
    check_new_password,
    hash_password,
    needs_rehash,
    verify_password,
    waste_time_like_verify,
)
from lastedocation.auth.ratelimit import LoginLimiter
from lastedocation.auth.tokens import (
    API_TOKEN_PREFIX,
    REFRESH_TOKEN_PREFIX,
    REFRESH_TTL,
    TokenSigner,
    display_prefix,
    hash_secret,
    new_secret,
    password_stamp,
    utc,
)
from lastedocation.errors import Conflict, InvalidInput, NotFound, Unauthorized

_USERNAME = re.compile(r"[\w.-]{2,64}")
_LAST_USED_EVERY = timedelta(minutes=1)  # don't write on every request a script makes
_WRONG = "wrong username or password"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def normalize_username(username: str) -> str:
    return unicodedata.normalize("NFC", username.strip()).lower()


def count_users(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def create_user(*, session: Session, username: str, password: str, role: str = "member") -> User:
    name = normalize_username(username)
    if not _USERNAME.fullmatch(name):
        raise InvalidInput(
            "`username` must be 2 to 64 letters, digits, `.`, `-` or `_`", field="username"
        )
    if role not in ROLES:
        raise InvalidInput(f"`role` must be one of {', '.join(ROLES)}", field="role")
    check_new_password(password)
    if role != "admin" and count_users(session=session) == 0:
        raise InvalidInput(
            "the studio has no admin yet, so the first account must be an admin "
            "(`lastedocation users add NAME --admin`, or the set-up link)",
            field="role",
        )
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise Conflict(f"the username {name!r} is taken", field="username")
    user = User(username=name, password_hash=hash_password(password), role=role)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"the username {name!r} is taken", field="username") from None
    return user


def find_user(*, session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == normalize_username(username)))
    if user is None:
        raise NotFound(f"no account named {username!r}", field="username")
    return user


def authenticate(*, session: Session, username: str, password: str) -> User:
    user = session.scalar(select(User).where(User.username == normalize_username(username)))
    if user is None:
        waste_time_like_verify(password)
        raise Unauthorized(_WRONG)
    if not verify_password(user.password_hash, password):
        raise Unauthorized(_WRONG)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.commit()
    return user


def login(
    *,
    session: Session,
    signer: TokenSigner,
    limiter: LoginLimiter,
    address: str,
    username: str,
    password: str,
) -> TokenPair:
    """Check the password (within the failed-attempt limits) and start a token family."""
    user = sign_in(
        session=session, limiter=limiter, address=address, username=username, password=password
    )
    return _issue(session=session, signer=signer, user=user, family=uuid.uuid4().hex)


def sign_in(
    *, session: Session, limiter: LoginLimiter, address: str, username: str, password: str
) -> User:
    """The account, if the password is right and the failed-attempt limits allow trying
    (a failure counts against the account and the address). The API then issues tokens,
    the web UI starts a browser session."""
    key = normalize_username(username)
    limiter.check(username=key, address=address)
    try:
        user = authenticate(session=session, username=username, password=password)
    except Unauthorized:
        limiter.failed(username=key, address=address)
        raise
    limiter.succeeded(username=key)
    return user


def _issue(
    *, session: Session, signer: TokenSigner, user: User, family: str, now: datetime | None = None
) -> TokenPair:
    now = now or datetime.now(UTC)
    secret = new_secret(REFRESH_TOKEN_PREFIX)
    session.add(
        RefreshToken(
            user_id=user.id,
            family=family,
            token_hash=hash_secret(secret),
            created_at=now,
            expires_at=now + REFRESH_TTL,
        )
    )
    session.commit()
    expires_in = int(signer.ttl.total_seconds())
    return TokenPair(signer.issue(user, now=now), secret, expires_in)


def _revoke(session: Session, *where: Any) -> None:
    session.execute(update(RefreshToken).where(*where).values(revoked=True))


def refresh(
    *, session: Session, signer: TokenSigner, refresh_token: str, now: datetime | None = None
) -> TokenPair:
    """Trade a refresh token for a new pair; the presented one is spent."""
    now = now or datetime.now(UTC)
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_secret(refresh_token))
    )
    if row is None:
        raise Unauthorized("the refresh token is not valid; sign in again")
    if utc(row.expires_at) <= now:
        raise Unauthorized("the refresh token has expired; sign in again")
    # spend it with a guarded write, so two uses at once cannot both succeed
    spent = session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.revoked.is_(False))
        .values(revoked=True)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        _revoke(session, RefreshToken.family == row.family)
        session.commit()
        raise Unauthorized(
            "this refresh token was already used or revoked; every session it belonged to "
            "is now signed out: sign in again"
        )
    user = session.get(User, row.user_id)
    assert user is not None  # tokens are deleted with their user
    return _issue(session=session, signer=signer, user=user, family=row.family, now=now)


def logout(*, session: Session, user: User, refresh_token: str | None = None) -> None:
    """End the session the refresh token belongs to, or every session of the user.
    Access tokens already issued run out on their own within 15 minutes."""
    if refresh_token is None:
        _revoke(session, RefreshToken.user_id == user.id)
    else:
        family = session.scalar(
            select(RefreshToken.family).where(
                RefreshToken.token_hash == hash_secret(refresh_token),
                RefreshToken.user_id == user.id,
            )
        )
        if family is not None:
            _revoke(session, RefreshToken.family == family)
    session.commit()


def change_password(
    *,
    session: Session,
    signer: TokenSigner,
    user: User,
    current_password: str,
    new_password: str,
    issue_tokens: bool = True,
) -> TokenPair | None:
    """Set a new password; every access and refresh token issued before stops working.
    Returns a fresh pair for the client that made the change (API tokens stay valid);
    the web UI starts a browser session instead (`issue_tokens=False`)."""
    if not verify_password(user.password_hash, current_password):
        raise InvalidInput("the current password is wrong", field="current_password")
    check_new_password(new_password, field="new_password")
    now = datetime.now(UTC)
    # strictly later, so tokens signed in the same microsecond are refused too
    user.password_changed_at = max(now, utc(user.password_changed_at) + timedelta(microseconds=1))
    user.password_hash = hash_password(new_password)
    _revoke(session, RefreshToken.user_id == user.id)
    session.commit()
    if not issue_tokens:
        return None
    return _issue(session=session, signer=signer, user=user, family=uuid.uuid4().hex)


def user_for_bearer(*, session: Session, signer: TokenSigner, token: str) -> User:
    """The user an `Authorization: Bearer` token stands for: an API token or an access token."""
    if token.startswith(API_TOKEN_PREFIX):
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(token)))
        if row is None or row.revoked:
            raise Unauthorized("the API token is not valid or was revoked")
        now = datetime.now(UTC)
        if row.last_used_at is None or utc(row.last_used_at) < now - _LAST_USED_EVERY:
            row.last_used_at = now
            session.commit()
        user = session.get(User, row.user_id)
    else:
        claims = signer.read(token)
        user = session.get(User, claims.user_id)
        if user is not None and password_stamp(user) != claims.password_stamp:
            raise Unauthorized(
                "the password was changed since this token was issued; sign in again"
            )
    if user is None:
        raise Unauthorized("the account of this token no longer exists")
    return user


def create_api_token(*, session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new API token and its secret, which is shown this once and never stored."""
    secret = new_secret(API_TOKEN_PREFIX)
    token = ApiToken(
        user_id=user.id, name=name, token_hash=hash_secret(secret), prefix=display_prefix(secret)
    )
    session.add(token)
    session.commit()
    return token, secret


def list_api_tokens(*, session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)))


def revoke_api_token(*, session: Session, user: User, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound(f"you have no API token with id {token_id}", token_id=token_id)
    token.revoked = True
    session.commit()


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def deletable_user(*, session: Session, admin: User, user_id: int) -> User:
    """The account `admin` may delete: it exists and it is not their own."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}", user_id=user_id)
    if user.id == admin.id:
        raise Conflict("you cannot delete your own account; another admin can")
    return user


def delete_user(
    *,
    session: Session,
    admin: User,
    user_id: int,
    delete_owned: Callable[[int], object] | None = None,
) -> dict[str, int]:
    """Delete an account and its tokens; everything it owned (datasets, runs, models)
    passes to the admin who deletes it, never to nobody: an object without an owner is
    shared with every account. `delete_owned` (given the account's id) deletes those
    objects first instead. Returns how many of each were handed over."""
    user = deletable_user(session=session, admin=admin, user_id=user_id)
    if delete_owned is not None:
        delete_owned(user.id)
    handed = ownership.hand_over(session, from_user_id=user.id, to_user_id=admin.id)
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.execute(delete(RefreshToken).where(RefreshToken.user_id == user.id))
    session.delete(user)
    session.commit()
    return handed
