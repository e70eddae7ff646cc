"""Retention: stored data past its period is deleted a minute after start and then hourly, while Chorus runs.

What is kept for how long is in docs/data.md; each period is a setting ([store], [brainstorm]).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bots.commands.mydata import EXPORTS_DIR
from bots.reply import Publisher

if TYPE_CHECKING:
    from bots.app import Chorus

_log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
# The first sweep waits until startup (connecting, re-arming timers) is over.
FIRST_SWEEP_AFTER_S = 60.0
_SUMMARY = re.compile(r"brainstorm-(\d+)-summary\.md")


class Retention:
    """Deletes what has outlived its retention period: results, engagement, brainstorms and their summary files,
    /mydata exports and unanswered /forget questions."""

    def __init__(
        self,
        app: Chorus,
        *,
        interval_s: float = SWEEP_EVERY_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app = app
        self.interval_s = interval_s
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def attach(self) -> None:
        self.app.on_publisher(self._start)
        self.app.on_close(self.stop)

    async def _start(self, publisher: Publisher) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="chorus-retention")

    async def _loop(self) -> None:
        await asyncio.sleep(FIRST_SWEEP_AFTER_S)
        while True:
            try:
                await self.sweep()
            except Exception:
                _log.exception("the retention sweep failed; it runs again in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep(self) -> dict[str, int]:
        """One pass over every kind of stored data; returns how many of each were deleted."""
        now = self.clock()
        settings = self.app.settings
        store = self.app.store
        deleted = {
            "brainstorms": await store.purge_expired_brainstorms(now),
            "forget questions": await store.purge_expired_forget_requests(now),
        }
        if settings.store.retention_days:
            deleted["results"] = await store.purge_results_before(now - timedelta(days=settings.store.retention_days))
        if settings.store.engagement_days:
            cutoff = now - timedelta(days=settings.store.engagement_days)
            deleted["engagement"] = await store.purge_engagement_before(cutoff)
        deleted["summary files"] = await self._purge_summaries()
        deleted["exports"] = await asyncio.to_thread(
            _delete_older_than, settings.home_dir / EXPORTS_DIR, "*.json", settings.store.exports_hours * 3600
        )
        if any(deleted.values()):
            _log.info("retention: deleted %s", {what: n for what, n in deleted.items() if n})
        return deleted

    async def _purge_summaries(self) -> int:
        """Summary files whose session is gone (past `brainstorm.retention_days`, or purged while Chorus was off)."""
        directory = self.app.settings.home_dir / "brainstorms"
        if not await asyncio.to_thread(directory.is_dir):
            return 0
        count = 0
        for path in await asyncio.to_thread(lambda: sorted(directory.glob("brainstorm-*-summary.md"))):
            match = _SUMMARY.fullmatch(path.name)
            if match and await self.app.store.get_brainstorm(int(match.group(1))) is None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
                count += 1
        return count


def _delete_older_than(directory: Path, pattern: str, seconds: float) -> int:
    if not directory.is_dir():
        return 0
    cutoff = time.time() - seconds
    count = 0
    for path in directory.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                count += 1
    return count
