"""The evaluator: a thread inside the server that runs queued evaluations one at a time.

Evaluations load a model and generate, which takes from seconds (a tiny model) to
hours (a large one on a CPU), so the API only queues them; this thread works through
the queue and stores each result or the reason it failed. An evaluation left
`running` by a server that stopped is queued again on the next start.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from lastedocation.models import service
from lastedocation.models.entries import ModelEvaluation
from lastedocation.settings import Settings

log = logging.getLogger("lastedocation.evaluator")


class Evaluator:
    def __init__(self, *, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        with self.sessions() as session:  # a server stopped mid-evaluation: run it again
            session.execute(
                update(ModelEvaluation)
                .where(ModelEvaluation.state == "running")
                .values(state="queued")
            )
            session.commit()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="evaluator", daemon=True)
        self._thread.start()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # an evaluation in progress runs on as a daemon
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    with self.sessions() as session:
                        if (
                            service.run_next_evaluation(session=session, settings=self.settings)
                            is None
                        ):
                            break
                except Exception:  # one broken row must not end the thread
                    log.exception("evaluation failed unexpectedly")
                    break
