"""Which studio server leads: a lease, one row in the database.

Several servers may share one database (`uvicorn --workers 2`, two containers behind a
proxy). Each serves the API; only the one holding the `supervisor` lease starts
trainers, ingests their events and marks dead runs. The leader renews the lease every
supervisor tick; when it stops renewing (killed, hung, cut off from the database), the
lease expires after `ttl_s` and the next server to try takes it.

A row and not a PostgreSQL advisory lock: the same code works on SQLite, the row shows
who leads, and it survives a connection pooler in transaction mode (an advisory lock
lives on one connection, which the pooler may hand to someone else). Taking and
renewing are one conditional UPDATE (or INSERT for the first holder ever), so two
servers that try at once cannot both win. Expiry is judged by the database's clock on
PostgreSQL, so servers on different machines need not agree on the time; SQLite is on
one machine, whose clock everyone shares.

A lease is not a fence: a leader that hangs past its lease may act once more before it
learns it lost. The supervisor's actions are guarded by the runs' rows themselves (a
queued run is claimed with a conditional UPDATE; a run's events are ingested under its
row lock), so such a late action does nothing twice.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from sqlalchemy import Engine, Float, String, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from lastedocation.db import Base

SUPERVISOR = "supervisor"


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[float] = mapped_column(Float)  # seconds since the epoch


class Leadership:
    """This server's claim on the lease `name`."""

    def __init__(self, engine: Engine, *, ttl_s: float = 5.0, name: str = SUPERVISOR) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def hold(self) -> bool:
        """Take the lease if it is free or expired, renew it if it is ours; True while
        it is ours."""
        with self.engine.begin() as connection:
            now = _database_time(connection)
            expires = now + self.ttl_s
            taken = connection.execute(
                update(Lease)
                .where(
                    Lease.name == self.name,
                    or_(Lease.holder == self.holder, Lease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=expires)
            )
            if taken.rowcount == 1:
                return True
            first = _insert(connection).values(
                name=self.name, holder=self.holder, expires_at=expires
            )
            # RETURNING says whether the row went in (psycopg's rowcount for an INSERT
            # ... ON CONFLICT is not dependable)
            inserted = first.on_conflict_do_nothing().returning(Lease.name)
            return connection.execute(inserted).first() is not None

    def release(self) -> None:
        """Give the lease up at once (a planned stop), so another server leads now
        rather than when it expires."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Lease)
                .where(Lease.name == self.name, Lease.holder == self.holder)
                .values(expires_at=0.0)
            )

    def leader(self) -> str | None:
        """Who holds the lease now (None: nobody)."""
        with self.engine.connect() as connection:
            now = _database_time(connection)
            row = connection.execute(
                select(Lease.holder).where(Lease.name == self.name, Lease.expires_at >= now)
            ).first()
        return None if row is None else str(row[0])


def _database_time(connection: Connection) -> float:
    if connection.dialect.name == "postgresql":  # clock_timestamp(): now, not the txn start
        return float(
            connection.execute(text("SELECT extract(epoch FROM clock_timestamp())")).one()[0]
        )
    return time.time()


def _insert(connection: Connection) -> postgresql.Insert | sqlite.Insert:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(Lease)
    if connection.dialect.name == "sqlite":
        return sqlite.insert(Lease)
    raise RuntimeError(f"leases need PostgreSQL or SQLite, not {connection.dialect.name}")
