"""Live run events for many listeners: one reader per watched run, frames encoded once.

A run that has at least one listener gets one `RunFeed`: a task that asks the database
for the run's new events every `poll_s` (one query, however many listeners there are),
encodes each event once as a server-sent-events frame, and keeps the most recent
frames in a window. A listener is only a cursor (the last `seq` it sent): it copies
frames out of the window, and reads further back (a reconnect from long ago) from the
database page by page until it reaches the window. Nothing is queued per listener, so
a slow reader costs no memory here; `EventStreamResponse` drops one whose socket has not
accepted a frame for `send_timeout_s`.

Event ids are the trainer's `seq`: a client that reconnects with `Last-Event-ID` gets
exactly the events it missed.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import StreamingResponse
from starlette.types import Message, Send

from lastedocation.runs import service
from lastedocation.runs.models import Run
from lastedocation.runs.states import ACTIVE

log = logging.getLogger("lastedocation.live")
WATCHED = (*ACTIVE, "queued")  # states in which a run may still emit events


def encode(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False)
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


class RunFeed:
    """The shared window of one run's most recent frames, refreshed by one reader."""

    def __init__(self, run_id: int, sessions: sessionmaker[Session], window: int) -> None:
        self.run_id = run_id
        self.sessions = sessions
        self.window = window
        self.seqs: list[int] = []
        self.frames: list[bytes] = []
        self.base = -1  # the window holds every event with seq > base (-1: not read yet)
        self.live = True
        self.listeners = 0
        self.wake = asyncio.Event()  # replaced after each change; listeners wait on it
        self.task: asyncio.Task[None] | None = None

    def _fetch(self, after: int | None) -> tuple[list[dict[str, Any]], bool, int]:
        with self.sessions() as session:
            run = session.get(Run, self.run_id)
            if run is None:
                return [], False, after or 0
            if after is None:  # first read: start the window at the run's current end
                return [], run.state in WATCHED, run.last_seq
            rows = service.events_after(session=session, run_id=self.run_id, after=after)
            return [row.data for row in rows], run.state in WATCHED, after

    async def refresh(self) -> None:
        first = self.base < 0
        events, live, base = await run_in_threadpool(self._fetch, None if first else self.last)
        if first:
            self.base = base
        for event in events:
            if event["type"] == "rewind":  # later steps are void, as in the database
                self._drop_after_step(event["to_step"])
            self.seqs.append(event["seq"])
            self.frames.append(encode(event))
        if len(self.frames) > 2 * self.window:  # trim in chunks: amortised O(1)
            cut = len(self.frames) - self.window
            self.base = self.seqs[cut - 1]
            del self.seqs[:cut], self.frames[:cut]
        if first or events or live != self.live:
            self.live = live
            self.wake.set()
            self.wake = asyncio.Event()

    def _drop_after_step(self, step: int) -> None:
        keep = [
            i
            for i, frame in enumerate(self.frames)
            if not _superseded(frame, step)  # metrics/eval of a step after the rewind
        ]
        self.seqs = [self.seqs[i] for i in keep]
        self.frames = [self.frames[i] for i in keep]

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else self.base

    def after(self, cursor: int) -> tuple[list[int], list[bytes]]:
        at = bisect.bisect_right(self.seqs, cursor)
        return self.seqs[at:], self.frames[at:]


def _superseded(frame: bytes, step: int) -> bool:
    kind = frame.split(b"\n", 2)[1].removeprefix(b"event: ")
    if kind not in (b"metrics", b"eval"):
        return False
    event = json.loads(frame.split(b"\ndata: ", 1)[1])
    return int(event.get("step") or 0) > step


class EventHub:
    """The feeds of the runs someone is watching now (one per run)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        poll_s: float = 0.25,
        keepalive_s: float = 15.0,
        window: int = 2048,
    ) -> None:
        self.sessions = sessions
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.window = window
        self.feeds: dict[int, RunFeed] = {}

    @asynccontextmanager
    async def _joined(self, run_id: int) -> AsyncIterator[RunFeed]:
        feed = self.feeds.get(run_id)
        if feed is None:
            feed = self.feeds[run_id] = RunFeed(run_id, self.sessions, self.window)
        feed.listeners += 1
        try:
            if feed.task is None:
                feed.task = asyncio.create_task(self._read(feed), name=f"run-feed-{run_id}")
            yield feed
        finally:
            feed.listeners -= 1

    async def _read(self, feed: RunFeed) -> None:
        try:
            while True:
                await feed.refresh()
                await asyncio.sleep(self.poll_s)
                if feed.listeners == 0:  # no await between this check and the removal
                    break
        except Exception:
            log.exception("reading the events of run %s failed", feed.run_id)
            feed.live = False
        finally:
            if self.feeds.get(feed.run_id) is feed:
                del self.feeds[feed.run_id]
            feed.wake.set()

    def _backlog(self, run_id: int, after: int) -> list[tuple[int, bytes]]:
        with self.sessions() as session:
            rows = service.events_after(session=session, run_id=run_id, after=after)
            return [(row.seq, encode(row.data)) for row in rows]

    async def stream(self, run_id: int, start: int) -> AsyncIterator[bytes]:
        """Every event of the run after `start`, then live ones until the run rests."""
        yield b"retry: 1000\n\n"
        cursor = start
        async with self._joined(run_id) as feed:
            while feed.base < 0 and feed.live:  # the first read has not finished
                await _wait(feed.wake, self.keepalive_s)
            while True:
                if cursor < feed.base:  # further back than the window: the database
                    page = await run_in_threadpool(self._backlog, run_id, cursor)
                    page = [(seq, frame) for seq, frame in page if seq <= feed.base]
                    cursor = page[-1][0] if page else feed.base
                    if page:
                        yield b"".join(frame for _, frame in page)
                    continue
                wake = feed.wake
                seqs, frames = feed.after(cursor)
                if frames:
                    cursor = seqs[-1]
                    yield b"".join(frames)
                    continue
                if not feed.live or feed.task is None or feed.task.done():
                    return
                if not await _wait(wake, self.keepalive_s):
                    yield b": keep-alive\n\n"


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


async def polled_events(
    fetch: Callable[[int], tuple[list[dict[str, Any]], bool]],
    after: int,
    *,
    poll_s: float = 0.25,
    keepalive_s: float = 15.0,
) -> AsyncIterator[bytes]:
    """A job's logged events after `after`, then live ones until it ends, framed as the
    runs' events are. `fetch(cursor)` (run in a worker thread) answers the events after
    the cursor and whether the job has ended. Background transcriptions and backup jobs
    stream through this."""
    yield b"retry: 1000\n\n"
    cursor, quiet = after, 0.0
    while True:
        events, ended = await run_in_threadpool(fetch, cursor)
        if events:
            cursor, quiet = events[-1]["seq"], 0.0
            yield b"".join(encode(event) for event in events)
            continue
        if ended:
            return
        await asyncio.sleep(poll_s)
        quiet += poll_s
        if quiet >= keepalive_s:
            quiet = 0.0
            yield b": keep-alive\n\n"


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that gives up on a client whose socket has not
    taken a frame within `send_timeout_s` (it stopped reading), instead of waiting on it."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout_s: float) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.send_timeout_s = send_timeout_s

    async def stream_response(self, send: Send) -> None:
        async def timed(message: Message) -> None:
            await _within(send(message), self.send_timeout_s)

        try:
            await super().stream_response(timed)
        except TimeoutError:
            log.info("dropped an event-stream client that stopped reading")
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(
                self.body_iterator, "aclose", None
            )
            if aclose is not None:
                await aclose()


async def _within(step: Awaitable[None], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        await step
