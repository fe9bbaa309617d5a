"""What the deployment tests read: the shipped files, and the studio's settings by the
environment variable that sets each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lastedocation.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "lastedocation.conf"
# uvicorn's own: which proxies' X-Forwarded-* headers the server trusts
UVICORN_ENV = {"FORWARDED_ALLOW_IPS"}


def studio_env_names() -> set[str]:
    return {f"LASTEDOCATION_{name.upper()}" for name in Settings.model_fields}


def unknown_env(names: set[str] | list[str]) -> set[str]:
    """The names among `names` that neither the studio nor uvicorn reads (a typo)."""
    return set(names) - studio_env_names() - UVICORN_ENV


def default(env_name: str) -> Any:
    field = env_name.removeprefix("LASTEDOCATION_").lower()
    return Settings.model_fields[field].default


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def nginx_body_limits() -> dict[str, str]:
    """`client_max_body_size` by where it is set: "server" or a location's pattern."""
    limits: dict[str, str] = {}
    where = "server"
    for line in NGINX_CONF.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if match := re.match(r"location\s+(.*?)\s*\{", line):
            where = match.group(1)
        elif line == "}":
            where = "server"
        elif match := re.match(r"client_max_body_size\s+(\S+);", line):
            limits[where] = match.group(1)
    return limits
