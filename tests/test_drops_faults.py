"""Drops under real-world faults: a channel paused or disabled while a retry is pending, a channel Chorus lost
with several runs pending, a Slack workspace that removed the app, a post whose answer never came, a platform
that asks to wait (Retry-After), and retry settings at the edge of what the config allows."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from drops_support import ALICE, BOB, Clock, Drops, Forbidden, RecordingPublisher, drops_settings, start_drops
from fake_discord import CHANNEL_ID
from sqlalchemy.exc import OperationalError
from test_drops_platforms import ENABLE, SLACK_ADMIN, channel_of, discord_side, discord_text, slack_side

from adapters.terminal.translate import CONVERSATION
from bots.drops import DropsOptions
from bots.events import Activity, Conversation
from bots.reply import Reply
from scheduler.service import _unavailable
from support import wait_until


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


class Busy(Exception):
    """A platform's "too many requests" that says how long to wait, as the adapters raise it."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited; retry in {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


def sends(drops: Drops) -> int:
    """Tries to post into the drops channel (every publish, less the alerts that reached the admin channel)."""
    return drops.publisher.attempts - len(drops.publisher.to("mods"))


@pytest.mark.parametrize("change", ["pause", "disable"])
async def test_a_retry_due_after_drops_were_paused_or_disabled_is_not_posted(drops: Drops, change: str) -> None:
    await drops.say("/drops enable")
    drops.publisher.failures = [ConnectionError("502 Bad Gateway")]
    assert "retrying in 30 s" in await drops.say("/drops now")
    await drops.say(f"/drops {change}")
    drops.clock.advance(seconds=31)
    await drops.service.tick()
    # Before: the tick sent the pending retry into a channel a moderator had just paused or switched off.
    assert drops.publisher.posts == [] and drops.publisher.attempts == 1
    [run] = await drops.runs()
    assert run.status == "skipped" and f"drops were {change}d" in run.note
    drops.clock.advance(hours=2)
    await drops.service.tick()
    assert drops.publisher.attempts == 1


async def test_a_channel_lost_with_several_runs_pending_is_paused_and_told_once(drops: Drops) -> None:
    await drops.say("/drops enable")
    drops.publisher.failures = [ConnectionError("503"), ConnectionError("503")]
    await drops.say("/drops now")
    await drops.say("/drops now")
    assert [run.status for run in await drops.runs()] == ["retrying", "retrying"]
    drops.publisher.failures = [Forbidden("403 Forbidden: Missing Access")]
    drops.clock.advance(seconds=31)
    await drops.service.tick()
    # Before: the second pending run was still sent into the channel just paused (refused again in real life,
    # with a second alert).
    assert sends(drops) == 3 and drops.publisher.to("terminal") == []
    [alert] = drops.publisher.to("mods")
    assert "paused" in alert.parts[0]
    assert sorted(run.status for run in await drops.runs()) == ["failed", "skipped"]
    status = await drops.say("/drops status")
    assert "Paused: Chorus can no longer post here" in status
    # Resumed once the permission is fixed: drops post again.
    assert "Drops are back on" in await drops.say("/drops resume")
    assert (await drops.say("/drops now")).startswith("Posted a ")
    assert len(drops.jobs()) == 1


async def test_a_post_that_got_no_answer_is_not_sent_again(drops: Drops) -> None:
    await drops.say("/drops enable")
    drops.publisher.failures = [TimeoutError()]
    text = await drops.say("/drops now")
    # Before: retried 30 s later, so a post that had reached the channel before the answer was lost appeared twice.
    assert "may have been posted" in text
    for _ in range(3):
        drops.clock.advance(minutes=5)
        await drops.service.tick()
    assert sends(drops) == 1
    [run] = await drops.runs()
    assert run.status == "unconfirmed"
    [alert] = drops.publisher.to("mods")
    assert "may have been posted" in alert.parts[0]
    assert "Unconfirmed: 1 drop(s)" in await drops.say("/drops status")


async def test_a_retry_waits_as_long_as_the_platform_asked(drops: Drops) -> None:
    await drops.say("/drops enable")
    drops.publisher.failures = [Busy(300)]
    # Before: "retrying in 30 s", and the retry 30 s later was refused again (Retry-After 300).
    assert "retrying in 300 s" in await drops.say("/drops now")
    drops.clock.advance(seconds=31)
    await drops.service.tick()
    assert drops.publisher.attempts == 1
    drops.clock.advance(seconds=270)
    await drops.service.tick()
    [run] = await drops.runs()
    assert run.status == "posted" and drops.publisher.attempts == 2


