"""The drops service: APScheduler (SQLAlchemyJobStore on the store's database) plus the planner, per channel.

One mixin per concern, joined here: schedule management (scheduler/scheduling.py), the run lifecycle and
exactly-once delivery (scheduler/runs.py), engagement settlement (scheduler/engagement.py) and status and stats
(scheduler/reporting.py), over shared state (scheduler/core.py). This module is the leadership part: only the leader
(a Postgres advisory lock; always the one process on SQLite) runs the scheduler and its housekeeping tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete, select

from bots.actions import RATE_DOWN, RATE_UP
from bots.events import Conversation
from bots.reply import Publisher
from scheduler import jobs
from scheduler.core import DROPS_USER, KIND_LABELS, DropsCore
from scheduler.engagement import EngagementSettlement
from scheduler.leader import Leadership
from scheduler.models import RETRYING, DropChannel, DropRun
from scheduler.reporting import StatusReporting
from scheduler.retention import Pruned, prune_rows, prune_stats_images
from scheduler.runs import RunLifecycle, _unavailable
from scheduler.scheduling import ScheduleManagement, sync_url

_log = logging.getLogger(__name__)

__all__ = ["DROPS_USER", "KIND_LABELS", "RATE_DOWN", "RATE_UP", "DropsCore", "DropsService", "_unavailable", "sync_url"]


class DropsService(ScheduleManagement, RunLifecycle, EngagementSettlement, StatusReporting):
    """Implements bots.drops.DropsControl: the parts joined, plus leadership and the housekeeping tick."""

    def attach(self) -> None:
        """Install this service on its Chorus as the drops plug-in (tests inject a clock this way)."""
        from scheduler.plugin import DropsPlugin

        self.chorus.install(DropsPlugin(self))

    async def start(self, publisher: Publisher) -> None:
        """Called once the adapter can post: take part in leader election; the leader runs the scheduler."""
        self.publisher = publisher
        if self._started:  # called again (a reconnect, a hook registered twice): one scheduler, the newest publisher
            return
        self._started = True
        await self.ensure_tables()
        jobs.register(self)
        self.leadership = Leadership(
            self.store.engine,
            self._become_leader,
            self._stop_leading,
            name=f"drops:{self.name}",
            poll_s=self.settings.leader_poll_s,
        )
        await self.leadership.start()

    @property
    def is_leader(self) -> bool:
        return self.leadership is not None and self.leadership.is_leader

    async def _become_leader(self) -> None:
        self.job_store = SQLAlchemyJobStore(url=sync_url(self.store.url), tablename="apscheduler_jobs")
        scheduler = AsyncIOScheduler(
            jobstores={"default": self.job_store},
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": self.settings.misfire_grace_s,
                "max_instances": 1,
            },
            timezone=UTC,
        )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        await self._guarded("recording drops posted while the database was busy", self.record_unrecorded)
        await self.resolve_interrupted()
        # With an injected clock the wall clock means nothing: a job due by the fake clock's calendar may be long
        # past (or far off) by the real one, and APScheduler would fire or report it missed on its own.
        scheduler.start(paused=not self.fires_on_wall_clock)
        self.scheduler = scheduler
        await self.reconcile()
        self._tick_task = asyncio.create_task(self._tick_loop(), name="drops-tick")

    async def _stop_leading(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self.scheduler is not None:
            with contextlib.suppress(Exception):
                self.scheduler.shutdown(wait=False)
            self.scheduler = None

    async def stop(self) -> None:
        try:
            await self.flush_activity()
        except Exception:
            _log.exception("could not save channel activity at shutdown")
        if self.leadership is not None:
            await self.leadership.stop()
        for task in list(self._background):
            task.cancel()
        jobs.unregister(self)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("drops tick failed")

    async def tick(self) -> None:
        """Leader housekeeping: save activity, retry due sends, settle engagement, follow settings changes, prune.
        Each step and each run is isolated: one that fails is logged (a run is failed with a note) and the rest
        still happens."""
        await self._guarded("saving channel activity", self.flush_activity)
        await self._guarded("recording drops posted while the database was busy", self.record_unrecorded)
        await self._guarded("retrying slots that fired while the database was busy", self.retry_slots)
        now = self.now()
        due: dict[str, list[int]] = {}
        try:
            async with self.store.session() as session:
                rows = await session.execute(
                    select(DropRun.channel_key, DropRun.id)
                    .where(DropRun.status == RETRYING, DropRun.next_attempt_at <= now)
                    .order_by(DropRun.id)
                )
                for channel_key, run_id in rows:
                    due.setdefault(channel_key, []).append(run_id)
        except Exception:
            _log.exception("drops tick could not list the runs due for a retry")
        # One task per channel (its runs in order, so a channel paused by its first run skips the rest); channels
        # side by side. A send still stuck after `retry_wait_s` goes on in the background and the tick moves on.
        tasks = []
        for channel_key, run_ids in due.items():
            if channel_key in self._retrying_channels:
                continue
            self._retrying_channels.add(channel_key)
            task = asyncio.ensure_future(self._retry_channel(channel_key, run_ids))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.retry_wait_s or self.settings.tick_s)
        await self._guarded("settling engagement", self.settle_due)
        await self._guarded("reconciling schedules", self.reconcile)
        await self._guarded("pruning old drops data", self.prune_if_due)

    async def _retry_channel(self, channel_key: str, run_ids: list[int]) -> None:
        try:
            for run_id in run_ids:
                try:
                    await self.deliver(run_id)
                except Exception as exc:
                    await self._fail_run(run_id, exc)
        finally:
            self._retrying_channels.discard(channel_key)

    async def _guarded(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        try:
            await step()
        except Exception:
            _log.exception("drops tick: %s failed", what)

    async def prune_if_due(self, every: timedelta = timedelta(hours=1)) -> Pruned | None:
        """Apply the retention settings at most once per `every` (the tick runs far more often)."""
        now = self.now()
        if self._pruned_at is not None and now - self._pruned_at < every:
            return None
        self._pruned_at = now
        rows = await prune_rows(self.store.engine, self.settings, now)
        images = await asyncio.to_thread(prune_stats_images, self._stats_dir(), self.settings.keep_stats_images_h)
        pruned = dataclasses.replace(rows, stats_images=images)
        if pruned != Pruned():
            _log.info("drops retention deleted %s", pruned)
        return pruned

    async def forget_channel(self, conversation: Conversation) -> None:
        """Remove a channel's drop settings, runs and activity (used by tests and a future /forget for channels)."""
        async with self.store.session() as session, session.begin():
            await session.execute(delete(DropRun).where(DropRun.channel_key == conversation.key))
            await session.execute(delete(DropChannel).where(DropChannel.key == conversation.key))
