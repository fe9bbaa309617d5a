"""The first start: while the studio has no account, `lastedocation serve` prints
a one-time set-up link, and whoever opens it creates the first admin.

There is no default password. The token is random, stored only as its sha256
in `studio_facts`, replaced on every start (the printed secret is not kept),
and burned by its first successful use; once any account exists it is refused
(and removed at the next start).
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lastedocation.auth.models import User
from lastedocation.auth.service import create_user
from lastedocation.auth.tokens import hash_secret
from lastedocation.datasets.models import StudioFact
from lastedocation.errors import Conflict, Forbidden

SETUP_FACT = "setup_token_sha256"


def setup_needed(*, session: Session) -> bool:
    return not session.scalar(select(func.count()).select_from(User))


def start_setup(*, session: Session) -> str | None:
    """A new set-up token when the studio has no account yet (else None)."""
    if not setup_needed(session=session):
        forget_setup_token(session=session)
        session.commit()
        return None
    token = secrets.token_urlsafe(32)
    session.merge(StudioFact(key=SETUP_FACT, value=hash_secret(token)))
    session.commit()
    return token


def forget_setup_token(*, session: Session) -> None:
    """Remove the set-up token (in the caller's transaction)."""
    session.execute(delete(StudioFact).where(StudioFact.key == SETUP_FACT))


def complete_setup(*, session: Session, token: str, username: str, password: str) -> User:
    """Create the first admin with the set-up token, and burn the token."""
    if not setup_needed(session=session):
        raise Conflict("the studio is already set up; sign in instead")
    # burn it first, with a guarded delete: of two uses at once only one finds it
    burned = session.execute(
        delete(StudioFact).where(
            StudioFact.key == SETUP_FACT, StudioFact.value == hash_secret(token)
        )
    )
    if burned.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Forbidden(
            "the set-up token is not valid (or was used); restart `lastedocation serve` "
            "for a new set-up link, or add an admin with `lastedocation users add NAME --admin`"
        )
    try:
        return create_user(session=session, username=username, password=password, role="admin")
    except BaseException:
        session.rollback()  # a bad name or password must not burn the token
        raise
