"""One backup job in a process of its own, as `lastedocation backup now` runs it: the
chaos tests start this and SIGKILL it part-way.

Settings come from the environment (LASTEDOCATION_DATA_DIR, LASTEDOCATION_BACKUP_TARGETS);
the target's name is the only argument. It prints `job N` once the job is queued, each
step (`step sending`) and restic's progress (`progress BYTES_DONE BYTES_TOTAL`) as they
happen, and `ended STATE` when it ends, so the test knows where it killed it.
"""

from __future__ import annotations

import sys
from typing import Any

from lastedocation.backup import jobs
from lastedocation.backup.runner import Backups
from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.settings import Settings


def main(target_name: str) -> int:
    settings = Settings()
    engine = make_engine(settings)
    migrate(engine)
    sessions = session_factory(engine)
    backups = Backups(settings=settings, sessions=sessions)
    with sessions() as session:
        job = jobs.queue_job(
            session, kind="backup", target=backups.target(target_name), trigger="cli"
        )
        job_id = job.id
    print(f"job {job_id}", flush=True)
    ended = backups.run(job_id, listener=_say)
    print(f"ended {ended.state} {ended.message or ''}", flush=True)
    engine.dispose()
    return 0 if ended.state == "done" else 1


def _say(event: dict[str, Any]) -> None:
    if event["type"] == "step":
        print(f"step {event['step']}", flush=True)
    elif event["type"] == "progress":
        print(f"progress {event.get('bytes_done', 0)} {event.get('bytes_total', 0)}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
