"""Retention for what only the drops feature stores: finished drop runs and /stats images.

Runs older than `drops.keep_runs_days` and /stats images older than `drops.keep_stats_images_h` are deleted. What a
channel learned lives in its planner state, so deleting old runs forgets no taste; a run still waiting for its
engagement window is never deleted. Engagement events and feedback belong to the store and follow its retention
(`store.engagement_days`, `store.retention_days`; bots/retention.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, or_
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import DropsSection
from scheduler.models import FINAL, POSTED, DropRun

_log = logging.getLogger(__name__)

STATS_PATTERN = "stats-*.png"


@dataclass(frozen=True)
class Pruned:
    """How many rows and files one pass deleted."""

    runs: int = 0
    stats_images: int = 0


async def prune_rows(engine: AsyncEngine, settings: DropsSection, now: datetime) -> Pruned:
    """Delete finished drop runs older than `keep_runs_days` (0 keeps them)."""
    if not settings.keep_runs_days:
        return Pruned()
    cutoff = now - timedelta(days=settings.keep_runs_days)
    finished = or_(DropRun.settled.is_(True), DropRun.status != POSTED)
    async with engine.begin() as connection:
        done = await connection.execute(
            delete(DropRun).where(and_(DropRun.created_at < cutoff, DropRun.status.in_(FINAL), finished))
        )
    return Pruned(runs=done.rowcount or 0)


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
