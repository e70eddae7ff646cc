"""Which Slack events were already handled, in the Chorus database, so that a retry landing on another HTTP-mode
worker behind the load balancer still never starts a second generation."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

_log = logging.getLogger(__name__)

KEEP = timedelta(hours=2)  # Slack retries for about an hour at most
PRUNE_EVERY = 500  # inserts between deletions of old rows

_metadata = MetaData()
slack_events = Table(
    "slack_events",
    _metadata,
    Column("event_id", String(64), primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
)


class EventLedger:
    """`first(event_id)` is True for exactly one caller across every process sharing the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._inserts = 0

    async def create(self) -> None:
        """Nothing to do: the table comes with the store's schema revisions (bots/migrations), made at its start."""

    async def first(self, event_id: str) -> bool:
        now = datetime.now(UTC)
        try:
            async with self.engine.begin() as connection:
                await connection.execute(insert(slack_events).values(event_id=event_id, seen_at=now))
        except IntegrityError:
            return False
        self._inserts += 1
        if self._inserts % PRUNE_EVERY == 0:
            async with self.engine.begin() as connection:
                await connection.execute(delete(slack_events).where(slack_events.c.seen_at < now - KEEP))
        return True
