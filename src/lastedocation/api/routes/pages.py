"""The landing page (the full web UI comes with its own pages)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lastedocation.datasets import service

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="fa" dir="rtl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LASTEDOCATION</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;
line-height:1.7}}code{{direction:ltr;unicode-bidi:isolate}}</style></head>
<body><h1>LASTEDOCATION</h1>
<p>استودیوی آموزش مدل‌های زبانی فارسی. رابط وب در راه است؛ فعلاً از API استفاده کنید.</p>
<p>مجموعه‌داده‌ها: {count}</p>
<ul><li>API: <code>/api/v1/datasets</code></li><li>OpenAPI: <code>/openapi.json</code></li>
<li>CLI: <code>lastedocation --help</code></li></ul></body></html>
"""


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> str:
    with request.app.state.sessions() as session:
        count = len(service.list_datasets(session=session))
    return _PAGE.format(count=count)
