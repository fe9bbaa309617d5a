"""What the API takes and returns for accounts and tokens.

Passwords and usernames are checked by the service, which answers 400 naming
the field; the limits here only keep request bodies small.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lastedocation.auth.models import Role
from lastedocation.datasets.schemas import UtcDatetime

_Secret = Field(max_length=1024)


class SetupCreate(BaseModel):
    token: str = Field(max_length=200, description="The token of the printed set-up link.")
    username: str = Field(max_length=200)
    password: str = _Secret


class LoginIn(BaseModel):
    username: str = Field(max_length=200)
    password: str = _Secret


class RefreshIn(BaseModel):
    refresh_token: str = Field(max_length=200)


class LogoutIn(BaseModel):
    refresh_token: str | None = Field(
        default=None, max_length=200, description="Sign out this session; none: every session."
    )


class PasswordChange(BaseModel):
    current_password: str = _Secret
    new_password: str = _Secret


class TokenPairPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")


class UserCreate(BaseModel):
    username: str = Field(max_length=200)
    password: str = _Secret
    role: Role = "member"


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    created_at: UtcDatetime


class ApiTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="What the token is for.")


class ApiTokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it.")
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked: bool


class ApiTokenCreated(ApiTokenPublic):
    token: str = Field(description="The secret: shown this once, never again.")
