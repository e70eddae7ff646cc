"""Retention: what the drops feature stores does not grow for ever.

Finished drop runs, engagement events and feedback rows older than the configured number of days are deleted, and
so are /stats images older than the configured hours. What a channel learned lives in its planner state, so deleting
old runs forgets no taste. A run still waiting for its engagement window is never deleted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, or_
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.store import EngagementEvent, Feedback
from config.settings import DropsSection
from scheduler.models import FINAL, POSTED, DropRun

_log = logging.getLogger(__name__)

STATS_PATTERN = "stats-*.png"


@dataclass(frozen=True)
class Pruned:
    """How many rows and files one pass deleted."""

    runs: int = 0
    engagement_events: int = 0
    feedback: int = 0
    stats_images: int = 0


async def prune_rows(engine: AsyncEngine, settings: DropsSection, now: datetime) -> Pruned:
    """Delete drop runs, engagement events and feedback older than their retention (0 days keeps them)."""
    counts = {"runs": 0, "engagement_events": 0, "feedback": 0}
    async with engine.begin() as connection:
        if settings.keep_runs_days:
            cutoff = now - timedelta(days=settings.keep_runs_days)
            finished = or_(DropRun.settled.is_(True), DropRun.status != POSTED)
            done = await connection.execute(
                delete(DropRun).where(and_(DropRun.created_at < cutoff, DropRun.status.in_(FINAL), finished))
            )
            counts["runs"] = done.rowcount or 0
        if settings.keep_engagement_days:
            cutoff = now - timedelta(days=settings.keep_engagement_days)
            done = await connection.execute(delete(EngagementEvent).where(EngagementEvent.created_at < cutoff))
            counts["engagement_events"] = done.rowcount or 0
        if settings.keep_feedback_days:
            cutoff = now - timedelta(days=settings.keep_feedback_days)
            done = await connection.execute(delete(Feedback).where(Feedback.created_at < cutoff))
            counts["feedback"] = done.rowcount or 0
    return Pruned(**counts)


def prune_stats_images(directory: Path, keep_hours: float, *, keep: Path | None = None) -> int:
    """Delete /stats PNGs in `directory` drawn more than `keep_hours` ago (0 keeps them); `keep` is never deleted."""
    if not keep_hours or not directory.is_dir():
        return 0
    cutoff = time.time() - keep_hours * 3600
    deleted = 0
    for path in directory.glob(STATS_PATTERN):
        try:
            if path != keep and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except OSError as exc:  # removed meanwhile, or not ours to delete
            _log.debug("could not prune %s: %s", path, exc)
    return deleted
