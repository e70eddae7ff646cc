"""The Chorus store: generations, their refinements, feedback and engagement, on SQLAlchemy 2 async.

SQLite (a file under the Chorus home) is the default; any async URL works, Postgres at scale. Callers get frozen
records back, never ORM objects, so no session ever leaks out of this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bots.events import Conversation, User

_log = logging.getLogger(__name__)

STATUSES = frozenset({"ok", "partial", "failed"})
_VERSION_ATTEMPTS = 10
_HOME_HINT = "Set CHORUS_HOME or chorus.home to a writable directory."

# BIGINT on Postgres; plain INTEGER on SQLite, where only "INTEGER PRIMARY KEY" autoincrements.
_Id = BigInteger().with_variant(Integer(), "sqlite")
# Without AUTOINCREMENT SQLite hands a deleted row's id to the next insert, and a forgotten result's id would
# then join its old lineage (root_id) or satisfy a stale parent_id.
_NO_ID_REUSE = {"sqlite_autoincrement": True}


class StoreError(Exception):
    """A store problem, phrased so that it can be shown to the person running or using Chorus."""


class _UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store only takes timezone-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The Chorus tables; `Base.metadata` is what start() creates."""


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_conversation", "platform", "workspace", "channel", "thread", "id"),
        Index("ix_generations_user", "platform", "user_id"),
        Index("ix_generations_message_ref", "platform", "message_ref"),
        # Two refinements racing for the same version number: the loser retries (see add_generation).
        UniqueConstraint("root_id", "version", name="uq_generations_root_version"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(255))
    thread: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    user_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    tone: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    instruction: Mapped[str] = mapped_column(Text, default="")
    variants: Mapped[list[str]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(_Id, ForeignKey("generations.id", ondelete="SET NULL"))
    # No foreign key: the lineage keeps its number after its first version is forgotten.
    root_id: Mapped[int] = mapped_column(_Id)
    status: Mapped[str] = mapped_column(String(16))
    message_ref: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime, default=_now)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_user", "platform", "user_id"), _NO_ID_REUSE)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    generation_id: Mapped[int] = mapped_column(_Id, ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime, default=_now)


