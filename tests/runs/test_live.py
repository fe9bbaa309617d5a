"""The live event hub on a real SQLite database: one reader per run, cursors, slow clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.runs.live import EventHub, EventStreamResponse
from lastedocation.runs.models import Run, RunEvent
from lastedocation.settings import Settings


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    settings.ensure_dirs()
    engine = make_engine(settings)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def add_run(sessions: sessionmaker[Session], state: str = "running") -> int:
    with sessions() as session:
        run = Run(name="r", state=state, config={}, folder="runs/r")
        session.add(run)
        session.commit()
        return run.id


def emit(sessions: sessionmaker[Session], run_id: int, *events: dict[str, Any]) -> None:
    """What the supervisor's ingestion does: rows plus the run's last seq, one commit."""
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        for event in events:
            session.add(
                RunEvent(
                    run_id=run_id,
                    seq=event["seq"],
                    type=event["type"],
                    step=event.get("step"),
                    data=event,
                )
            )
            run.last_seq = event["seq"]
        session.commit()


def metrics(seq: int, step: int | None = None) -> dict[str, Any]:
    return {"seq": seq, "type": "metrics", "step": step or seq, "loss": 1.0 / seq}


def set_state(sessions: sessionmaker[Session], run_id: int, state: str) -> None:
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.state = state
        session.commit()


def parse(chunks: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for block in b"".join(chunks).split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
        if b"data" in lines:
            event = json.loads(lines[b"data"])
            assert int(lines[b"id"]) == event["seq"]
            events.append(event)
    return events


async def read_all(stream: AsyncIterator[bytes], timeout: float = 20) -> list[dict[str, Any]]:
    chunks = []
    async with asyncio.timeout(timeout):
        async for chunk in stream:
            chunks.append(chunk)
    return parse(chunks)


def test_a_finished_run_streams_its_whole_history_then_ends(
    sessions: sessionmaker[Session],
) -> None:
    run_id = add_run(sessions, state="completed")
    emit(sessions, run_id, *(metrics(seq) for seq in range(1, 1201)))
    hub = EventHub(sessions, poll_s=0.01, window=16)

    async def main() -> None:
        everything = await read_all(hub.stream(run_id, 0))
        assert [e["seq"] for e in everything] == list(range(1, 1201))
        tail = await read_all(hub.stream(run_id, 1150))
        assert [e["seq"] for e in tail] == list(range(1151, 1201))
        assert hub.feeds == {} or all(f.listeners == 0 for f in hub.feeds.values())

    asyncio.run(main())


def test_live_listeners_share_one_reader_and_miss_nothing(
    sessions: sessionmaker[Session],
) -> None:
    run_id = add_run(sessions)
    emit(sessions, run_id, *(metrics(seq) for seq in range(1, 51)))
    hub = EventHub(sessions, poll_s=0.01, window=32)

    async def producer() -> None:
        for first in range(51, 551, 25):
            await asyncio.to_thread(emit, sessions, run_id, *map(metrics, range(first, first + 25)))
            await asyncio.sleep(0.02)
        await asyncio.to_thread(set_state, sessions, run_id, "completed")

    async def main() -> None:
        listeners = [read_all(hub.stream(run_id, start)) for start in (0, 10, 40, 0, 49) * 8]
        results = await asyncio.gather(producer(), *listeners)
        for start, events in zip((0, 10, 40, 0, 49) * 8, results[1:], strict=True):
            assert [e["seq"] for e in events] == list(range(start + 1, 551))
        await asyncio.sleep(0.1)
        assert hub.feeds == {}  # the feed was removed once its listeners left

    asyncio.run(main())


def test_one_feed_per_run_however_many_listeners(sessions: sessionmaker[Session]) -> None:
    run_id = add_run(sessions)
    hub = EventHub(sessions, poll_s=0.01, keepalive_s=0.05)

    async def main() -> None:
        streams = [hub.stream(run_id, 0) for _ in range(30)]
        for stream in streams:
            assert await anext(stream) == b"retry: 1000\n\n"
        firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
        done = await asyncio.gather(*firsts)
        assert all(chunk == b": keep-alive\n\n" for chunk in done)
        assert list(hub.feeds) == [run_id] and hub.feeds[run_id].listeners == 30
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        assert hub.feeds[run_id].listeners == 0
        await asyncio.sleep(0.1)
        assert hub.feeds == {}

    asyncio.run(main())


def test_a_rewind_voids_later_steps_in_the_window_too(sessions: sessionmaker[Session]) -> None:
    run_id = add_run(sessions)
    emit(sessions, run_id, metrics(1))
    hub = EventHub(sessions, poll_s=0.01)

    async def main() -> list[dict[str, Any]]:
        stream = hub.stream(run_id, 1)
        reader = asyncio.ensure_future(read_all(stream))
        await asyncio.sleep(0.1)  # the feed is open: what follows goes through its window
        await asyncio.to_thread(emit, sessions, run_id, metrics(2), metrics(3))
        await asyncio.sleep(0.1)
        rewind = {"seq": 4, "type": "rewind", "to_step": 2}
        await asyncio.to_thread(emit, sessions, run_id, rewind, metrics(5, step=3))
        await asyncio.sleep(0.1)
        late = await read_all_from_window(hub, run_id)
        await asyncio.to_thread(set_state, sessions, run_id, "completed")
        assert [e["seq"] for e in await reader] == [2, 3, 4, 5]
        return late

    late = asyncio.run(main())
    assert [(e["seq"], e.get("step")) for e in late] == [(2, 2), (4, None), (5, 3)]


async def read_all_from_window(hub: EventHub, run_id: int) -> list[dict[str, Any]]:
    _, frames = hub.feeds[run_id].after(1)
    return parse(frames)


def test_a_client_that_stops_reading_is_dropped(sessions: sessionmaker[Session]) -> None:
    run_id = add_run(sessions)
    emit(sessions, run_id, *(metrics(seq) for seq in range(1, 101)))
    hub = EventHub(sessions, poll_s=0.01)
    sent: list[Any] = []

    async def stuck_socket(message: Any) -> None:
        sent.append(message)
        if len(sent) > 2:  # the client's buffers are full: this send never completes
            await asyncio.Event().wait()

    async def main() -> None:
        response = EventStreamResponse(hub.stream(run_id, 0), send_timeout_s=0.3)
        async with asyncio.timeout(10):
            await response.stream_response(stuck_socket)
        assert hub.feeds[run_id].listeners == 0

    asyncio.run(main())
    assert len(sent) == 3
