"""Build the FastAPI app: settings, database, migrations, routes, error mapping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from lastedocation import __version__
from lastedocation.api.deps import SessionSlots
from lastedocation.api.limits import BodyLimit
from lastedocation.api.observe import Observe
from lastedocation.api.routes import (
    auth,
    backup,
    datasets,
    health,
    metrics,
    models,
    openai_compat,
    runs,
    synthesis,
    transcription_jobs,
    transcriptions,
)
from lastedocation.auth.ratelimit import LoginLimiter
from lastedocation.auth.tokens import TokenSigner, load_signing_key
from lastedocation.backup.runner import Backups
from lastedocation.datasets.service import clean_leftovers, import_sample_once
from lastedocation.db import make_engine, migrate, request_slots, session_factory
from lastedocation.errors import StudioError
from lastedocation.inference.cache import ModelCache
from lastedocation.metrics import StudioMetrics
from lastedocation.models.evaluator import Evaluator
from lastedocation.paths import hide_data_dir
from lastedocation.runs.executor import make_executor
from lastedocation.runs.leadership import Leadership
from lastedocation.runs.live import EventHub
from lastedocation.runs.supervisor import Supervisor
from lastedocation.settings import Settings
from lastedocation.speech.engines import load_speaker
from lastedocation.speech.stt import SpeechModels
from lastedocation.speech.transcriber import Transcriber
from lastedocation.speech.tts import SpeakerCache
from lastedocation.web import mount as web

log = logging.getLogger("lastedocation")


def create_app(settings: Settings, *, login_limiter: LoginLimiter | None = None) -> FastAPI:
    """The studio's app. `login_limiter` replaces the default limit on failed sign-ins
    (tests pass one with their own clock)."""
    settings.ensure_dirs()
    engine = make_engine(settings)
    migrate(engine)
    clean_leftovers(settings)
    sessions = session_factory(engine)
    if settings.import_sample_dataset:
        with sessions() as session:
            import_sample_once(session=session, settings=settings)
    if settings.bundled_speech_model:
        from lastedocation.speech.models import register_bundled_once

        with sessions() as session:
            register_bundled_once(session=session, settings=settings)

    supervisor = Supervisor(
        settings=settings,
        sessions=sessions,
        executor=make_executor(settings),
        capacity=settings.max_concurrent_runs or _device_capacity(settings),
        interval=settings.supervisor_interval_s,
        heartbeat_timeout=settings.heartbeat_timeout_s,
        # of several servers on one database, one leads (see runs/leadership.py)
        leadership=Leadership(engine, ttl_s=settings.leader_lease_s),
    )

    evaluator = Evaluator(settings=settings, sessions=sessions)
    speech_models = SpeechModels(
        max_models=settings.speech_max_models, compute_type=settings.whisper_compute_type
    )
    transcriber = Transcriber(
        settings=settings,
        sessions=sessions,
        models=speech_models,
        workers=settings.transcription_workers,
    )

    backups = Backups(settings=settings, sessions=sessions, leading=lambda: supervisor.leading)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        supervisor.resume_paused_at_shutdown()
        supervisor.start()
        evaluator.start()
        transcriber.start()
        backups.start()
        yield
        if settings.pause_runs_on_shutdown:  # the trainers die with this container
            paused = await asyncio.to_thread(
                supervisor.pause_all, settings.shutdown_pause_timeout_s
            )
            if paused:
                log.info("paused runs %s for the shutdown; they resume at the next start", paused)
        backups.stop()  # a running backup is cancelled; its snapshot never appears
        transcriber.stop()  # a job running now fails as interrupted
        evaluator.stop()
        supervisor.stop()  # trainers keep running; the next start re-attaches
        engine.dispose()

    app = FastAPI(
        title="LASTEDOCATION",
        version=__version__,
        description="A self-hosted studio for training Persian language models.",
        # The bundled docs pages load their scripts from a CDN: the studio serves
        # only local assets, so the schema is offered at /openapi.json instead.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model_cache = ModelCache(
        max_models=settings.inference_max_models,
        min_free_memory_mb=settings.inference_min_free_memory_mb,
    )
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.session_slots = SessionSlots(request_slots(engine))
    app.state.signing_key = load_signing_key(settings)
    app.state.signer = TokenSigner(app.state.signing_key)
    app.state.login_limiter = login_limiter or LoginLimiter()
    app.state.supervisor = supervisor
    app.state.event_hub = EventHub(sessions)
    app.state.evaluator = evaluator
    app.state.speech_models = speech_models
    app.state.transcriber = transcriber
    app.state.backups = backups
    app.state.metrics = StudioMetrics(settings=settings, sessions=sessions)
    app.state.speakers = SpeakerCache(
        max_voices=settings.tts_max_loaded_voices,
        load=partial(load_speaker, espeak_timeout_s=settings.espeak_timeout_s),
    )

    @app.exception_handler(StudioError)
    async def _studio_error(request: Request, exc: StudioError) -> Response:
        if exc.status_code >= 500:
            log.exception("unexpected error", exc_info=exc)
        # a message from a library may name a file by its path: never the data folder's
        exc.detail = hide_data_dir(exc.detail, settings.data_dir)
        exc.extra = hide_data_dir(exc.extra, settings.data_dir)
        if web.is_page(request):
            return web.error_page(request, exc)
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or None, "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(
            {"error": "invalid_input", "detail": detail, "problems": problems}, status_code=422
        )

    # every body but a file upload: refused with 413 before it is read, if too large
    app.add_middleware(BodyLimit, settings=settings, answer=_studio_error)
    # outermost: every answer (a 413 above included) gets its request id and is counted
    app.add_middleware(Observe, metrics=app.state.metrics, answer=_studio_error)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(auth.router, prefix="/api/v1")
    app.include_router(datasets.router, prefix="/api/v1")
    app.include_router(runs.router, prefix="/api/v1")
    app.include_router(models.router, prefix="/api/v1")
    app.include_router(openai_compat.router)
    app.include_router(synthesis.router)
    app.include_router(synthesis.voices_router, prefix="/api/v1")
    app.include_router(transcriptions.router)
    app.include_router(transcription_jobs.router, prefix="/api/v1")
    app.include_router(backup.router, prefix="/api/v1")
    web.install(app)

    def ready() -> bool:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return settings.data_dir.is_dir()

    app.state.ready = ready
    return app


def _device_capacity(settings: Settings) -> int:
    """One run per GPU; one at a time on a CPU. On Ray the cluster's resources decide:
    every queued run is submitted, and waits there for them."""
    if settings.executor == "ray":
        return 1_000_000
    import torch

    return max(1, torch.cuda.device_count())
