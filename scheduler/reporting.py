"""Status and stats: `/drops status` (what is scheduled, what was learned, recent runs and their notes) and `/stats`
(the channel's activity and engagement as a PNG, with a text summary).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

from sqlalchemy import or_, select

from bots.drops import StatsImage
from bots.events import Conversation
from scheduler.core import DropsCore, schedule_of
from scheduler.models import (
    FAILED,
    MISSED,
    POSTED,
    QUIET_NOTE,
    RETRYING,
    SKIPPED,
    UNCONFIRMED,
    DropRun,
)
from scheduler.retention import prune_stats_images

_log = logging.getLogger(__name__)


class StatusReporting(DropsCore):
    """What /drops status and /stats show."""

    async def status(self, conversation: Conversation) -> str:
        await self.ensure_tables()
        row = await self._channel(conversation.key)
        if row is None or not row.enabled:
            return "Drops are off here. Moderators can start them with /drops enable (see /help)."
        schedule = schedule_of(row)
        planner = await self._planner(row, schedule)
        lines = [f"Schedule: {schedule.describe()} · kinds: {', '.join(row.kinds)}"]
        if row.paused:
            lines.append(f"Paused: {(row.pause_reason or 'by a moderator').rstrip('.')}. /drops resume restarts.")
        else:
            next_at = await self.next_run(row)
            lines.append(f"Next drop: {self._fmt(next_at, schedule) if next_at else 'not scheduled'}")
        alert_failure = self._alert_failures.get(row.platform)
        if alert_failure:
            lines.append(f"Admin alerts: {alert_failure}; they go to the log only")
        if schedule.time == "auto" and not schedule.is_cron:
            peak = planner.peak_hour()
            if peak is not None:
                lines.append(f"Timing: busiest hour {peak:02d}:00 {schedule.tz} (from the channel's activity)")
            elif planner.observed:
                lines.append("Timing: no activity counted yet, so trying hours and learning from engagement")
            else:
                lines.append(f"Timing: {self._auto_hour(row):02d}:00 until the channel's activity is known")
        learning = "on" if row.learn_topics else "off (opt in: /drops topics learn on)"
        lines.append(f"Topics: {', '.join(self._topics(row))} · learning from messages: {learning}")
        if planner.observed:
            learned = planner.learned(2)
            best = " · ".join(
                f"{group}s {', '.join(name for name, _ in items)}" for group, items in learned.items() if items
            )
            if best:
                lines.append(f"Learned from {planner.observed} drop(s): does best with {best}")
            elif not planner.engaged:
                lines.append(f"Learned from {planner.observed} drop(s): none got any engagement yet, so no favourite")
            else:
                lines.append(f"Learned from {planner.observed} drop(s): no clear favourite yet")
        else:
            lines.append("Learned: nothing yet (engagement counts for 24 h after each drop)")
        if planner.backoff:
            lines.append(f"Frequency: backing off, posting every {planner.backoff + 1} slots while engagement is low")
        async with self.store.session() as session:
            runs = list(
                await session.scalars(
                    select(DropRun).where(DropRun.channel_key == row.key).order_by(DropRun.id.desc()).limit(40)
                )
            )
        missed = [run for run in runs if run.status == MISSED]
        if missed:
            latest = max(run.scheduled_for for run in missed)
            lines.append(f"Missed while offline: {len(missed)} (latest {self._fmt(latest, schedule)}), not posted late")
        unconfirmed = [run for run in runs if run.status == UNCONFIRMED]
        if unconfirmed:
            lines.append(
                f"Unconfirmed: {len(unconfirmed)} drop(s) were interrupted mid-send or got no answer; "
                "they may have been posted, so they were not re-sent"
            )
        quiet = [run for run in runs if run.status == SKIPPED and run.note == QUIET_NOTE]
        if quiet:  # an hourly cron skips many slots: one line, so they do not push the drops out of "Recent"
            latest = max(run.scheduled_for for run in quiet)
            lines.append(f"Skipped in quiet hours: {len(quiet)} (latest {self._fmt(latest, schedule)})")
        shown = [run for run in runs if run.status != MISSED and run not in quiet][:5]
        if shown:
            lines.append("Recent:")
        for run in shown:
            plan = run.plan or {}
            what = f"{plan.get('kind', '?')} · {plan.get('tone', '?')} · {plan.get('topic', '?')}" if plan else "-"
            when = self._fmt(run.scheduled_for, schedule)
            result = run.status
            if run.reward is not None:
                result += f", engagement {run.reward:g}"
            elif run.status == POSTED:
                result += ", engagement still counting"
            if run.note and run.status in (FAILED, RETRYING, SKIPPED, POSTED):
                result += f" ({run.note})"
            lines.append(f"  {when}  {what}: {result}")
        return "\n".join(lines)

    async def stats(self, conversation: Conversation) -> StatsImage:
        from scheduler.stats import StatsData, render_stats

        await self.ensure_tables()
        await self.flush_activity()
        row = await self._channel(conversation.key)
        tz = row.tz if row else self.settings.default_tz
        matrix = await self.activity_matrix(conversation, tz)
        since = self.now() - timedelta(days=30)
        async with self.store.session() as session:
            runs = list(
                await session.scalars(
                    select(DropRun)
                    .where(
                        DropRun.channel_key == conversation.key,
                        DropRun.scheduled_for >= since,
                        or_(DropRun.status == POSTED, DropRun.status == FAILED),
                    )
                    .order_by(DropRun.scheduled_for)
                )
            )
        data = StatsData(
            channel=conversation.channel,
            tz=tz,
            activity=matrix,
            drops=[
                (
                    run.scheduled_for,
                    (run.plan or {}).get("kind", "?"),
                    (run.plan or {}).get("tone", "?"),
                    run.reward,
                    run.status,
                )
                for run in runs
            ],
            start=since,
            end=self.now(),
        )
        directory = self._stats_dir()
        stamp = self.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", conversation.channel)[:40] or "channel"
        path = await asyncio.to_thread(render_stats, data, directory / f"stats-{slug}-{stamp}.png")
        await asyncio.to_thread(prune_stats_images, directory, self.settings.keep_stats_images_h, keep=path)
        return StatsImage(summary=data.summary(), path=path)
