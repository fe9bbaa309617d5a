"""`GET /metrics`: the studio's Prometheus metrics, for a scraper the operator allowed.

The figures reveal activity (who trains how much, when backups run), so they are not
public: with `metrics_token` set, the scraper sends `Authorization: Bearer <token>`;
without one, only a client connected over loopback, not through a proxy, may read them.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lastedocation.api.deps import SettingsDep, error_responses
from lastedocation.errors import Forbidden, Unauthorized
from lastedocation.metrics import StudioMetrics

router = APIRouter(tags=["health"])
# a request that names the client it came from passed through a proxy: the loopback
# peer is the proxy, not the client
FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus exposition format."},
        **error_responses(401, 403),
    },
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Requests by route and status and their latency, runs by state, the queue, event
    ingestion lag, open event streams, trainers' tokens/s, backup, evaluation and
    transcription jobs. 401 without the configured `metrics_token`; without one set,
    403 for a client that is not on loopback."""
    token = settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        wanted = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), wanted):
            raise Unauthorized("send `Authorization: Bearer <metrics_token>` to read the metrics")
    elif not _loopback(request):
        raise Forbidden(
            "the metrics are readable over loopback only; set LASTEDOCATION_METRICS_TOKEN "
            "to let a scraper elsewhere (or behind a proxy) read them with that token"
        )
    studio: StudioMetrics = request.app.state.metrics
    body, content_type = studio.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def _loopback(request: Request) -> bool:
    if any(name in request.headers for name in FORWARDED):
        return False
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an address (a unix socket, a test client)
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return address.is_loopback
