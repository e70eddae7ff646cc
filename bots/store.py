"""The Chorus store: generations, their refinements, feedback and engagement, on SQLAlchemy 2 async.

SQLite (a file under the Chorus home) is the default; any async URL works, Postgres at scale. Callers get frozen
records back, never ORM objects, so no session ever leaks out of this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
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
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    column,
    delete,
    event,
    func,
    select,
    table,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bots import migrations
from bots.events import Conversation, User

_log = logging.getLogger(__name__)

STATUSES = frozenset({"ok", "partial", "failed"})
_VERSION_ATTEMPTS = 10
_HOME_HINT = "Set CHORUS_HOME or chorus.home to a writable directory."

# BIGINT on Postgres; plain INTEGER on SQLite, where only "INTEGER PRIMARY KEY" autoincrements.
Id = BigInteger().with_variant(Integer(), "sqlite")
# Without AUTOINCREMENT SQLite hands a deleted row's id to the next insert, and a forgotten result's id would
# then join its old lineage (root_id) or satisfy a stale parent_id.
_NO_ID_REUSE = {"sqlite_autoincrement": True}


class StoreError(Exception):
    """A store problem, phrased so that it can be shown to the person running or using Chorus."""


class UTCDateTime(TypeDecorator[datetime]):
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


def clean_text(value: str, limit: int | None = None) -> str:
    """Text as every backend takes it: no NUL characters (Postgres refuses them), no lone surrogates (not UTF-8),
    and at most `limit` characters (Postgres refuses longer ones where SQLite would keep them)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


class CleanString(TypeDecorator[str]):
    """VARCHAR(n) that cleans what it is given (see clean_text) instead of failing the whole write."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(value, getattr(self.impl, "length", None))


class CleanText(TypeDecorator[str]):
    """TEXT without the characters Postgres refuses (see clean_text)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(value)


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(key)): _clean_json(item) for key, item in value.items()}
    return value


