"""Account routes: first-start set-up, sign-in, token refresh, sign-out, the
current user, password change, API tokens, and (admins) users. Thin: parse,
call the service, map."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from lastedocation import ownership
from lastedocation.api.deps import (
    AdminUser,
    ClientAddress,
    CurrentUser,
    ItemId,
    LoginLimiterDep,
    SessionDep,
    SettingsDep,
    SignerDep,
    error_responses,
)
from lastedocation.auth import service, setup
from lastedocation.auth.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    LoginIn,
    LogoutIn,
    PasswordChange,
    RefreshIn,
    SetupCreate,
    TokenPairPublic,
    UserCreate,
    UserPublic,
)

router = APIRouter(tags=["accounts"])
# the error answers each kind of route can give, documented in the OpenAPI schema
_WITH_BODY = error_responses(400, 401, 422)  # 400: a body that is not UTF-8 JSON


@router.post(
    "/auth/setup",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    responses=error_responses(400, 403, 409, 422),
)
def complete_setup(body: SetupCreate, session: SessionDep) -> Any:
    """Create the first admin with the one-time token from the printed set-up link."""
    return setup.complete_setup(
        session=session, token=body.token, username=body.username, password=body.password
    )


@router.post(
    "/auth/login", response_model=TokenPairPublic, responses=error_responses(400, 401, 422, 429)
)
def login(
    body: LoginIn,
    session: SessionDep,
    signer: SignerDep,
    limiter: LoginLimiterDep,
    address: ClientAddress,
) -> Any:
    """Sign in: an access token (15 minutes) and a refresh token (14 days, single use)."""
    return service.login(
        session=session,
        signer=signer,
        limiter=limiter,
        address=address,
        username=body.username,
        password=body.password,
    )


@router.post(
    "/auth/refresh", response_model=TokenPairPublic, responses=error_responses(400, 401, 422)
)
def refresh(body: RefreshIn, session: SessionDep, signer: SignerDep) -> Any:
    """Trade a refresh token for a new pair; the old refresh token is spent."""
    return service.refresh(session=session, signer=signer, refresh_token=body.refresh_token)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_WITH_BODY)
def logout(user: CurrentUser, session: SessionDep, body: LogoutIn | None = None) -> Response:
    """End a session (its refresh token), or every session of yours without a body."""
    token = body.refresh_token if body else None
    service.logout(session=session, user=user, refresh_token=token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/auth/me", response_model=UserPublic, responses=error_responses(401))
def me(user: CurrentUser) -> Any:
    return user


@router.post(
    "/auth/password", response_model=TokenPairPublic, responses=error_responses(400, 401, 422)
)
def change_password(
    body: PasswordChange, user: CurrentUser, session: SessionDep, signer: SignerDep
) -> Any:
    """Change your password: every earlier access and refresh token stops working; the
    answer is a fresh pair for this client."""
    return service.change_password(
        session=session,
        signer=signer,
        user=user,
        current_password=body.current_password,
        new_password=body.new_password,
    )


@router.get("/auth/tokens", response_model=list[ApiTokenPublic], responses=error_responses(401))
def list_api_tokens(user: CurrentUser, session: SessionDep) -> Any:
    return service.list_api_tokens(session=session, user=user)


@router.post(
    "/auth/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiTokenCreated,
    responses=_WITH_BODY,
)
def create_api_token(body: ApiTokenCreate, user: CurrentUser, session: SessionDep) -> Any:
    """A new API token for scripts; the secret (`token`) is shown in this answer only."""
    token, secret = service.create_api_token(session=session, user=user, name=body.name)
    return {**ApiTokenPublic.model_validate(token).model_dump(), "token": secret}


@router.delete(
    "/auth/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 422),
)
def revoke_api_token(token_id: ItemId, user: CurrentUser, session: SessionDep) -> Response:
    service.revoke_api_token(session=session, user=user, token_id=token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/users",
    response_model=list[UserPublic],
    tags=["users"],
    responses=error_responses(401, 403),
)
def list_users(_admin: AdminUser, session: SessionDep) -> Any:
    return service.list_users(session=session)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    tags=["users"],
    responses=error_responses(400, 401, 403, 409, 422),
)
def create_user(body: UserCreate, _admin: AdminUser, session: SessionDep) -> Any:
    return service.create_user(
        session=session, username=body.username, password=body.password, role=body.role
    )


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["users"],
    responses=error_responses(401, 403, 404, 409, 422),
)
def delete_user(
    user_id: ItemId,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    delete_owned: bool = False,
) -> Response:
    """Delete an account. Everything it owned (datasets, runs, models) passes to you, or,
    with `delete_owned=true`, is deleted with it (409 while one of its runs trains)."""
    cache = request.app.state.model_cache

    def purge(owner: int) -> None:
        ownership.delete_owned(session, settings, user_id=owner, cache=cache)

    with request.app.state.supervisor.lock:  # no run may start while its rows go
        service.delete_user(
            session=session,
            admin=admin,
            user_id=user_id,
            delete_owned=purge if delete_owned else None,
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
