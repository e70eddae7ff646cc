"""Schedule management: `/drops enable`, pause/resume/disable and topics, and keeping exactly one APScheduler job
per enabled channel in step with the channel table (settings may change in any process).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from bots.drops import MAX_TOPICS, DropsOptions, StateChange
from bots.errors import UserError
from bots.events import Conversation, User
from bots.parsing import did_you_mean
from scheduler import jobs
from scheduler.core import DropsCore, schedule_of, settings_version
from scheduler.models import DropChannel
from scheduler.planner import Planner, quiet_hours
from scheduler.schedule import CADENCES, Schedule, build_schedule, check_new_schedule

_log = logging.getLogger(__name__)


def sync_url(async_url: str) -> str:
    """The store's async URL as the sync URL APScheduler's SQLAlchemyJobStore needs (same database)."""
    url = make_url(async_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("drops need a file or server database; an in-memory SQLite store cannot be shared")
        return url.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url.set(drivername=backend).render_as_string(hide_password=False)


class ScheduleManagement(DropsCore):
    """The channel settings and their jobs."""

    def _next_after_day(self, schedule: Schedule, auto_hour: int, after: datetime) -> datetime | None:
        """The first fire time on a later local day than `after` (one auto drop per day at most)."""
        local = after.astimezone(schedule.zone)
        start_of_next_day = datetime(local.year, local.month, local.day, tzinfo=schedule.zone) + timedelta(days=1)
        return schedule.trigger(auto_hour).get_next_fire_time(None, start_of_next_day)

    async def _sync_job(self, row: DropChannel, *, after_slot: datetime | None = None) -> None:
        """Create or replace the channel's job so exactly one exists, matching its settings."""
        if self.scheduler is None:
            return
        job_id = self._job_id(row.key)
        if not row.enabled or row.paused:
            with contextlib.suppress(Exception):
                self.scheduler.remove_job(job_id)
            return
        schedule = schedule_of(row)
        auto_hour = self._auto_hour(row)
        trigger = schedule.trigger(auto_hour)
        next_run = None
        if after_slot is not None and schedule.time == "auto" and not schedule.is_cron:
            next_run = self._next_after_day(schedule, auto_hour, after_slot)
        elif row.last_slot_at is not None and row.last_slot_at > self.now():
            # Slots up to last_slot_at are done (today's auto drop marks the rest of its day so): a job re-made by a
            # settings change must not fire again before then.
            next_run = trigger.get_next_fire_time(None, row.last_slot_at)
        kwargs: dict[str, Any] = {
            "id": job_id,
            "name": f"drops for {row.key}",
            "trigger": trigger,
            "kwargs": {"service": self.name, "channel_key": row.key, "version": settings_version(row)},
            "replace_existing": True,
        }
        if next_run is not None:
            kwargs["next_run_time"] = next_run
        self.scheduler.add_job(jobs.FIRE_DROP, **kwargs)

    async def reconcile(self) -> None:
        """Make the job store match the channel table (settings may change in any process)."""
        if self.scheduler is None:
            return
        async with self.store.session() as session:
            rows = list(await session.scalars(select(DropChannel)))
        wanted = {self._job_id(row.key): row for row in rows if row.enabled and not row.paused}
        try:
            scheduled = self.scheduler.get_jobs()
        except OperationalError as exc:
            if self.job_store is None:
                raise
            # The job store's table went missing (dropped, a restored backup without it): make it again; the loop
            # below schedules every channel afresh from the channel table.
            _log.warning("the drops job store could not be read (%s); recreating its table", exc)
            self.job_store.jobs_t.create(self.job_store.engine, checkfirst=True)
            scheduled = self.scheduler.get_jobs()
        for job in scheduled:
            if job.id.startswith("drop:") and job.id not in wanted:
                self.scheduler.remove_job(job.id)
        for job_id, row in wanted.items():
            try:
                job = self.scheduler.get_job(job_id)
                if job is None or job.kwargs.get("version") != settings_version(row):
                    await self._sync_job(row)
                self._unschedulable.pop(row.key, None)
            except Exception as exc:
                if self._unschedulable.get(row.key) == settings_version(row):
                    continue  # told once for these settings; every tick would say it again
                self._unschedulable[row.key] = settings_version(row)
                _log.exception("drops for %s could not be scheduled; the other channels still are", row.key)
                await self.alert(row, f"Drops for {row.channel} cannot be scheduled: {str(exc) or type(exc).__name__}")

    async def next_run(self, row: DropChannel) -> datetime | None:
        """When the next drop is due, as shown to people: a cron's times inside the quiet hours are skipped there,
        so they are skipped here too."""
        if not row.enabled or row.paused:
            return None
        schedule = schedule_of(row)
        trigger = schedule.trigger(self._auto_hour(row))
        at: datetime | None = None
        if self.scheduler is not None:
            try:
                job = self.scheduler.get_job(self._job_id(row.key))
            except OperationalError:  # the job store cannot be read right now; the tick repairs it
                job = None
            if job is not None:
                at = job.next_run_time
        if at is None:
            at = trigger.get_next_fire_time(None, self.now())
        quiet = quiet_hours(schedule.quiet) if schedule.is_cron else frozenset()
        for _ in range(24 * 366):  # a cron fires at most hourly, and check_new_schedule left it an hour outside quiet
            if at is None or at.astimezone(schedule.zone).hour not in quiet:
                return at
            at = trigger.get_next_fire_time(at, at + timedelta(minutes=1))
        return None  # a cron stored before that check, firing only in quiet hours: no drop will post

    async def enable(self, conversation: Conversation, user: User, options: DropsOptions) -> str:
        await self.ensure_tables()
        row = await self._channel(conversation.key)
        before = (row.tz, row.auto_hour) if row is not None else None
        known = self._all_kinds()
        kept = [kind for kind in row.kinds if kind in known] if row else []
        kinds = list(options.kinds) if options.kinds else (kept or list(self.settings.default_kinds))
        for kind in kinds:
            if kind not in known:
                raise UserError(f"Unknown kind {kind!r}.{did_you_mean(kind, known)} Kinds: {', '.join(known)}.")
        cadence = options.cadence or (row.cadence if row else "daily")
        time = options.time or (row.time if row else "auto")
        is_cron = cadence.lower() not in CADENCES
        if options.cadence and options.time is None and is_cron:
            time = "auto"  # a cron carries its own time
        if options.time is not None and is_cron:
            stored = "" if options.cadence else f' (this channel\'s cadence is "{cadence}"; --cadence daily changes it)'
            raise UserError(
                f'--time does not combine with a cron cadence{stored}: put the hour in the cron, e.g. "30 9 * * *".'
            )
        tz = options.tz or (row.tz if row else self.settings.default_tz)
        quiet = options.quiet if options.quiet is not None else (row.quiet if row else "")
        schedule = build_schedule(cadence, time, tz, quiet)
        check_new_schedule(
            schedule, cadence_changed=options.cadence is not None, quiet_changed=options.quiet is not None
        )
        now = self.now()
        values: dict[str, Any] = {
            "enabled": True,
            "paused": False,
            "pause_reason": "",
            "kinds": kinds,
            "cadence": schedule.cadence,
            "time": schedule.time,
            "tz": schedule.tz,
            "quiet": schedule.quiet_text,
            "updated_at": now,
            "enabled_by": user.name,
        }
        updated = row is not None and row.enabled
        if row is None:
            planner = Planner(
                kinds,
                self.chorus.settings.tones,
                list(self.settings.topics),
                seed=zlib.crc32(conversation.key.encode()),
                default_hour=self.settings.default_hour,
            )
            try:
                async with self.store.session() as session, session.begin():
                    session.add(
                        DropChannel(
                            key=conversation.key,
                            platform=conversation.platform,
                            workspace=conversation.workspace,
                            channel=conversation.channel,
                            thread=conversation.thread,
                            topics=list(self.settings.topics),
                            mined={},
                            planner=planner.to_state(),
                            created_at=now,
                            last_slot_at=now,
                            **values,
                        )
                    )
            except IntegrityError:  # enabled at the same moment elsewhere: update that row instead
                await self._save_channel(conversation.key, **values)
        else:
            await self._save_channel(conversation.key, last_slot_at=max(row.last_slot_at or now, now), **values)
        row = await self._channel(conversation.key)
        assert row is not None
        if schedule.time == "auto" and not schedule.is_cron:
            hour = await self._auto_hour_after_enable(row, schedule, before, now)
            if hour != row.auto_hour:
                await self._save_channel(row.key, auto_hour=hour)
                row = await self._channel(row.key) or row
        await self._sync_job(row)
        next_at = await self.next_run(row)
        verb = "Updated drops" if updated else "Drops are on"
        when = f" Next: {self._fmt(next_at, schedule)}." if next_at else ""
        return (
            f"{verb} here: {schedule.describe()}. Kinds: {', '.join(kinds)}.{when} /drops status shows what they learn."
        )

    async def _auto_hour_after_enable(
        self, row: DropChannel, schedule: Schedule, before: tuple[str, int | None] | None, now: datetime
    ) -> int | None:
        """The local hour of the next auto drop once the settings changed. Activity counted before drops were
        enabled already says when the channel is busy; a new zone keeps the drop at the same moment of the day
        (not the same hour number); new quiet hours move it out of them."""
        hour = row.auto_hour
        planner = await self._planner(row, schedule)
        old_tz, old_hour = before if before is not None else (schedule.tz, None)
        if hour is None or old_tz != schedule.tz:
            hour = planner.peak_hour()
            if hour is None and old_hour is not None:
                with contextlib.suppress(Exception):  # an old zone that no longer exists: keep the hour number
                    moment = now.astimezone(ZoneInfo(old_tz)).replace(hour=old_hour, minute=0, second=0, microsecond=0)
                    hour = moment.astimezone(schedule.zone).hour
                hour = old_hour if hour is None else hour
        if self._or_default(hour) in quiet_hours(schedule.quiet):
            hour = planner.choose_hour(now.astimezone(schedule.zone))[0]
        return hour

    def _or_default(self, hour: int | None) -> int:
        return hour if hour is not None else self.settings.default_hour

    async def change_state(self, conversation: Conversation, change: StateChange) -> str:
        row = await self._require(conversation)
        now = self.now()
        if change == "pause":
            await self._save_channel(row.key, paused=True, pause_reason="paused by a moderator", updated_at=now)
            text = "Drops are paused here. /drops resume starts them again."
        elif change == "resume":
            # Slots that passed while paused are not "missed": start counting from now (or later, when today's auto
            # drop was already posted).
            resumed_from = max(row.last_slot_at or now, now)
            await self._save_channel(row.key, paused=False, pause_reason="", updated_at=now, last_slot_at=resumed_from)
            text = "Drops are back on."
        else:
            await self._save_channel(row.key, enabled=False, paused=False, updated_at=now)
            text = "Drops are off here. What they learned is kept if you enable them again."
        updated = await self._channel(row.key)
        assert updated is not None
        await self._sync_job(updated)
        if change == "resume":
            next_at = await self.next_run(updated)
            if next_at:
                text += f" Next: {self._fmt(next_at, schedule_of(updated))}."
        return text

    async def topics(self, conversation: Conversation, action: str, topics: tuple[str, ...]) -> str:
        row = await self._require(conversation)
        current = list(row.topics)
        if action == "add":
            known = {c.lower() for c in current}
            new = list(dict.fromkeys(t for t in topics if t.lower() not in known))
            if len(current) + len(new) > MAX_TOPICS:
                raise UserError(
                    f"A channel can have at most {MAX_TOPICS} drop topics; this one has {len(current)}, and "
                    f"{len(new)} more would make {len(current) + len(new)}. Remove some first with /drops topics "
                    "remove <topics>."
                )
            current += new
            await self._save_channel(row.key, topics=current, updated_at=self.now())
        elif action == "remove":
            missing = [t for t in topics if t.lower() not in {c.lower() for c in current}]
            if missing:
                raise UserError(f"Not a topic here: {', '.join(missing)}. Topics: {', '.join(current)}.")
            left = [c for c in current if c.lower() not in {t.lower() for t in topics}]
            if not left:
                raise UserError("Drops need at least one topic; add another before removing the last.")
            await self._save_channel(row.key, topics=left, updated_at=self.now())
            current = left
        elif action == "learn":
            on = topics[0].lower() == "on"
            await self._save_channel(row.key, learn_topics=on, mined={} if not on else row.mined)
            (self._learning.add if on else self._learning.discard)(row.key)
            if on:
                return (
                    "Topic learning is on: drops will also use themes from this channel's messages "
                    "(word counts only, no messages are stored). /drops topics learn off stops it."
                )
            return "Topic learning is off; learned themes were forgotten."
        row = await self._channel(row.key) or row
        learned = self._topics(row)[len(row.topics) :]
        extra = f" Learned from the channel: {', '.join(learned)}." if learned else ""
        return f"Topics: {', '.join(current)}.{extra}"
