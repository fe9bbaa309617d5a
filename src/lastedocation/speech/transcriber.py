"""The transcriber: worker threads inside the server that run queued transcriptions.

Transcribing takes about a fifth of the audio's length on a CPU, so the API only queues
a job; `workers` threads (one by default: on a CPU two jobs at once only share the same
cores) take the oldest queued job, decode its audio, and store each segment as it
comes. Between two segments a worker looks at the job's state, so a cancel (or the
server stopping) takes effect within one segment.

On start, a job that a stopped server left running is marked failed ("interrupted by a
server restart") and its audio deleted; queued jobs simply run.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from lastedocation.errors import StudioError
from lastedocation.models.entries import ModelEntry
from lastedocation.settings import Settings
from lastedocation.speech import intake
from lastedocation.speech import transcriptions as jobs
from lastedocation.speech.audio import decode
from lastedocation.speech.entries import Transcription
from lastedocation.speech.stt import Segment, SpeechModels, joined_text, progress, transcribe

log = logging.getLogger("lastedocation.transcriber")
INTERRUPTED = "interrupted by a server restart"


class _Stop(Exception):
    """The job must stop now: `state` is how it ends (cancelled or failed)."""

    def __init__(self, state: str, message: str | None = None) -> None:
        super().__init__(state)
        self.state = state
        self.message = message


class Transcriber:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        models: SpeechModels,
        workers: int = 1,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.models = models
        self.workers = workers
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        self.recover()
        self._stopping.clear()
        for n in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"transcriber-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def wake(self) -> None:
        """A job was queued."""
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Running jobs stop after their current segment and are marked interrupted."""
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout=timeout_s)  # one still decoding ends on the next start
        self._threads = []

    def recover(self) -> None:
        """Jobs a stopped server left running fail; audio no job waits for is deleted."""
        with self.sessions() as session:
            left = session.scalars(
                select(Transcription).where(Transcription.state.in_(("running", "cancelling")))
            )
            for job in left:
                state = "cancelled" if job.state == "cancelling" else "failed"
                self._end(session, job, state, INTERRUPTED if state == "failed" else None)
            session.commit()
            waiting = {
                Path(audio).name
                for audio in session.scalars(
                    select(Transcription.audio).where(Transcription.state == "queued")
                )
                if audio
            }
        folder = jobs.jobs_dir(self.settings)
        for leftover in folder.iterdir() if folder.is_dir() else ():
            if leftover.name not in waiting:
                leftover.unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job_id = self._claim()
            except Exception:  # the database may be busy; try again shortly
                log.exception("could not take the next transcription")
                job_id = None
            if job_id is None:
                with self._wake:
                    self._wake.wait(timeout=2.0)
                continue
            try:
                self.run(job_id)
            except Exception:  # one broken job must not end the thread
                log.exception("transcription %s failed unexpectedly", job_id)

    def _claim(self) -> int | None:
        """The oldest queued job, now running; None when there is none."""
        with self.sessions() as session:
            for job_id in session.scalars(
                select(Transcription.id)
                .where(Transcription.state == "queued")
                .order_by(Transcription.id)
                .limit(5)
            ):
                taken = session.execute(
                    update(Transcription)
                    .where(Transcription.id == job_id, Transcription.state == "queued")
                    .values(state="running", started_at=jobs.now())
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    job = session.get(Transcription, job_id)
                    assert job is not None
                    jobs.add_event(session, job, "state", state="running", progress=0.0)
                    session.commit()
                    return job_id
                session.rollback()  # another worker or a cancel took it
        return None

    def run(self, job_id: int) -> None:
        """Transcribe one claimed job to its end, whatever that end is."""
        found: list[Segment] = []
        with self.sessions() as session:
            job = session.get(Transcription, job_id)
            if job is None or job.audio is None:
                return
            audio_path = self.settings.data_dir / job.audio
        try:
            with self.sessions() as session:
                job = self._check(job_id, session)
                name, options = repr(job.filename), jobs.job_options(job)
                entry = session.get(ModelEntry, job.model_id) if job.model_id else None
                if entry is None:
                    raise StudioError(f"the speech model {job.model_name!r} was deleted")
                folder = intake.model_folder(self.settings, entry)
            audio = decode(audio_path, max_seconds=self.settings.max_audio_seconds, name=name)
            self._check(job_id)
            model = self.models.get(folder)
            self._check(job_id)
            result = transcribe(model, audio.samples, options)
            del audio  # up to 16,000 float32 a second: not kept while decoding
            self._started(job_id, result.language, result.language_probability, result.duration)
            for segment in result.segments:
                found.append(segment)
                self._store(job_id, segment, progress(segment, result.duration))
            self._finish(job_id, "done", text=joined_text(found))
        except _Stop as stop:
            self._finish(job_id, stop.state, stop.message, text=joined_text(found))
        except StudioError as exc:
            self._finish(job_id, "failed", exc.detail)
        except Exception as exc:
            log.exception("transcription %s failed", job_id)
            self._finish(job_id, "failed", f"the transcription failed: {type(exc).__name__}")
        finally:
            audio_path.unlink(missing_ok=True)  # however the job ended

    def _check(self, job_id: int, session: Session | None = None) -> Transcription:
        """The job, if it should go on; else _Stop saying how it ends."""
        if session is None:
            with self.sessions() as own:
                return self._check(job_id, own)
        job = session.get(Transcription, job_id)
        if job is None:
            raise _Stop("deleted")
        if job.state == "cancelling":
            raise _Stop("cancelled")
        if job.state != "running":
            raise _Stop(job.state)
        if self._stopping.is_set():
            raise _Stop("failed", INTERRUPTED)
        return job

    def _started(self, job_id: int, language: str, probability: float, duration: float) -> None:
        with self.sessions() as session:
            job = self._check(job_id, session)
            job.language, job.language_probability = language, round(probability, 4)
            job.duration_s = round(duration, 3)
            jobs.add_event(
                session,
                job,
                "state",
                state="running",
                progress=0.0,
                language=language,
                language_probability=job.language_probability,
                duration=job.duration_s,
            )
            session.commit()

    def _store(self, job_id: int, segment: Segment, done: float) -> None:
        with self.sessions() as session:
            job = self._check(job_id, session)
            job.progress = round(done, 4)
            job.segments += 1
            jobs.add_event(
                session, job, "segment", progress=job.progress, segment=segment.to_dict()
            )
            session.commit()

    def _finish(
        self, job_id: int, state: str, message: str | None = None, *, text: str | None = None
    ) -> None:
        with self.sessions() as session:
            job = session.get(Transcription, job_id)
            if job is None:
                return
            if job.state in ("cancelling", "running"):
                if state == "done" and job.state == "cancelling":
                    state = "cancelled"  # asked to stop, though nothing was left to do
                job.text = text
                self._end(session, job, state, message)
            else:  # cancelled while queued, or ended elsewhere: only the audio is left
                jobs.remove_audio(self.settings, job)
            session.commit()

    def _end(self, session: Session, job: Transcription, state: str, message: str | None) -> None:
        job.state, job.message, job.finished_at = state, message, jobs.now()
        if state == "done":
            job.progress = 1.0
        jobs.remove_audio(self.settings, job)
        jobs.add_event(
            session,
            job,
            "state",
            state=state,
            progress=job.progress,
            message=message,
            segments=job.segments,
        )
