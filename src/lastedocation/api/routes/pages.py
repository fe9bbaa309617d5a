"""The landing page and the first start's set-up page (the full web UI comes
with its own pages)."""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse

from lastedocation.api.deps import SessionDep
from lastedocation.auth import setup
from lastedocation.errors import StudioError

router = APIRouter(include_in_schema=False)

_LAYOUT = """<!doctype html>
<html lang="fa" dir="rtl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;
line-height:1.7}}code{{direction:ltr;unicode-bidi:isolate}}label{{display:block;margin:.6rem 0}}
input{{display:block;width:100%;padding:.3rem}}.error{{color:#a00}}</style></head>
<body><h1>{title}</h1>
{body}</body></html>
"""

_HOME = """<p>استودیوی آموزش مدل‌های زبانی فارسی. رابط وب در راه است؛ فعلاً از API استفاده کنید.</p>
<ul><li>ورود: <code>POST /api/v1/auth/login</code></li>
<li>API: <code>/api/v1/datasets</code></li><li>OpenAPI: <code>/openapi.json</code></li>
<li>CLI: <code>lastedocation --help</code></li></ul>"""

_SETUP_FORM = """<p>هنوز حسابی ساخته نشده است. حساب مدیر استودیو را بسازید.</p>
{error}<form method="post" action="/setup">
<input type="hidden" name="token" value="{token}">
<label>نام کاربری <input name="username" autocomplete="username" required dir="ltr"></label>
<label>گذرواژه (دست‌کم ۱۰ نویسه)
<input name="password" type="password" autocomplete="new-password" required dir="ltr"></label>
<label>تکرار گذرواژه
<input name="password_again" type="password" autocomplete="new-password" required dir="ltr">
</label><button>ساختن حساب مدیر</button></form>"""

_SET_UP = "<p>استودیو راه‌اندازی شده است؛ با <code>POST /api/v1/auth/login</code> وارد شوید.</p>"


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_LAYOUT.format(title=title, body=body), status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def home() -> HTMLResponse:
    return _page("LASTEDOCATION", _HOME)


@router.get("/setup", response_class=HTMLResponse)
def setup_page(session: SessionDep, token: str = "") -> HTMLResponse:
    """The page the printed set-up link opens."""
    if not setup.setup_needed(session=session):
        return _page("راه‌اندازی استودیو", _SET_UP)
    return _page("راه‌اندازی استودیو", _SETUP_FORM.format(token=escape(token), error=""))


@router.post("/setup", response_class=HTMLResponse)
def setup_submit(
    session: SessionDep,
    token: Annotated[str, Form(max_length=200)],
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    password_again: Annotated[str, Form(max_length=1024)],
) -> HTMLResponse:
    problem: str | None = None
    status_code = 400
    if password != password_again:
        problem = "دو گذرواژه یکسان نیستند."
    else:
        try:
            user = setup.complete_setup(
                session=session, token=token, username=username, password=password
            )
        except StudioError as exc:
            problem, status_code = exc.detail, exc.status_code
    if problem is not None:
        error = f'<p class="error" dir="auto">{escape(problem)}</p>\n'
        form = _SETUP_FORM.format(token=escape(token), error=error)
        return _page("راه‌اندازی استودیو", form, status_code)
    done = (
        f"<p>حساب مدیر «<bdi>{escape(user.username)}</bdi>» ساخته شد. اکنون با "
        "<code>POST /api/v1/auth/login</code> وارد شوید.</p>"
    )
    return _page("راه‌اندازی استودیو", done)