async def test_a_huge_retry_base_still_schedules_the_retry(tmp_path: Path) -> None:
    drops = await start_drops(drops_settings(tmp_path, CHORUS_DROPS__RETRY_BASE_S="1e12"), Clock(datetime.now(UTC)))
    try:
        await drops.say("/drops enable")
        drops.publisher.failures = [ConnectionError("502 Bad Gateway")]
        await drops.say("/drops now")
        # Before: the backoff overflowed, the error escaped and the run stayed "posting" for good (never retried).
        [run] = await drops.runs()
        assert run.status == "retrying" and "retrying in 21600 s" in run.note
    finally:
        await drops.bot.chorus.close()


@pytest.mark.parametrize("error", ["account_inactive", "token_revoked", "invalid_auth", "missing_scope"])
async def test_a_slack_workspace_that_removed_the_app_pauses_its_drops(tmp_path: Path, error: str) -> None:
    side = await slack_side(tmp_path, Clock(datetime.now(UTC).replace(microsecond=0)))
    try:
        await side.command("drops", ENABLE, moderator=True)
        side.extra["fake"].fail("chat.postMessage", error=error)
        text, _ = await side.command("drops", "now", moderator=True)
        # Before: "retrying in 30 s", four tries per slot and a "failed 4 times" alert for every slot, for ever.
        assert "can no longer post here" in text and error in text
        assert side.service.scheduler.get_jobs() == []  # type: ignore[union-attr]
        for _ in range(3):
            side.clock.advance(hours=1)
            await side.service.tick()
        assert len(side.posts(channel_of(side))) == 1
        assert len(side.posts(SLACK_ADMIN)) == 1
    finally:
        await side.stop()


async def test_slack_rate_limits_past_patience_carry_the_wait_to_the_retry() -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_slack_response import AsyncSlackResponse

    from adapters.slack.outbound import RateLimited

    response = AsyncSlackResponse(
        client=None,  # type: ignore[arg-type]
        http_verb="POST",
        api_url="https://slack.com/api/chat.postMessage",
        req_args={},
        data={"ok": False, "error": "ratelimited"},
        headers={"Retry-After": "42"},
        status_code=429,
    )
    limited = RateLimited("chat.postMessage", SlackApiError("ratelimited", response))
    assert limited.retry_after_s == 42
    assert not _unavailable(limited)


def _locked(statement: str) -> OperationalError:
    return OperationalError(statement, {}, Exception("database is locked"))


async def test_a_drop_posted_while_the_database_is_locked_is_recorded_at_the_next_tick(drops: Drops) -> None:
    await drops.say("/drops enable")
    set_run = drops.service._set_run
    locked: list[int] = []

    async def locked_once(run_id: int, **values: Any) -> None:
        if values.get("status") == "posted" and len(locked) < 2:
            locked.append(run_id)
            raise _locked("UPDATE drop_runs")
        await set_run(run_id, **values)

    drops.service._set_run = locked_once  # type: ignore[method-assign]
    await drops.service.run_slot(CONVERSATION.key)
    assert "Posted a " in await drops.say("/drops now"), "it did reach the channel"
    assert len(drops.publisher.to("terminal")) == 2
    await drops.service.tick()
    # Before: both runs stayed "posting" for good (shown as unconfirmed after a restart), their message ids lost, so
    # their engagement never counted.
    runs = await drops.runs()
    assert [(run.status, run.message_ref) for run in runs] == [("posted", "msg-1"), ("posted", "msg-2")]
    await drops.service.run_slot(CONVERSATION.key)
    assert len(drops.publisher.to("terminal")) == 2


@pytest.mark.parametrize("late", [False, True])
async def test_a_slot_that_fired_while_the_database_was_locked_is_handled_at_the_next_tick(
    tmp_path: Path, late: bool
) -> None:
    clock = Clock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 09:00")
        claim = drops.service._claim
        calls: list[str] = []

        async def locked_once(*args: Any, **kwargs: Any) -> int | None:
            calls.append(args[1])
            if len(calls) == 1:
                raise _locked("INSERT INTO drop_runs")
            return await claim(*args, **kwargs)

        drops.service._claim = locked_once  # type: ignore[method-assign]
        clock.current = datetime(2026, 12, 1, 9, 0, 2, tzinfo=UTC)
        with contextlib.suppress(OperationalError):  # before: it escaped to APScheduler, which only logs it
            await drops.service.run_slot(CONVERSATION.key)
        assert drops.publisher.posts == []
        clock.advance(hours=2 if late else 0.01)
        await drops.service.tick()
        runs = await drops.runs()
        # Before: nothing; the slot was lost without a trace (and counted as "missed while offline" a day later).
        assert [run.scheduled_for for run in runs] == [datetime(2026, 12, 1, 9, tzinfo=UTC)]
        assert runs[0].status == ("missed" if late else "posted")
        assert len(drops.publisher.to("terminal")) == (0 if late else 1)
        await drops.service.tick()
        assert len(await drops.runs()) == 1
    finally:
        await drops.bot.chorus.close()


