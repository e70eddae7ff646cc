"""Baseline: the tables Chorus made with create_all before it had migrations.

Each table is created only where it is missing, so a database that create_all made (with or without the drops and
Slack tables, which appeared only once those features ran) upgrades in place, and a fresh one gets them all.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)
TABLES = (
    "brainstorm_sessions",
    "drop_activity",
    "drop_channels",
    "drop_runs",
    "generations",
    "brainstorm_ideas",
    "engagement_events",
    "feedback",
    "brainstorm_votes",
    "slack_events",
)


def _create(name: str, *elements: Any, indexes: dict[str, list[str]] | None = None, **options: Any) -> None:
    if sa.inspect(op.get_bind()).has_table(name):
        return
    op.create_table(name, *elements, **options)
    for index, columns in (indexes or {}).items():
        op.create_index(index, name, columns)


def upgrade() -> None:
    _create(
        "brainstorm_sessions",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("workspace", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("thread", sa.String(length=255), nullable=True),
        sa.Column("thread_name", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("starter_id", sa.String(length=255), nullable=False),
        sa.Column("starter_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.Float(), nullable=False),
        sa.Column("deadline", UTC_DATETIME, nullable=True),
        sa.Column("kickoff_ref", sa.String(length=255), nullable=True),
        sa.Column("themes", sa.JSON(), nullable=False),
        sa.Column("next_steps", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("closed_at", UTC_DATETIME, nullable=True),
        sa.Column("expires_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
        indexes={
            "ix_brainstorm_channel": ["platform", "workspace", "channel", "status"],
            "ix_brainstorm_thread": ["platform", "workspace", "thread"],
        },
    )

    _create(
        "drop_activity",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("workspace", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("hour_of_week", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("platform", "workspace", "channel", "hour_of_week", name="uq_drop_activity_bucket"),
        sqlite_autoincrement=True,
    )

    _create(
        "drop_channels",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=800), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("workspace", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("thread", sa.String(length=255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("pause_reason", sa.Text(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("cadence", sa.String(length=120), nullable=False),
        sa.Column("time", sa.String(length=16), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("quiet", sa.String(length=16), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("learn_topics", sa.Boolean(), nullable=False),
        sa.Column("mined", sa.JSON(), nullable=False),
        sa.Column("planner", sa.JSON(), nullable=False),
        sa.Column("auto_hour", sa.Integer(), nullable=True),
        sa.Column("last_slot_at", UTC_DATETIME, nullable=True),
        sa.Column("enabled_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key", name="uq_drop_channels_key"),
        sqlite_autoincrement=True,
    )

    _create(
        "drop_runs",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("run_key", sa.String(length=900), nullable=False),
        sa.Column("channel_key", sa.String(length=800), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("scheduled_for", UTC_DATETIME, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_DATETIME, nullable=True),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("generation_id", ID, nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=True),
        sa.Column("message_ref", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("engagement", sa.JSON(), nullable=True),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.Column("posted_at", UTC_DATETIME, nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_key", name="uq_drop_runs_run_key"),
        sqlite_autoincrement=True,
        indexes={
            "ix_drop_runs_channel": ["channel_key", "scheduled_for"],
            "ix_drop_runs_generation": ["generation_id"],
            "ix_drop_runs_message": ["platform", "message_ref"],
            "ix_drop_runs_status": ["status"],
        },
    )

    _create(
        "generations",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("workspace", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("thread", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("tone", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("root_id", ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_ref", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["generations.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("root_id", "version", name="uq_generations_root_version"),
        sqlite_autoincrement=True,
        indexes={
            "ix_generations_conversation": ["platform", "workspace", "channel", "thread", "id"],
            "ix_generations_message_ref": ["platform", "message_ref"],
            "ix_generations_user": ["platform", "user_id"],
        },
    )

    _create(
        "brainstorm_ideas",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("message_ref", sa.String(length=255), nullable=True),
        sa.Column("merged_into", ID, nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["merged_into"], ["brainstorm_ideas.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["session_id"], ["brainstorm_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "number", name="uq_brainstorm_idea_number"),
        sqlite_autoincrement=True,
        indexes={
            "ix_brainstorm_idea_ref": ["platform", "message_ref"],
            "ix_brainstorm_idea_user": ["platform", "user_id"],
            "ix_brainstorm_ideas_session_id": ["session_id"],
        },
    )

    _create(
        "engagement_events",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("workspace", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("thread", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("generation_id", ID, nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
        indexes={
            "ix_engagement_conversation": ["platform", "workspace", "channel", "thread", "created_at"],
            "ix_engagement_events_generation_id": ["generation_id"],
            "ix_engagement_user": ["platform", "user_id"],
        },
    )

    _create(
        "feedback",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("generation_id", ID, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
        indexes={"ix_feedback_generation_id": ["generation_id"], "ix_feedback_user": ["platform", "user_id"]},
    )

    _create(
        "brainstorm_votes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("idea_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["idea_id"], ["brainstorm_ideas.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["session_id"], ["brainstorm_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idea_id", "platform", "user_id", name="uq_brainstorm_vote"),
        sqlite_autoincrement=True,
        indexes={
            "ix_brainstorm_vote_user": ["platform", "user_id"],
            "ix_brainstorm_votes_idea_id": ["idea_id"],
            "ix_brainstorm_votes_session_id": ["session_id"],
        },
    )

    _create(
        "slack_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
        indexes={"ix_slack_events_seen_at": ["seen_at"]},
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
