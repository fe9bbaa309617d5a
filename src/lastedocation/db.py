"""Engine and session factory, and the migrations that build the schema.

Nothing here is module-level state: `create_app` and the CLI call
`make_engine(settings)` and pass the engine and session factory down.
SQLite runs in WAL mode with a busy timeout so the server, the CLI and
background work can share one file; a PostgreSQL URL works the same way.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, Engine, Integer, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from lastedocation.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000
# connections kept, and more opened at need: SQLite's are cheap (event streams poll);
# PostgreSQL's as many as the API's worker threads (40), so that two servers stay under
# its default limit of 100
POOLS = {"sqlite": (20, 40), "postgresql": (10, 30)}
BACKGROUND_CONNECTIONS = 10  # kept for the supervisor, evaluator, transcribers, backups
_MIGRATION_LOCK = 0x1A57ED0C  # a PostgreSQL advisory lock's key: the studio's migrations


class Base(DeclarativeBase):
    pass


# Every integer column is 64-bit: SQLite's INTEGER always is, PostgreSQL's is not (a
# byte count past 2 GiB, a seed or an id past 2**31 would fail there). On SQLite the
# declared type stays INTEGER, which an auto-incrementing primary key needs.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if not url.startswith("sqlite"):
        return create_engine(
            url,
            pool_pre_ping=True,
            # times come back in UTC whatever zone the server or database is set to
            connect_args={"options": "-c timezone=UTC"} if url.startswith("postgresql") else {},
            pool_size=POOLS["postgresql"][0],
            max_overflow=POOLS["postgresql"][1],
        )
    settings.ensure_dirs()
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=POOLS["sqlite"][0],
        max_overflow=POOLS["sqlite"][1],
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def request_slots(engine: Engine) -> int:
    """How many requests may hold a session at once: the pool's connections but those
    kept for background work (see `lastedocation.api.deps`)."""
    size, overflow = POOLS.get(engine.dialect.name, (5, 10))  # SQLAlchemy's own default
    return max(1, size + overflow - BACKGROUND_CONNECTIONS)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest Alembic revision (or to `revision`)."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("lastedocation") / "migrations"))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # a batch migration rebuilds a table by dropping it, and with foreign keys on,
            # SQLite applies the ON DELETE actions of the rows that reference it (tokens
            # would be deleted, runs would lose their dataset); checked once at the end
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    # servers that start at once (replicas, uvicorn --workers) migrate
                    # one after the other; the lock goes with the transaction
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