class EngagementEvent(Base):
    __tablename__ = "engagement_events"
    __table_args__ = (
        Index("ix_engagement_user", "platform", "user_id"),
        Index("ix_engagement_conversation", "platform", "workspace", "channel", "thread", "created_at"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(255))
    thread: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    generation_id: Mapped[int | None] = mapped_column(
        _Id, ForeignKey("generations.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime, default=_now)


@dataclass(frozen=True)
class GenerationRecord:
    """One stored result (one version of a lineage), detached from any session."""

    id: int
    conversation: Conversation
    user: User
    kind: str
    tone: str
    prompt: str
    instruction: str
    variants: tuple[str, ...]
    params: Mapping[str, Any]
    version: int
    parent_id: int | None
    root_id: int
    status: str
    message_ref: str | None
    created_at: datetime


def _record(row: Generation) -> GenerationRecord:
    return GenerationRecord(
        id=row.id,
        conversation=Conversation(row.platform, row.workspace, row.channel, row.thread),
        user=User(row.user_id, row.user_name),
        kind=row.kind,
        tone=row.tone,
        prompt=row.prompt,
        instruction=row.instruction,
        variants=tuple(row.variants),
        params=MappingProxyType(dict(row.params)),
        version=row.version,
        parent_id=row.parent_id,
        root_id=row.root_id,
        status=row.status,
        message_ref=row.message_ref,
        created_at=row.created_at,
    )


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _ensure_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"Cannot create the data directory {directory}: a file is in the way. {_HOME_HINT}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create the data directory {directory}: {exc.strerror}. {_HOME_HINT}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"Cannot write to the data directory {directory}: Permission denied. {_HOME_HINT}")


def _enable_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    # Foreign keys are off per connection by default in SQLite; without them ON DELETE does nothing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


class Store:
    """Chorus' persistent memory. Call start() once before use and close() at shutdown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def start(self) -> None:
        """Create the data directory (SQLite) and the tables, so a fresh install needs no setup step."""
        try:
            url = make_url(self.url)
        except ArgumentError:
            raise StoreError(f"{self.url!r} is not a database URL, e.g. sqlite+aiosqlite:////path/chorus.db") from None
        shown = url.render_as_string(hide_password=True)
        database_file = _sqlite_file(url)
        if database_file is not None:
            _ensure_directory(database_file.expanduser().absolute().parent)
        try:
            engine = create_async_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise StoreError(f"Cannot use the store URL {shown}: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _enable_sqlite_pragmas)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"Cannot open the store at {shown}: {reason}") from exc
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        _log.info("store ready at %s", shown)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None
        self._sessions = None

    def _session(self) -> AsyncSession:
        if self._sessions is None:
            raise RuntimeError("Store.start() has not been called (or the store is closed)")
        return self._sessions()

    def session(self) -> AsyncSession:
        """A new session, for feature modules that keep their own tables on `Base` (brainstorms, drops)."""
        return self._session()

    @property
    def engine(self) -> AsyncEngine:
        """The async engine (the drops scheduler's job store and leader lock share the database)."""
        if self._engine is None:
            raise RuntimeError("Store.start() has not been called (or the store is closed)")
        return self._engine

    async def add_generation(
        self,
        conversation: Conversation,
        user: User,
        *,
        kind: str,
        tone: str,
        prompt: str,
        variants: Sequence[str],
        params: Mapping[str, Any],
        instruction: str = "",
        parent: GenerationRecord | None = None,
        status: str = "ok",
    ) -> GenerationRecord:
        """Store a result. With a parent it becomes the next version of the parent's lineage, else version 1."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {sorted(STATUSES)}, not {status!r}")
        if isinstance(variants, str):
            raise TypeError("variants must be a sequence of strings, not one string")
        for attempt in range(1, _VERSION_ATTEMPTS + 1):
            row = Generation(
                platform=conversation.platform,
                workspace=conversation.workspace,
                channel=conversation.channel,
                thread=conversation.thread,
                user_id=user.id,
                user_name=user.name,
                kind=kind,
                tone=tone,
                prompt=prompt,
                instruction=instruction,
                variants=list(variants),
                params=dict(params),
                parent_id=parent.id if parent else None,
                status=status,
                created_at=_now(),
            )
            try:
                async with self._session() as session, session.begin():
                    if parent is None:
                        # The root id is the row's own id, known only after the insert; the placeholder never
                        # leaves this transaction.
                        row.version, row.root_id = 1, 0
                        session.add(row)
                        await session.flush()
                        row.root_id = row.id
                    else:
                        highest = await session.scalar(
                            select(func.max(Generation.version)).where(Generation.root_id == parent.root_id)
                        )
                        row.version, row.root_id = (highest or 0) + 1, parent.root_id
                        session.add(row)
                return _record(row)
            except IntegrityError:
                if parent is None:
                    raise
                if await self.get_generation(parent.id) is None:
                    raise StoreError("The result being refined no longer exists.") from None
                if attempt == _VERSION_ATTEMPTS:
                    raise
                _log.debug("version %s of lineage %s was taken concurrently; retrying", row.version, parent.root_id)
        raise AssertionError("unreachable")

    async def set_message_ref(self, generation_id: int, message_ref: str) -> None:
        """Remember which platform message shows this result, so reactions and replies find it."""
        async with self._session() as session, session.begin():
            result = await session.execute(
                update(Generation).where(Generation.id == generation_id).values(message_ref=message_ref)
            )
        if not result.rowcount:  # type: ignore[attr-defined]
            _log.warning("set_message_ref: generation %s does not exist", generation_id)

    async def get_generation(self, generation_id: int) -> GenerationRecord | None:
        async with self._session() as session:
            row = await session.get(Generation, generation_id)
            return _record(row) if row is not None else None

    async def find_by_message_ref(self, platform: str, message_ref: str) -> GenerationRecord | None:
        """The result shown in that platform message; the newest one if a message was reused."""
        statement = (
            select(Generation)
            .where(Generation.platform == platform, Generation.message_ref == message_ref)
            .order_by(Generation.id.desc())
            .limit(1)
        )
        return await self._one(statement)

    async def latest_generation(self, conversation: Conversation) -> GenerationRecord | None:
        """The newest result in exactly this channel and thread ("refine the last one")."""
        statement = (
            select(Generation)
            .where(
                Generation.platform == conversation.platform,
                Generation.workspace == conversation.workspace,
                Generation.channel == conversation.channel,
                Generation.thread == conversation.thread,  # None compiles to IS NULL
            )
            .order_by(Generation.id.desc())
            .limit(1)
        )
        return await self._one(statement)

    async def versions(self, root_id: int) -> list[GenerationRecord]:
        """Every stored version of one lineage, branches included, by version ascending."""
        async with self._session() as session:
            rows = await session.scalars(
                select(Generation).where(Generation.root_id == root_id).order_by(Generation.version, Generation.id)
            )
            return [_record(row) for row in rows]

    async def lineage(self, record: GenerationRecord) -> list[GenerationRecord]:
        """The chain of parents that led to this record, oldest first, ending with the record itself."""
        # Parents always share the child's root_id, so one query fetches every candidate.
        by_id = {version.id: version for version in await self.versions(record.root_id)}
        chain: list[GenerationRecord] = []
        current: GenerationRecord | None = by_id.get(record.id, record)
        while current is not None and len(chain) <= len(by_id):
            chain.append(current)
            current = by_id.get(current.parent_id) if current.parent_id is not None else None
        chain.reverse()
        return chain

    async def add_feedback(self, generation_id: int, user: User, platform: str, kind: str, value: str) -> None:
        """Record a rating, action or reaction on a result."""
        await self._add(
            Feedback(generation_id=generation_id, platform=platform, user_id=user.id, kind=kind, value=value)
        )

    async def add_engagement(
        self,
        conversation: Conversation,
        kind: str,
        value: str = "",
        *,
        user: User | None = None,
        generation_id: int | None = None,
    ) -> None:
        """Record a signal from a channel (reply, reaction, click); the scheduler turns these into rewards."""
        await self._add(
            EngagementEvent(
                platform=conversation.platform,
                workspace=conversation.workspace,
                channel=conversation.channel,
                thread=conversation.thread,
                user_id=user.id if user else None,
                generation_id=generation_id,
                kind=kind,
                value=value,
            )
        )

    async def user_data_counts(self, platform: str, user_id: str) -> dict[str, int]:
        """How many rows Chorus keeps about one user, for a "what do you store about me" answer."""
        async with self._session() as session:
            counts = {}
            for name, model in (("generations", Generation), ("feedback", Feedback), ("engagement", EngagementEvent)):
                statement = (
                    select(func.count()).select_from(model).where(model.platform == platform, model.user_id == user_id)
                )
                counts[name] = await session.scalar(statement) or 0
            return counts

    async def forget_user(self, platform: str, user_id: str) -> dict[str, int]:
        """Delete everything this user created. Other users' refinements of it stay, with parent_id cleared;
        their feedback on it goes with it."""
        async with self._session() as session, session.begin():
            counts = {}
            # Feedback first: its count must not include rows cascaded from the generations below.
            for name, model in (("feedback", Feedback), ("engagement", EngagementEvent), ("generations", Generation)):
                result = await session.execute(
                    delete(model).where(model.platform == platform, model.user_id == user_id)
                )
                counts[name] = result.rowcount  # type: ignore[attr-defined]
        _log.info("forgot %s user %s: %s", platform, user_id, counts)
        return {name: counts[name] for name in ("generations", "feedback", "engagement")}

    async def count_generations(self) -> int:
        async with self._session() as session:
            return await session.scalar(select(func.count()).select_from(Generation)) or 0

    async def _one(self, statement: Any) -> GenerationRecord | None:
        async with self._session() as session:
            row = await session.scalar(statement)
            return _record(row) if row is not None else None

    async def _add(self, row: Feedback | EngagementEvent) -> None:
        try:
            async with self._session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise StoreError(f"Result {row.generation_id} no longer exists.") from None