async def test_a_job_store_table_that_went_missing_is_recreated_and_its_jobs_rescheduled(drops: Drops) -> None:
    await drops.say("/drops enable --time 09:00")
    database = drops.bot.store.engine.url.database
    assert database is not None
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("DROP TABLE apscheduler_jobs")
        connection.commit()
    # Before: every tick's reconcile failed on "no such table" and no drop fired again until a restart.
    await drops.service.tick()
    [job] = drops.jobs()
    assert job.next_run_time is not None
    assert "Next drop: " in await drops.say("/drops status")


async def test_a_0230_drop_on_the_spring_forward_day_posts_once_at_0330(tmp_path: Path) -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: 02:30 never happens that day.
    clock = Clock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 02:30 --tz Europe/Berlin")
        [job] = drops.jobs()
        next_fire = job.trigger.get_next_fire_time(None, clock.current)
        # 03:30 CEST, the first moment after the gap (through UTC: a time in the gap never compares equal)
        assert next_fire.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
        clock.current = datetime(2026, 3, 29, 1, 30, 5, tzinfo=UTC)
        await drops.service.run_slot(CONVERSATION.key)
        await drops.service.run_slot(CONVERSATION.key)  # the job fires again (another process, a misfire)
        # Before: the run was stored as the 02:30 slot, the second firing made a "03:30" one, and both posted.
        [run] = await drops.runs()
        assert run.status == "posted" and len(drops.publisher.posts) == 1
        assert run.run_key.endswith("@2026-03-29T03:30")
        assert (run.plan or {})["hour"] == 3, "the planner learns the hour it really posted at"
        assert "Missed" not in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


async def test_a_slot_that_fires_again_minutes_later_posts_once(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 09:00")
        clock.current = datetime(2026, 12, 1, 9, 0, 3, tzinfo=UTC)
        await drops.service.run_slot(CONVERSATION.key)
        # The same slot fires again later: a leader that took over from one that died before APScheduler stored
        # the job's next run time, or a clock stepped back.
        clock.current = datetime(2026, 12, 1, 9, 4, 0, tzinfo=UTC)
        await drops.service.run_slot(CONVERSATION.key)
        # Before: with no slot left since the last one, it posted a made-up "09:04" slot: a second drop.
        assert len(drops.publisher.posts) == 1
        assert [run.run_key[-5:] for run in await drops.runs()] == ["09:00"]
    finally:
        await drops.bot.chorus.close()


def _next_fire_utc(drops: Drops) -> datetime:
    [job] = drops.jobs()
    next_fire = job.trigger.get_next_fire_time(None, drops.clock())
    assert next_fire is not None
    return next_fire.astimezone(UTC)


async def test_a_new_time_zone_keeps_an_auto_drop_at_the_channels_busy_hour(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        for day in range(1, 8):
            for _ in range(10):
                at = datetime(2026, 12, 1, 20, 10, tzinfo=UTC) - timedelta(days=day)
                await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, at), drops.bot.responder)
        await drops.service.flush_activity()
        await drops.say("/drops enable --tz UTC")
        assert _next_fire_utc(drops).hour in (19, 20, 21)
        await drops.say("/drops enable --tz Asia/Tokyo")
        # Before: the hour number was kept (20:00 in Tokyo, 11:00 UTC), far from when the channel is busy.
        assert _next_fire_utc(drops).hour in (19, 20, 21)
        assert "busiest hour" in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


async def test_new_quiet_hours_move_an_auto_drop_out_of_them(drops: Drops) -> None:
    await drops.say("/drops enable --tz UTC")
    assert _next_fire_utc(drops).hour == 18  # drops.default_hour, before any activity is known
    await drops.say("/drops enable --quiet 17:00-20:00")
    # Before: the next drop still fired at 18:00, inside the quiet hours the docs say auto drops never use.
    assert _next_fire_utc(drops).hour not in (17, 18, 19)


async def test_an_admin_channel_that_cannot_be_reached_is_named_in_status(drops: Drops) -> None:
    await drops.say("/drops enable")
    drops.publisher.down = {"mods"}  # an id that does not exist, or one of another platform
    drops.publisher.failures = [ConnectionError("502")]
    await drops.say("/drops now")
    drops.publisher.failures = [Forbidden("403 Forbidden: Missing Access")]
    drops.clock.advance(seconds=31)
    await drops.service.tick()
    status = await drops.say("/drops status")
    # Before: the alert went to the log only, and nothing a moderator sees said so.
    assert "Paused: Chorus can no longer post here" in status
    assert "Admin alerts: could not reach drops.admin_channel mods (mods is unreachable)" in status
    drops.publisher.down = set()
    await drops.say("/drops resume")
    drops.publisher.failures = [Forbidden("403 Forbidden: Missing Access")]
    await drops.say("/drops now")
    assert len(drops.publisher.to("mods")) == 1
    assert "Admin alerts" not in await drops.say("/drops status")


