"""The drops tables, on the store's `Base` and database: channel settings, every scheduled run, activity counts.

A run's `run_key` is unique, so two processes (or a restart) can never post the same slot twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bots.store import Base, Id, UTCDateTime

# Run states. generating -> posting -> posted is the happy path; "posting" left behind by a crash becomes
# "unconfirmed" (never re-sent); "retrying" waits for its next attempt; "failed" gave up and alerted.
GENERATING, POSTING, POSTED, UNCONFIRMED, RETRYING, FAILED = (
    "generating",
    "posting",
    "posted",
    "unconfirmed",
    "retrying",
    "failed",
)
MISSED, SKIPPED = "missed", "skipped"
QUIET_NOTE = "quiet hours"  # the note of a slot skipped because it fell in the channel's quiet hours
FINAL = frozenset({POSTED, UNCONFIRMED, FAILED, MISSED, SKIPPED})


def _now() -> datetime:
    return datetime.now(UTC)


class DropChannel(Base):
    __tablename__ = "drop_channels"
    __table_args__ = (UniqueConstraint("key", name="uq_drop_channels_key"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(800))
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(255))
    thread: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    kinds: Mapped[list[str]] = mapped_column(JSON)
    cadence: Mapped[str] = mapped_column(String(120))
    time: Mapped[str] = mapped_column(String(16))
    tz: Mapped[str] = mapped_column(String(64))
    quiet: Mapped[str] = mapped_column(String(16), default="")
    topics: Mapped[list[str]] = mapped_column(JSON)
    learn_topics: Mapped[bool] = mapped_column(Boolean, default=False)
    # Mined theme -> weight (counts of words, never messages), only when learn_topics is on.
    mined: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    planner: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The hour (local) the next `--time auto` drop is scheduled at.
    auto_hour: Mapped[int | None] = mapped_column(Integer)
    last_slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enabled_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class DropRun(Base):
    __tablename__ = "drop_runs"
    __table_args__ = (
        UniqueConstraint("run_key", name="uq_drop_runs_run_key"),
        Index("ix_drop_runs_channel", "channel_key", "scheduled_for"),
        Index("ix_drop_runs_status", "status"),
        Index("ix_drop_runs_generation", "generation_id"),
        Index("ix_drop_runs_message", "platform", "message_ref"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(String(900))
    channel_key: Mapped[str] = mapped_column(String(800))
    platform: Mapped[str] = mapped_column(String(32))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    generation_id: Mapped[int | None] = mapped_column(Id)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    embedding: Mapped[list[float] | None] = mapped_column(JSON)
    message_ref: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str] = mapped_column(Text, default="")
    reward: Mapped[float | None] = mapped_column(Float)
    engagement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class DropActivity(Base):
    """Message counts per channel and UTC hour of the week (0 = Monday 00:00 UTC); counts only, never text."""

    __tablename__ = "drop_activity"
    __table_args__ = (
        UniqueConstraint("platform", "workspace", "channel", "hour_of_week", name="uq_drop_activity_bucket"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(255))
    hour_of_week: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer, default=0)


DROP_TABLES: list[Table] = [cast(Table, model.__table__) for model in (DropChannel, DropRun, DropActivity)]