class CleanJSON(TypeDecorator[Any]):
    """JSON whose strings are cleaned (see clean_text): generated variants may carry a NUL from the model."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _clean_json(value)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The Chorus tables. start() creates and changes them through the revisions in bots/migrations, so a change
    here needs a revision there (`python -m bots.migrations revision -m "..."`)."""


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

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    workspace: Mapped[str] = mapped_column(CleanString(255))
    channel: Mapped[str] = mapped_column(CleanString(255))
    thread: Mapped[str | None] = mapped_column(CleanString(255))
    user_id: Mapped[str] = mapped_column(CleanString(255))
    user_name: Mapped[str] = mapped_column(CleanString(255))
    kind: Mapped[str] = mapped_column(CleanString(64))
    tone: Mapped[str] = mapped_column(CleanString(64))
    prompt: Mapped[str] = mapped_column(CleanText)
    instruction: Mapped[str] = mapped_column(CleanText, default="")
    variants: Mapped[list[str]] = mapped_column(CleanJSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(Id, ForeignKey("generations.id", ondelete="SET NULL"))
    # No foreign key: the lineage keeps its number after its first version is forgotten.
    root_id: Mapped[int] = mapped_column(Id)
    status: Mapped[str] = mapped_column(CleanString(16))
    message_ref: Mapped[str | None] = mapped_column(CleanString(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_user", "platform", "user_id"), _NO_ID_REUSE)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    generation_id: Mapped[int] = mapped_column(Id, ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    user_id: Mapped[str] = mapped_column(CleanString(255))
    kind: Mapped[str] = mapped_column(CleanString(32))
    value: Mapped[str] = mapped_column(CleanString(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class EngagementEvent(Base):
    __tablename__ = "engagement_events"
    __table_args__ = (
        Index("ix_engagement_user", "platform", "user_id"),
        Index("ix_engagement_conversation", "platform", "workspace", "channel", "thread", "created_at"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    workspace: Mapped[str] = mapped_column(CleanString(255))
    channel: Mapped[str] = mapped_column(CleanString(255))
    thread: Mapped[str | None] = mapped_column(CleanString(255))
    user_id: Mapped[str | None] = mapped_column(CleanString(255))
    generation_id: Mapped[int | None] = mapped_column(Id, ForeignKey("generations.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(CleanString(32))
    value: Mapped[str] = mapped_column(CleanText, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class ForgetRequest(Base):
    """A /forget waiting for its answer: only this token confirms it, and only until it expires."""

    __tablename__ = "forget_requests"
    __table_args__ = (
        UniqueConstraint("platform", "user_id", name="uq_forget_requests_user"),
        UniqueConstraint("token", name="uq_forget_requests_token"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    user_id: Mapped[str] = mapped_column(CleanString(255))
    token: Mapped[str] = mapped_column(CleanString(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InFlightGeneration(Base):
    """A generation whose message is on the platform but not final yet (bots/inflight.py). What a restart needs to
    finish that message without the original interaction: where it is, who asked for what, and which process owns it
    (`owner` keeps `updated_at` fresh while it lives, so other processes leave its rows alone)."""

    __tablename__ = "generations_in_flight"
    __table_args__ = (Index("ix_in_flight_owner", "owner", "updated_at"), _NO_ID_REUSE)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    workspace: Mapped[str] = mapped_column(CleanString(255))
    channel: Mapped[str] = mapped_column(CleanString(255))
    thread: Mapped[str | None] = mapped_column(CleanString(255))
    message_ref: Mapped[str] = mapped_column(CleanString(255))
    user_id: Mapped[str] = mapped_column(CleanString(255))
    # What the user did, and what to tell them to do again: "/create", a button's label, a message.
    command: Mapped[str] = mapped_column(CleanString(255))
    title: Mapped[str] = mapped_column(CleanString(255), default="")
    # Set once the result is stored: a restart then shows it in this message instead of a note.
    generation_id: Mapped[int | None] = mapped_column(Id, ForeignKey("generations.id", ondelete="SET NULL"))
    owner: Mapped[str] = mapped_column(CleanString(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


# The drops feature's channel settings, seen only as far as /forget needs (who enabled drops); its models live in
# scheduler/, which the store does not import.
DROPS_ENABLED = "drop channels enabled"  # channels whose drops a person set up, by display name
_DROP_CHANNELS = table(
    "drop_channels", column("platform", String), column("channel", String), column("enabled_by", String)
)
# What a version built on a forgotten person's result keeps in place of their prompt.
FORGOTTEN_PROMPT = ""


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


def _as_json(row: Base) -> dict[str, Any]:
    """A row's columns as JSON-ready values (datetimes in ISO 8601)."""
    values: dict[str, Any] = {}
    for field in row.__table__.columns:
        value = getattr(row, field.key)
        values[field.key] = value.isoformat() if isinstance(value, datetime) else value
    return values


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _connect_timeout(url: URL, seconds: float) -> dict[str, Any]:
    """The driver's own connect timeout, so a host that accepts but never answers fails fast."""
    driver = url.get_driver_name()
    if driver == "asyncpg":
        return {"timeout": seconds}
    if driver in ("psycopg", "psycopg_async", "aiomysql", "asyncmy"):
        return {"connect_timeout": max(1, round(seconds))}
    return {}


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
    # Deleted rows are overwritten with zeros, so what /forget deletes is not left readable in the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


async def _count_user_rows(
    session: AsyncSession, models: Sequence[tuple[str, Any]], platform: str, user_id: str
) -> dict[str, int]:
    """Name -> how many rows of each model belong to this user (the models have platform and user_id columns)."""
    counts = {}
    for name, model in models:
        statement = select(func.count()).select_from(model).where(model.platform == platform, model.user_id == user_id)
        counts[name] = await session.scalar(statement) or 0
    return counts


# -- Brainstorm sessions -----------------------------------------------------------------------------------------
# A session, its ideas and their votes. Ideas live for the session plus `brainstorm.retention_days`, and /forget
# removes a user's ideas and votes (Store.forget_user).

BRAINSTORM_OPEN, BRAINSTORM_CLOSED = "open", "closed"
STARTED = "brainstorms started"  # what /forget and /mydata call the sessions a person started
# A session whose starter was forgotten keeps this in place of their topic.
FORGOTTEN_TOPIC = "(a forgotten topic)"
IDEA_WITHDRAWN = "withdrawn"


class BrainstormSession(Base):
    __tablename__ = "brainstorm_sessions"
    __table_args__ = (
        Index("ix_brainstorm_channel", "platform", "workspace", "channel", "status"),
        Index("ix_brainstorm_thread", "platform", "workspace", "thread"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    workspace: Mapped[str] = mapped_column(CleanString(255))
    channel: Mapped[str] = mapped_column(CleanString(255))
    thread: Mapped[str | None] = mapped_column(CleanString(255))
    thread_name: Mapped[str] = mapped_column(CleanString(255), default="")
    topic: Mapped[str] = mapped_column(CleanText)
    starter_id: Mapped[str] = mapped_column(CleanString(255))
    starter_name: Mapped[str] = mapped_column(CleanString(255))
    status: Mapped[str] = mapped_column(CleanString(16), default=BRAINSTORM_OPEN)
    round: Mapped[int] = mapped_column(Integer, default=1)
    rounds: Mapped[int] = mapped_column(Integer)
    minutes: Mapped[float] = mapped_column(Float)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kickoff_ref: Mapped[str | None] = mapped_column(CleanString(255))
    # [{"label": str, "idea_ids": [int, ...]}] from the latest round end; ideas are looked up live, so forgotten
    # ones simply drop out.
    themes: Mapped[list[dict[str, Any]]] = mapped_column(CleanJSON, default=list)
    next_steps: Mapped[list[str]] = mapped_column(CleanJSON, default=list)
    # The idea each next step was written for, in the same order (None: a session from before this was kept).
    next_step_idea_ids: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BrainstormIdea(Base):
    __tablename__ = "brainstorm_ideas"
    __table_args__ = (
        UniqueConstraint("session_id", "number", name="uq_brainstorm_idea_number"),
        Index("ix_brainstorm_idea_ref", "platform", "message_ref"),
        Index("ix_brainstorm_idea_user", "platform", "user_id"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(Id, ForeignKey("brainstorm_sessions.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    platform: Mapped[str] = mapped_column(CleanString(32))
    user_id: Mapped[str] = mapped_column(CleanString(255))
    user_name: Mapped[str] = mapped_column(CleanString(255))
    text: Mapped[str] = mapped_column(CleanText)
    # "person" for what people posted, "seed" and "yes-and" for Chorus' own ideas, IDEA_WITHDRAWN for a person's idea
    # whose message was deleted: the row keeps only its number (so no later idea takes it) and its message id.
    source: Mapped[str] = mapped_column(CleanString(16))
    message_ref: Mapped[str | None] = mapped_column(CleanString(255))
    # A near-duplicate points at the idea it was merged into; its author is credited there.
    merged_into: Mapped[int | None] = mapped_column(Id, ForeignKey("brainstorm_ideas.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class BrainstormVote(Base):
    __tablename__ = "brainstorm_votes"
    __table_args__ = (
        UniqueConstraint("idea_id", "platform", "user_id", name="uq_brainstorm_vote"),
        Index("ix_brainstorm_vote_user", "platform", "user_id"),
        _NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    idea_id: Mapped[int] = mapped_column(Id, ForeignKey("brainstorm_ideas.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[int] = mapped_column(Id, ForeignKey("brainstorm_sessions.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(CleanString(32))
    user_id: Mapped[str] = mapped_column(CleanString(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


@dataclass(frozen=True)
class BrainstormRecord:
    id: int
    conversation: Conversation
    thread_name: str
    topic: str
    starter: User
    status: str
    round: int
    rounds: int
    minutes: float
    deadline: datetime | None
    kickoff_ref: str | None
    themes: tuple[Mapping[str, Any], ...]
    next_steps: tuple[str, ...]
    created_at: datetime
    closed_at: datetime | None
    expires_at: datetime | None
    next_step_idea_ids: tuple[int, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status == BRAINSTORM_OPEN


@dataclass(frozen=True)
class IdeaRecord:
    id: int
    session_id: int
    number: int
    round: int
    user: User
    text: str
    source: str
    message_ref: str | None
    merged_into: int | None
    created_at: datetime


def _brainstorm_record(row: BrainstormSession) -> BrainstormRecord:
    return BrainstormRecord(
        id=row.id,
        conversation=Conversation(row.platform, row.workspace, row.channel, row.thread),
        thread_name=row.thread_name,
        topic=row.topic,
        starter=User(row.starter_id, row.starter_name),
        status=row.status,
        round=row.round,
        rounds=row.rounds,
        minutes=float(row.minutes),
        deadline=row.deadline,
        kickoff_ref=row.kickoff_ref,
        themes=tuple(MappingProxyType(dict(theme)) for theme in row.themes or ()),
        next_steps=tuple(row.next_steps or ()),
        next_step_idea_ids=tuple(row.next_step_idea_ids or ()),
        created_at=row.created_at,
        closed_at=row.closed_at,
        expires_at=row.expires_at,
    )


def _idea_record(row: BrainstormIdea) -> IdeaRecord:
    return IdeaRecord(
        id=row.id,
        session_id=row.session_id,
        number=row.number,
        round=row.round,
        user=User(row.user_id, row.user_name),
        text=row.text,
        source=row.source,
        message_ref=row.message_ref,
        merged_into=row.merged_into,
        created_at=row.created_at,
    )


_BRAINSTORM_FIELDS = frozenset(
    {"thread", "thread_name", "status", "round", "deadline", "kickoff_ref", "themes", "next_steps", "closed_at"}
    | {"expires_at", "next_step_idea_ids", "rounds"}
)


class BrainstormStore:
    """The brainstorm block of the store; `Store` inherits it, so callers use `store.add_idea(...)` and so on."""

    def _session(self) -> AsyncSession:  # provided by Store
        raise NotImplementedError

    async def create_brainstorm(
        self,
        conversation: Conversation,
        starter: User,
        *,
        topic: str,
        rounds: int,
        minutes: float,
        deadline: datetime | None,
    ) -> BrainstormRecord:
        row = BrainstormSession(
            platform=conversation.platform,
            workspace=conversation.workspace,
            channel=conversation.channel,
            thread=None,
            topic=topic,
            starter_id=starter.id,
            starter_name=starter.name,
            status=BRAINSTORM_OPEN,
            round=1,
            rounds=rounds,
            minutes=minutes,
            deadline=deadline,
            themes=[],
            next_steps=[],
            created_at=_now(),
        )
        async with self._session() as session, session.begin():
            session.add(row)
        return _brainstorm_record(row)

    async def update_brainstorm(self, brainstorm_id: int, **values: Any) -> BrainstormRecord:
        """Change the named fields (thread, round, deadline, themes, status...) and return the session."""
        unknown = set(values) - _BRAINSTORM_FIELDS
        if unknown:
            raise ValueError(f"not brainstorm fields: {sorted(unknown)}")
        async with self._session() as session, session.begin():
            row = await session.get(BrainstormSession, brainstorm_id)
            if row is None:
                raise StoreError("That brainstorm no longer exists.")
            for name, value in values.items():
                setattr(row, name, value)
        return _brainstorm_record(row)

    async def get_brainstorm(self, brainstorm_id: int) -> BrainstormRecord | None:
        async with self._session() as session:
            row = await session.get(BrainstormSession, brainstorm_id)
            return _brainstorm_record(row) if row is not None else None

    async def open_brainstorm_in_channel(self, conversation: Conversation) -> BrainstormRecord | None:
        """The running session started in this channel (a thread of it counts as the channel)."""
        return await self._brainstorm(
            select(BrainstormSession).where(
                BrainstormSession.platform == conversation.platform,
                BrainstormSession.workspace == conversation.workspace,
                BrainstormSession.channel == conversation.channel,
                BrainstormSession.status == BRAINSTORM_OPEN,
            )
        )

    async def brainstorm_for_thread(self, conversation: Conversation) -> BrainstormRecord | None:
        """The newest session whose thread this conversation is in, open or closed; None outside such threads."""
        if conversation.thread is None:
            return None
        return await self._brainstorm(
            select(BrainstormSession).where(
                BrainstormSession.platform == conversation.platform,
                BrainstormSession.workspace == conversation.workspace,
                BrainstormSession.thread == conversation.thread,
            )
        )

    async def latest_closed_brainstorm(self, conversation: Conversation) -> BrainstormRecord | None:
        return await self._brainstorm(
            select(BrainstormSession).where(
                BrainstormSession.platform == conversation.platform,
                BrainstormSession.workspace == conversation.workspace,
                BrainstormSession.channel == conversation.channel,
                BrainstormSession.status == BRAINSTORM_CLOSED,
            )
        )

    async def open_brainstorms(self) -> list[BrainstormRecord]:
        """Every running session, for re-arming round timers after a restart."""
        async with self._session() as session:
            rows = await session.scalars(
                select(BrainstormSession)
                .where(BrainstormSession.status == BRAINSTORM_OPEN)
                .order_by(BrainstormSession.id)
            )
            return [_brainstorm_record(row) for row in rows]

    async def _brainstorm(self, statement: Any) -> BrainstormRecord | None:
        async with self._session() as session:
            row = await session.scalar(statement.order_by(BrainstormSession.id.desc()).limit(1))
            return _brainstorm_record(row) if row is not None else None

    async def add_idea(
        self,
        brainstorm_id: int,
        user: User,
        platform: str,
        text: str,
        *,
        round: int,
        source: str = "person",
        message_ref: str | None = None,
    ) -> IdeaRecord:
        """Store an idea with the session's next number (#1, #2...), which people use to vote for it."""
        for attempt in range(1, _VERSION_ATTEMPTS + 1):
            try:
                async with self._session() as session, session.begin():
                    highest = await session.scalar(
                        select(func.max(BrainstormIdea.number)).where(BrainstormIdea.session_id == brainstorm_id)
                    )
                    row = BrainstormIdea(
                        session_id=brainstorm_id,
                        number=(highest or 0) + 1,
                        round=round,
                        platform=platform,
                        user_id=user.id,
                        user_name=user.name,
                        text=text,
                        source=source,
                        message_ref=message_ref,
                        created_at=_now(),
                    )
                    session.add(row)
                return _idea_record(row)
            except IntegrityError:
                if await self.get_brainstorm(brainstorm_id) is None:
                    raise StoreError("That brainstorm no longer exists.") from None
                if attempt == _VERSION_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def set_idea_message_ref(self, idea_id: int, message_ref: str) -> None:
        async with self._session() as session, session.begin():
            await session.execute(
                update(BrainstormIdea).where(BrainstormIdea.id == idea_id).values(message_ref=message_ref)
            )

    async def edit_idea(self, idea_id: int, text: str, user: User | None = None) -> None:
        """Give an idea its author's corrected text; with `user`, a withdrawn idea comes back as theirs (its message
        was edited back into an idea), with its old number and no votes."""
        values: dict[str, Any] = {"text": text}
        if user is not None:
            values.update(source="person", user_id=user.id, user_name=user.name)
        async with self._session() as session, session.begin():
            await session.execute(update(BrainstormIdea).where(BrainstormIdea.id == idea_id).values(**values))

    async def withdraw_idea(self, idea_id: int) -> None:
        """Its author took the idea back (deleted its message): its votes go, its text and author are forgotten,
        ideas merged into it stand alone again. The row stays, so its number is never given to another idea."""
        async with self._session() as session, session.begin():
            await session.execute(delete(BrainstormVote).where(BrainstormVote.idea_id == idea_id))
            await session.execute(
                update(BrainstormIdea).where(BrainstormIdea.merged_into == idea_id).values(merged_into=None)
            )
            await session.execute(
                update(BrainstormIdea)
                .where(BrainstormIdea.id == idea_id)
                .values(source=IDEA_WITHDRAWN, text="", user_id="", user_name="", merged_into=None)
            )

    async def ideas(self, brainstorm_id: int) -> list[IdeaRecord]:
        """All ideas of a session, by number (withdrawn ones left out)."""
        async with self._session() as session:
            rows = await session.scalars(
                select(BrainstormIdea)
                .where(BrainstormIdea.session_id == brainstorm_id, BrainstormIdea.source != IDEA_WITHDRAWN)
                .order_by(BrainstormIdea.number)
            )
            return [_idea_record(row) for row in rows]

    async def count_ideas(self, brainstorm_id: int, *, round: int, source: str = "person") -> int:
        async with self._session() as session:
            statement = (
                select(func.count())
                .select_from(BrainstormIdea)
                .where(
                    BrainstormIdea.session_id == brainstorm_id,
                    BrainstormIdea.round == round,
                    BrainstormIdea.source == source,
                )
            )
            return await session.scalar(statement) or 0

    async def find_idea(
        self, brainstorm_id: int, *, number: int | None = None, message_ref: str | None = None
    ) -> IdeaRecord | None:
        """An idea of this session by its number or by the platform message that shows it (withdrawn ones too)."""
        statement = select(BrainstormIdea).where(BrainstormIdea.session_id == brainstorm_id)
        if number is not None:
            statement = statement.where(BrainstormIdea.number == number)
        elif message_ref is not None:
            statement = statement.where(BrainstormIdea.message_ref == message_ref)
        else:
            return None
        async with self._session() as session:
            row = await session.scalar(statement.order_by(BrainstormIdea.id).limit(1))
            return _idea_record(row) if row is not None else None

    async def find_idea_by_ref(self, platform: str, message_ref: str) -> IdeaRecord | None:
        """The idea a platform message shows, in any session (reactions carry only the message id)."""
        async with self._session() as session:
            row = await session.scalar(
                select(BrainstormIdea)
                .where(BrainstormIdea.platform == platform, BrainstormIdea.message_ref == message_ref)
                .order_by(BrainstormIdea.id.desc())
                .limit(1)
            )
            return _idea_record(row) if row is not None else None

    async def merge_ideas(self, merged: Mapping[int, int]) -> None:
        """Record near-duplicates: each key idea now counts as part of its value idea."""
        if not merged:
            return
        async with self._session() as session, session.begin():
            for duplicate, canonical in merged.items():
                await session.execute(
                    update(BrainstormIdea).where(BrainstormIdea.id == duplicate).values(merged_into=canonical)
                )

    async def add_vote(self, idea: IdeaRecord, platform: str, user_id: str) -> bool:
        """One vote per person per idea: False when this person had already voted for it."""
        try:
            async with self._session() as session, session.begin():
                session.add(
                    BrainstormVote(idea_id=idea.id, session_id=idea.session_id, platform=platform, user_id=user_id)
                )
        except IntegrityError:
            return False
        return True

    async def remove_vote(self, idea: IdeaRecord, platform: str, user_id: str) -> bool:
        async with self._session() as session, session.begin():
            result = await session.execute(
                delete(BrainstormVote).where(
                    BrainstormVote.idea_id == idea.id,
                    BrainstormVote.platform == platform,
                    BrainstormVote.user_id == user_id,
                )
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def voters(self, brainstorm_id: int) -> dict[int, frozenset[str]]:
        """Idea id -> the ids of the people who voted for it."""
        async with self._session() as session:
            rows = await session.execute(
                select(BrainstormVote.idea_id, BrainstormVote.user_id).where(BrainstormVote.session_id == brainstorm_id)
            )
            found: dict[int, set[str]] = {}
            for idea_id, user_id in rows:
                found.setdefault(idea_id, set()).add(user_id)
            return {idea_id: frozenset(users) for idea_id, users in found.items()}

    async def brainstorms_with_ideas_by(self, platform: str, user_id: str) -> list[int]:
        """The ids of the sessions this person posted ideas in."""
        async with self._session() as session:
            rows = await session.scalars(
                select(BrainstormIdea.session_id)
                .where(BrainstormIdea.platform == platform, BrainstormIdea.user_id == user_id)
                .distinct()
            )
            return sorted(rows)

    async def purge_expired_brainstorms(self, now: datetime | None = None) -> int:
        """Delete sessions (with their ideas and votes) whose retention period is over."""
        async with self._session() as session, session.begin():
            result = await session.execute(
                delete(BrainstormSession).where(
                    BrainstormSession.expires_at.is_not(None), BrainstormSession.expires_at <= (now or _now())
                )
            )
        count = result.rowcount or 0  # type: ignore[attr-defined]
        if count:
            _log.info("deleted %d brainstorm sessions past their retention period", count)
        return count

    async def _brainstorm_user_counts(self, session: AsyncSession, platform: str, user_id: str) -> dict[str, int]:
        models = (("brainstorm ideas", BrainstormIdea), ("brainstorm votes", BrainstormVote))
        counts = await _count_user_rows(session, models, platform, user_id)
        started = select(func.count()).where(
            BrainstormSession.platform == platform, BrainstormSession.starter_id == user_id
        )
        counts[STARTED] = await session.scalar(started) or 0
        return {name: n for name, n in counts.items() if n}

    async def _forget_brainstorm_user(self, session: AsyncSession, platform: str, user_id: str) -> dict[str, int]:
        """Delete the user's votes and ideas (ideas merged into theirs stand alone again, credited to no one else),
        and drop their id, name and topic from sessions they started."""
        counts = {}
        for name, model in (("brainstorm votes", BrainstormVote), ("brainstorm ideas", BrainstormIdea)):
            result = await session.execute(delete(model).where(model.platform == platform, model.user_id == user_id))
            counts[name] = result.rowcount  # type: ignore[attr-defined]
        started = await session.execute(
            update(BrainstormSession)
            .where(BrainstormSession.platform == platform, BrainstormSession.starter_id == user_id)
            .values(starter_id="", starter_name="someone", topic=FORGOTTEN_TOPIC, thread_name="Brainstorm")
        )
        counts[STARTED] = started.rowcount  # type: ignore[attr-defined]
        return {name: counts[name] for name in ("brainstorm ideas", "brainstorm votes", STARTED) if counts[name]}


# -- end of brainstorm sessions -----------------------------------------------------------------------------------


class Store(BrainstormStore):
    """Chorus' persistent memory. Call start() once before use and close() at shutdown."""

    def __init__(
        self, url: str, *, connect_timeout_s: float = 5.0, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        # When engagement happens, by default: drops read it by their own clock, so a test freezes both alike.
        self.clock = clock or _now
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def start(self) -> None:
        """Create the data directory (SQLite) and bring the tables to the newest schema revision, so a fresh install
        needs no setup step and an upgrade needs none either."""
        try:
            url = make_url(self.url)
        except ArgumentError:
            raise StoreError(f"{self.url!r} is not a database URL, e.g. sqlite+aiosqlite:////path/chorus.db") from None
        shown = url.render_as_string(hide_password=True)
        database_file = _sqlite_file(url)
        if database_file is not None:
            database_file = database_file.expanduser().absolute()
            _ensure_directory(database_file.parent)
        try:
            engine = create_async_engine(url, connect_args=_connect_timeout(url, self.connect_timeout_s))
        except (ArgumentError, ImportError) as exc:
            raise StoreError(f"Cannot use the store URL {shown}: {exc}") from None
        except InvalidRequestError:
            raise StoreError(
                f"Cannot use the store URL {shown}: its driver is not async; use sqlite+aiosqlite:// or "
                "postgresql+asyncpg://"
            ) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _enable_sqlite_pragmas)
        try:
            await migrations.upgrade(engine, database_file)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            cause = getattr(exc, "orig", None) or exc
            if isinstance(cause, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
                reason = f"no answer within {self.connect_timeout_s:g} s (store.connect_timeout_s)"
            else:
                reason = str(cause) or type(cause).__name__
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
        at: datetime | None = None,
    ) -> None:
        """Record a signal from a channel (reply, reaction, click); the scheduler turns these into rewards. `at`:
        when it happened (default now), for a caller that runs on its own clock."""
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
                created_at=at or self.clock(),
            )
        )

    async def user_data_counts(self, platform: str, user_id: str, names: Sequence[str] = ()) -> dict[str, int]:
        """How many rows Chorus keeps about one user, for a "what do you store about me" answer: everything
        `forget_user` deletes or anonymises (`names`: display names to look for besides the stored ones)."""
        async with self._session() as session:
            models = (("generations", Generation), ("feedback", Feedback), ("engagement", EngagementEvent))
            counts = await _count_user_rows(session, models, platform, user_id)
            counts.update(await self._brainstorm_user_counts(session, platform, user_id))
            known = set(names) | await self._names_of(session, platform, user_id)
            if known:
                enabled = select(func.count()).where(
                    _DROP_CHANNELS.c.platform == platform, _DROP_CHANNELS.c.enabled_by.in_(sorted(known))
                )
                counts.update({DROPS_ENABLED: n} if (n := await session.scalar(enabled) or 0) else {})
            return counts

    async def user_data(self, platform: str, user_id: str, names: Sequence[str] = ()) -> dict[str, Any]:
        """Everything stored about one user, as JSON-ready data: the "right of access" next to /forget."""
        async with self._session() as session:
            known = set(names) | await self._names_of(session, platform, user_id)

            async def rows(model: Any, *where: Any) -> list[dict[str, Any]]:
                found = await session.scalars(select(model).where(*where).order_by(model.id))
                return [_as_json(row) for row in found]

            mine = (Generation.platform == platform, Generation.user_id == user_id)
            data: dict[str, Any] = {
                "platform": platform,
                "user_id": user_id,
                "names": sorted(known),
                "generations": await rows(Generation, *mine),
                "feedback": await rows(Feedback, Feedback.platform == platform, Feedback.user_id == user_id),
                "engagement": await rows(
                    EngagementEvent, EngagementEvent.platform == platform, EngagementEvent.user_id == user_id
                ),
                "brainstorms_started": await rows(
                    BrainstormSession,
                    BrainstormSession.platform == platform,
                    BrainstormSession.starter_id == user_id,
                ),
                "brainstorm_ideas": await rows(
                    BrainstormIdea, BrainstormIdea.platform == platform, BrainstormIdea.user_id == user_id
                ),
                "brainstorm_votes": await rows(
                    BrainstormVote, BrainstormVote.platform == platform, BrainstormVote.user_id == user_id
                ),
                "pending_forget": await rows(
                    ForgetRequest, ForgetRequest.platform == platform, ForgetRequest.user_id == user_id
                ),
                "drop_channels_enabled": [],
            }
            if known:
                enabled = await session.execute(
                    select(_DROP_CHANNELS.c.channel, _DROP_CHANNELS.c.enabled_by).where(
                        _DROP_CHANNELS.c.platform == platform, _DROP_CHANNELS.c.enabled_by.in_(sorted(known))
                    )
                )
                data["drop_channels_enabled"] = [{"channel": c, "enabled_by": by} for c, by in enabled]
            for request in data["pending_forget"]:
                request.pop("token", None)  # a secret: it confirms the deletion
            return data

    async def forget_user(self, platform: str, user_id: str, names: Sequence[str] = ()) -> dict[str, int]:
        """Delete everything this user created and every trace of who they are, in one transaction.

        Other users' versions built on theirs keep their own text but lose the forgotten prompt (and their parent);
        feedback on the user's results goes with them; sessions they started lose their name and topic; channels
        they enabled drops in forget who did it (`names`: display names to look for besides the stored ones).
        """
        async with self._session() as session, session.begin():
            known = set(names) | await self._names_of(session, platform, user_id)
            roots = select(Generation.root_id).where(
                Generation.platform == platform, Generation.user_id == user_id, Generation.id == Generation.root_id
            )
            await session.execute(
                update(Generation)
                .where(Generation.root_id.in_(roots), Generation.user_id != user_id)
                .values(prompt=FORGOTTEN_PROMPT)
            )
            counts = {}
            # Feedback first: its count must not include rows cascaded from the generations below.
            for name, model in (("feedback", Feedback), ("engagement", EngagementEvent), ("generations", Generation)):
                result = await session.execute(
                    delete(model).where(model.platform == platform, model.user_id == user_id)
                )
                counts[name] = result.rowcount  # type: ignore[attr-defined]
            await session.execute(
                delete(ForgetRequest).where(ForgetRequest.platform == platform, ForgetRequest.user_id == user_id)
            )
            others = await self._forget_brainstorm_user(session, platform, user_id)
            if known:
                enabled = await session.execute(
                    update(_DROP_CHANNELS)
                    .where(_DROP_CHANNELS.c.platform == platform, _DROP_CHANNELS.c.enabled_by.in_(sorted(known)))
                    .values(enabled_by="")
                )
                if enabled.rowcount:  # type: ignore[attr-defined]
                    others[DROPS_ENABLED] = enabled.rowcount  # type: ignore[attr-defined]
        if self.engine.dialect.name == "sqlite":
            # The write-ahead log still holds the pages as they were before the delete: fold it in and empty it.
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        _log.info("forgot a %s user: %s %s", platform, counts, others)
        return {name: counts[name] for name in ("generations", "feedback", "engagement")} | others

    async def _names_of(self, session: AsyncSession, platform: str, user_id: str) -> set[str]:
        """Every display name this user is stored under."""
        statements = (
            select(Generation.user_name).where(Generation.platform == platform, Generation.user_id == user_id),
            select(BrainstormIdea.user_name).where(
                BrainstormIdea.platform == platform, BrainstormIdea.user_id == user_id
            ),
            select(BrainstormSession.starter_name).where(
                BrainstormSession.platform == platform, BrainstormSession.starter_id == user_id
            ),
        )
        names: set[str] = set()
        for statement in statements:
            names.update(name for name in (await session.scalars(statement.distinct())) if name)
        return names

    async def ask_to_forget(self, platform: str, user_id: str, token: str, expires_at: datetime) -> None:
        """Remember the one /forget confirmation this user may answer, replacing any earlier one."""
        async with self._session() as session, session.begin():
            await session.execute(
                delete(ForgetRequest).where(ForgetRequest.platform == platform, ForgetRequest.user_id == user_id)
            )
            session.add(
                ForgetRequest(platform=platform, user_id=user_id, token=token, created_at=_now(), expires_at=expires_at)
            )

    async def answer_forget(self, platform: str, token: str, now: datetime | None = None) -> str | None:
        """Use up a /forget confirmation: the id of the user it belongs to, or None if it was answered, replaced
        or has expired. Only one answer ever gets the id, however many arrive at once."""
        async with self._session() as session, session.begin():
            row = await session.scalar(
                select(ForgetRequest).where(ForgetRequest.platform == platform, ForgetRequest.token == token)
            )
            if row is None:
                return None
            result = await session.execute(delete(ForgetRequest).where(ForgetRequest.id == row.id))
            if not result.rowcount or row.expires_at <= (now or _now()):  # type: ignore[attr-defined]
                return None
            return row.user_id

    async def forget_request_owner(self, platform: str, token: str) -> str | None:
        """Whose pending /forget confirmation this is, without using it up."""
        async with self._session() as session:
            return await session.scalar(
                select(ForgetRequest.user_id).where(ForgetRequest.platform == platform, ForgetRequest.token == token)
            )

    async def purge_expired_forget_requests(self, now: datetime | None = None) -> int:
        """Delete /forget questions nobody answered in time."""
        async with self._session() as session, session.begin():
            result = await session.execute(delete(ForgetRequest).where(ForgetRequest.expires_at <= (now or _now())))
        return result.rowcount or 0  # type: ignore[attr-defined]

    async def purge_results_before(self, cutoff: datetime) -> int:
        """Delete results (with the feedback on them) made before `cutoff` (`store.retention_days`)."""
        async with self._session() as session, session.begin():
            result = await session.execute(delete(Generation).where(Generation.created_at < cutoff))
        return result.rowcount or 0  # type: ignore[attr-defined]

    async def purge_engagement_before(self, cutoff: datetime) -> int:
        """Delete engagement signals recorded before `cutoff` (`store.engagement_days`)."""
        async with self._session() as session, session.begin():
            result = await session.execute(delete(EngagementEvent).where(EngagementEvent.created_at < cutoff))
        return result.rowcount or 0  # type: ignore[attr-defined]

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
