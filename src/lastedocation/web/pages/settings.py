"""Settings: the browser's language and theme, the user's API tokens and password,
and (admins) the studio's accounts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi import Path as InPath
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from lastedocation.api.deps import SessionDep, SignerDep
from lastedocation.auth import browser
from lastedocation.auth import service as accounts
from lastedocation.auth.models import User
from lastedocation.errors import Forbidden, InvalidInput, StudioError
from lastedocation.web.deps import CsrfChecked, PageUser, signing_key
from lastedocation.web.pages.auth import signed_in
from lastedocation.web.render import language, render

router = APIRouter(include_in_schema=False)
ItemId = Annotated[int, InPath(ge=1, le=2**63 - 1)]
Secret = Annotated[str, Form(max_length=1024)]
# what a redirect back to /settings?done=KEY says
DONE = {
    "revoked": "The token was revoked; it no longer works.",
    "password": "Your password was changed. Your other sessions were signed out.",
    "user-added": "The account was added.",
    "user-deleted": "The account was deleted; its datasets are now yours.",
}


def _page(
    request: Request,
    session: Session,
    user: User,
    *,
    errors: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    code: int = 200,
) -> HTMLResponse:
    done = request.query_params.get("done", "")
    context = {
        "tokens": accounts.list_api_tokens(session=session, user=user),
        "users": accounts.list_users(session=session) if user.is_admin else [],
        "done": language(request).gettext(DONE[done]) if done in DONE else None,
        "errors": errors or {},
        "new_token": None,
        "form": {},
        **(extra or {}),
    }
    return render(
        request, "settings/index.html", context, user=user, nav="settings", status_code=code
    )


def _message(request: Request, exc: StudioError) -> str:
    return language(request).gettext(exc.detail)


def _admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin can manage accounts")


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, session: SessionDep, user: PageUser) -> HTMLResponse:
    return _page(request, session, user)


@router.post("/settings/tokens", dependencies=[CsrfChecked])
def create_token(
    request: Request,
    session: SessionDep,
    user: PageUser,
    name: Annotated[str, Form(max_length=100)] = "",
) -> HTMLResponse:
    """A new API token; its secret is in this answer only, never again."""
    if not name.strip():
        error = language(request).gettext("Give the token a name that says what it is for.")
        return _page(request, session, user, errors={"tokens": error}, code=400)
    token, secret = accounts.create_api_token(session=session, user=user, name=name.strip())
    extra = {"new_token": {"name": token.name, "secret": secret}}
    return _page(request, session, user, extra=extra, code=201)


@router.post("/settings/tokens/{token_id}/revoke", dependencies=[CsrfChecked])
def revoke_token(token_id: ItemId, session: SessionDep, user: PageUser) -> Response:
    accounts.revoke_api_token(session=session, user=user, token_id=token_id)
    return RedirectResponse("/settings?done=revoked", status_code=303)


@router.post("/settings/password", dependencies=[CsrfChecked])
def change_password(
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    user: PageUser,
    current_password: Secret = "",
    new_password: Secret = "",
    new_password_again: Secret = "",
) -> Response:
    """Every earlier session and token of the account stops working (API tokens stay);
    this browser gets a new session."""
    try:
        if new_password != new_password_again:
            raise InvalidInput("The two passwords differ.", field="new_password_again")
        accounts.change_password(
            session=session,
            signer=signer,
            user=user,
            current_password=current_password,
            new_password=new_password,
            issue_tokens=False,
        )
    except StudioError as exc:
        errors = {"password": _message(request, exc)}
        return _page(request, session, user, errors=errors, code=exc.status_code)
    cookie = browser.start(session=session, key=signing_key(request), user=user)
    return signed_in(request, "/settings?done=password", cookie)


@router.post("/settings/users", dependencies=[CsrfChecked])
def add_user(
    request: Request,
    session: SessionDep,
    user: PageUser,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Secret = "",
    role: Annotated[str, Form(max_length=20)] = "member",
) -> Response:
    _admin(user)
    try:
        accounts.create_user(session=session, username=username, password=password, role=role)
    except StudioError as exc:
        extra = {"form": {"username": username, "role": role}}
        errors = {"users": _message(request, exc)}
        return _page(request, session, user, errors=errors, extra=extra, code=exc.status_code)
    return RedirectResponse("/settings?done=user-added", status_code=303)


@router.post("/settings/users/{user_id}/delete", dependencies=[CsrfChecked])
def delete_user(user_id: ItemId, request: Request, session: SessionDep, user: PageUser) -> Response:
    _admin(user)
    try:
        accounts.delete_user(session=session, admin=user, user_id=user_id)
    except StudioError as exc:
        errors = {"users": _message(request, exc)}
        return _page(request, session, user, errors=errors, code=exc.status_code)
    return RedirectResponse("/settings?done=user-deleted", status_code=303)
