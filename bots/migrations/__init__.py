"""The store's schema history (Alembic): every process upgrades the database to the newest revision at start.

The upgrade runs under a lock that every Chorus process sharing the database respects (a Postgres advisory lock;
a file lock beside a SQLite database), so processes starting at once on a fresh database take turns instead of
racing to create the same tables. `python -m bots.migrations --help` runs them by hand and writes new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

_log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent
# Tables that belong to libraries, which create and change them themselves: never touched by our migrations.
FOREIGN_TABLES = frozenset({"apscheduler_jobs", "slack_bots", "slack_installations", "slack_oauth_states"})
# Modules whose tables live in the Chorus database besides bots.store's own; named, not imported, because features
# are plug-ins the core does not depend on (the Slack ledger imports nothing of Slack's libraries).
FEATURE_TABLE_MODULES = ("scheduler.models", "adapters.slack.ledger")
LOCK_NAME = "chorus:migrations"


def lock_key(name: str = LOCK_NAME) -> int:
    """A stable signed 64-bit Postgres advisory-lock key."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def schema_metadata() -> list[MetaData]:
    """Every table the models define today: what autogenerate and the "models match migrations" test compare."""
    from bots.store import Base

    found = [Base.metadata]
    for name in FEATURE_TABLE_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, MetaData) and all(value is not known for known in found):
                found.append(value)
    return found


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for this directory; `url` is used only when Alembic opens its own connection (CLI)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    config.set_main_option("path_separator", "os")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision; an error while two branches of revisions wait to be merged (see `heads`)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def heads() -> tuple[str, ...]:
    """Every newest revision: one, unless two changes were written in parallel and not yet merged."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_on(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    before = current_revision(connection)
    # "heads": two revisions written in parallel (before their `merge`) both apply rather than stop the start.
    command.upgrade(config, "heads")
    after = current_revision(connection)
    if before != after:
        _log.info("store schema upgraded from %s to %s", before or "nothing", after)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive lock on `path` (created if missing), held across processes until the block ends."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): one process per SQLite file is the only supported setup there
        yield
        return
    with path.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def upgrade(engine: AsyncEngine, sqlite_file: Path | None = None) -> None:
    """Bring the database to the newest revision, one process at a time.

    On Postgres the whole upgrade is one transaction holding an advisory lock, so it either lands or leaves the
    database as it was. On SQLite `sqlite_file` names the database file to lock beside (None: in memory).
    """
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key()})
            await connection.run_sync(_upgrade_on)
        return
    lock: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
    if sqlite_file is not None:
        lock = _file_lock(sqlite_file.with_name(sqlite_file.name + ".migration-lock"))
    async with lock, engine.begin() as connection:
        await connection.run_sync(_upgrade_on)
