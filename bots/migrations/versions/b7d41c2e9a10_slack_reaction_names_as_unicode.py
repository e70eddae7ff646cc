"""Slack reaction names stored before the Slack adapter turned them into Unicode become the emoji they name

Engagement events and feedback recorded `+1`, `thumbsup`, `heart`… for Slack reactions (and `-<name>` for a
removal); the drops planner and /mydata now read reactions as Unicode emoji. Only the names the earlier core mapped
are rewritten; a workspace's own emoji keeps its name. Downgrade leaves the Unicode values as they are.

Revision ID: b7d41c2e9a10
Revises: ed3526c70ca9
Create Date: 2026-12-02 04:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b7d41c2e9a10"
down_revision = "ed3526c70ca9"
branch_labels = None
depends_on = None

# The earlier core's alias table, frozen here: a migration must not change with the code it migrates.
_NAMES = {
    "+1": "👍",
    "thumbsup": "👍",
    "-1": "👎",
    "thumbsdown": "👎",
    "heart": "❤",
    "fire": "🔥",
    "joy": "😂",
    "tada": "🎉",
}


def upgrade() -> None:
    for table in ("engagement_events", "feedback"):
        rows = sa.table(
            table, sa.column("platform", sa.String), sa.column("kind", sa.String), sa.column("value", sa.String)
        )
        for name, emoji in _NAMES.items():
            for old, new in ((name, emoji), (f"-{name}", f"-{emoji}")):
                op.execute(
                    rows.update()
                    .where(rows.c.platform == "slack", rows.c.kind == "reaction", rows.c.value == old)
                    .values(value=new)
                )


def downgrade() -> None:
    pass