@dataclass
class StuckPublisher(RecordingPublisher):
    """A platform that never answers for one channel (a send stuck in the client's long timeout)."""

    stuck: str = ""
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        if conversation.channel == self.stuck:
            self.attempts += 1
            await self.released.wait()
            raise ConnectionError("connection reset")
        return await super().publish(conversation, reply)


async def test_a_send_stuck_in_one_channel_does_not_hold_up_the_others(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    publisher = StuckPublisher()
    drops = await start_drops(drops_settings(tmp_path), clock, publisher)
    drops.service.retry_wait_s = 0.05
    stuck, other = Conversation("terminal", "local", "stuck"), Conversation("terminal", "local", "other")
    try:
        for conversation in (stuck, other):
            await drops.service.enable(conversation, ALICE, DropsOptions(time="09:00"))
            publisher.failures = [ConnectionError("502")]
            await drops.service.post_now(conversation, ALICE)
        publisher.stuck = "stuck"
        clock.advance(seconds=31)
        # Before: the tick sent the retries one by one and waited on the stuck send (a client timeout can be
        # minutes): the other channel's drop, engagement and schedule changes all waited with it.
        await asyncio.wait_for(drops.service.tick(), timeout=10)
        assert len(publisher.to("other")) == 1 and publisher.attempts >= 3
        await asyncio.wait_for(drops.service.tick(), timeout=10)
        assert publisher.attempts == 4, "the stuck send is not started a second time"
        publisher.released.set()
        await wait_until(lambda: not drops.service._retrying_channels, 10)
        statuses = {run.channel_key: run.status for run in await drops.runs()}
        assert statuses == {stuck.key: "retrying", other.key: "posted"}
    finally:
        publisher.released.set()
        await drops.bot.chorus.close()


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, 10003), (403, 50013), (400, 50083), (400, 160005)],
    ids=["channel deleted", "no Send Messages", "thread archived", "thread locked"],
)
async def test_a_discord_channel_or_thread_gone_for_good_pauses_its_drops(
    tmp_path: Path, status: int, code: int
) -> None:
    side = await discord_side(tmp_path, Clock(datetime.now(UTC).replace(microsecond=0)))
    try:
        await side.command("drops", ENABLE, moderator=True)
        side.extra["fake"].fail("POST", rf"^/channels/{CHANNEL_ID}/messages$", times=1, status=status, code=code)
        text, _ = await side.command("drops", "now", moderator=True)
        # Before (a thread archived or locked): "retrying in 30 s", then four tries and an alert every slot.
        assert "can no longer post here" in text
        assert side.service.scheduler.get_jobs() == []  # type: ignore[union-attr]
        [alert] = side.posts(side.admin)
        assert "paused" in discord_text(alert)
    finally:
        await side.stop()


async def test_a_discord_server_error_is_retried_not_paused(tmp_path: Path) -> None:
    side = await discord_side(tmp_path, Clock(datetime.now(UTC).replace(microsecond=0)))
    try:
        await side.command("drops", ENABLE, moderator=True)
        # discord.py retries a 5xx itself a few times; past that the drop is retried later, never paused.
        side.extra["fake"].fail("POST", rf"^/channels/{CHANNEL_ID}/messages$", times=10, status=503)
        text, _ = await side.command("drops", "now", moderator=True)
        assert "retrying in 30 s" in text
        assert len(side.service.scheduler.get_jobs()) == 1  # type: ignore[union-attr]
    finally:
        await side.stop()


async def test_changing_topics_after_todays_auto_drop_does_not_bring_a_second_one_today(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 18, 0, 5, tzinfo=UTC))  # the default 18:00 slot, before activity is known
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --tz UTC")
        for day in range(1, 8):
            for _ in range(10):
                at = datetime(2026, 12, 1, 21, 30, tzinfo=UTC) - timedelta(days=day)
                await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, at), drops.bot.responder)
        await drops.service.flush_activity()
        await drops.service.run_slot(CONVERSATION.key)
        assert len(drops.publisher.posts) == 1
        clock.advance(minutes=5)
        await drops.say("/drops topics add tea")  # any settings change: the tick re-schedules the channel's job
        await drops.service.reconcile()
        [job] = drops.jobs()
        # Before: the job was re-made for today's later busy hour (21:00), and that slot posted a second drop.
        assert job.next_run_time.astimezone(UTC).date() == datetime(2026, 12, 2).date()
        await drops.say("/drops pause")
        assert "Next: Wed 2026-12-02" in await drops.say("/drops resume")  # and not today's 21:00 either
        clock.current = datetime(2026, 12, 1, 21, 0, 5, tzinfo=UTC)
        await drops.service.run_slot(CONVERSATION.key)
        assert len(drops.publisher.posts) == 1
        assert "Missed" not in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()
