"""Scheduled drops end to end on SQLite: /drops commands, the real APScheduler with its SQLAlchemy job store,
exactly-once delivery across a restart, retries, a channel Chorus may no longer post to, misfires and DST."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from drops_support import ALICE, BOB, Clock, Drops, Forbidden, RecordingPublisher, drops_settings, start_drops
from sqlalchemy import update

from adapters.terminal.translate import CONVERSATION
from bots.events import Action, Activity, Command, Message, Reaction
from generation.types import Priority
from scheduler.models import DropChannel, DropRun
from scheduler.schedule import build_schedule, fire_times
from scheduler.service import sync_url
from support import make_bot, reply_text, settings_for, wait_until


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


async def test_enable_schedules_one_job_and_enabling_again_updates_it(drops: Drops) -> None:
    text = await drops.say("/drops enable --time 09:30 --tz europe/berlin --kinds prompt,question")
    assert "Drops are on here: daily at 09:30 Europe/Berlin" in text
    assert "Kinds: prompt, question" in text
    [job] = drops.jobs()
    assert job.next_run_time.astimezone(job.trigger.timezone).strftime("%H:%M") == "09:30"
    text = await drops.say('/drops enable --cadence "15 7 * * 1-5" --tz America/New_York')
    assert text.startswith("Updated drops here")
    [job] = drops.jobs()
    local = job.next_run_time.astimezone(job.trigger.timezone)
    assert (local.hour, local.minute, local.weekday() < 5) == (7, 15, True)
    status = await drops.say("/drops status")
    assert 'cron "15 7 * * 1-5" America/New_York' in status and "kinds: prompt, question" in status


async def test_drop_now_posts_through_the_publisher_at_scheduled_priority(drops: Drops) -> None:
    await drops.say("/drops enable")
    text = await drops.say("/drops now")
    assert text.startswith("Posted a ")
    [(conversation, reply)] = drops.publisher.posts
    assert conversation == CONVERSATION
    assert reply.parts[0] and reply.generation_id is not None
    assert [action.action_id for action in reply.actions] == ["rate_up", "rate_down"]
    assert drops.bot.generator.requests[-1].priority == Priority.SCHEDULED
    [run] = await drops.runs()
    assert (run.status, run.message_ref) == ("posted", "msg-1")
    record = await drops.bot.store.get_generation(reply.generation_id)
    assert record is not None and record.message_ref == "msg-1"


async def test_engagement_within_the_window_becomes_the_drops_reward(drops: Drops) -> None:
    await drops.say("/drops enable")
    await drops.say("/drops now")
    chorus, responder = drops.bot.chorus, drops.bot.responder
    requests = len(drops.bot.generator.requests)
    for emoji in ("❤️", "👍"):
        await chorus.handle(Reaction(CONVERSATION, BOB, "msg-1", emoji), responder)
    await chorus.handle(Reaction(CONVERSATION, BOB, "msg-1", "👍", added=False), responder)
    await chorus.handle(Message(CONVERSATION, BOB, "here is my story…", reply_to="msg-1"), responder)
    [_, reply] = drops.publisher.posts[0]
    await chorus.handle(Action(CONVERSATION, BOB, "rate_up", "+1", generation_id=reply.generation_id), responder)
    await chorus.handle(Action(CONVERSATION, ALICE, "rate_down"), responder)  # the terminal's "-": the latest result
    assert len(drops.bot.generator.requests) == requests, "a reply to a drop is engagement, not a refinement"
    assert "Thanks, noted" in reply_text(responder.replies[-1]) and responder.replies[-1].ephemeral
    assert await drops.service.settle_due() == 0, "the 24 h window is still open"
    drops.clock.advance(hours=25)
    assert await drops.service.settle_due() == 1
    [run] = await drops.runs()
    # ❤️ 2, one reply 3, one 👍 click 2, one 👎 click -2 (the 👍 reaction was taken back)
    assert run.reward == 2.0 + 3.0 + 2.0 - 2.0
    status = await drops.say("/drops status")
    assert "Learned from 1 drop(s)" in status and "engagement 5" in status


async def test_bad_input_gets_short_useful_errors(drops: Drops) -> None:
    cases = {
        "/drops enable --tz Europe/Berlinn": "Did you mean Europe/Berlin",
        "/drops enable --tz Mars/Olympus": "Unknown time zone 'Mars/Olympus'",
        '/drops enable --cadence "61 9 * * *"': "Invalid cron '61 9 * * *'",
        "/drops enable --cadence hourly": "Unknown cadence 'hourly'",
        "/drops enable --quiet 08:00-08:00": "cover the whole day",
        "/drops enable --quiet 00:00-24:00": "cover the whole day",
        "/drops enable --time 25:00": "--time must be auto or HH:MM",
        "/drops enable --time 23:00 --quiet 22:00-08:00": "inside the quiet hours",
        "/drops enable --quiet 25:00-08:00": "--quiet must be HH:MM on a 24-hour clock",
        "/drops enable --quiet late": "--quiet takes a range like 22:00-08:00",
        '/drops enable --cadence "0 9 * * *" --time 10:00': "--time does not combine with a cron cadence",
        "/drops enable --kinds ,": "--kinds needs at least one kind",
        "/drops enable --tz": "--tz needs a value",
        "/drops enable daily": "Unexpected 'daily'",
        "/drops status now": "/drops status takes no options",
        "/drops topics rename tea": "Unknown topics action 'rename'",
        "/drops topics add": "Say which topics",
        "/drops enable --kinds poem,questoin": "Did you mean 'question'",
        "/drops enable --colour red": "Unknown option --colour",
        '/drops enable --cadence "0 9 * * *': "Quote a cron",
        "/drops launch": "Unknown /drops sub-command",
        "/drops pause": "Drops are not enabled here",
    }
    for line, expected in cases.items():
        [reply] = await drops.bot.say(line)
        assert reply.ephemeral and expected in reply_text(reply), (line, reply_text(reply))
    assert drops.jobs() == [], "nothing was scheduled by a rejected command"


async def test_configuring_drops_needs_a_moderator(drops: Drops) -> None:
    await drops.say("/drops enable")
    for text in ("enable --time 10:00", "pause", "now", "topics add tea"):
        await drops.bot.chorus.handle(Command(CONVERSATION, BOB, "drops", text), drops.bot.responder)
        assert "Only moderators" in reply_text(drops.bot.responder.replies[-1])
    await drops.bot.chorus.handle(Command(CONVERSATION, BOB, "drops", "status"), drops.bot.responder)
    assert "Schedule: daily" in reply_text(drops.bot.responder.replies[-1])


async def test_pause_resume_disable_add_and_remove_the_job(drops: Drops) -> None:
    await drops.say("/drops enable --time 08:00")
    assert "paused" in await drops.say("/drops pause")
    assert drops.jobs() == []
    assert "Paused: paused by a moderator" in await drops.say("/drops status")
    assert "Next:" in await drops.say("/drops resume")
    assert len(drops.jobs()) == 1
    await drops.say("/drops disable")
    assert drops.jobs() == []
    assert "Drops are off here" in await drops.say("/drops status")


async def test_a_channel_chorus_can_no_longer_post_to_is_paused_with_a_note_and_no_retries(drops: Drops) -> None:
    await drops.say("/drops enable")
    drops.publisher.failures = [Forbidden("403 Forbidden: Missing Access")]
    text = await drops.say("/drops now")
    assert "can no longer post here" in text
    [alert] = drops.publisher.to("mods")
    assert "paused" in alert.parts[0] and "/drops resume" in alert.parts[0]
    assert drops.jobs() == []
    attempts = drops.publisher.attempts
    for _ in range(3):
        drops.clock.advance(hours=1)
        await drops.service.tick()
    assert drops.publisher.attempts == attempts, "no retry storm"
    assert "Paused: Chorus can no longer post here" in await drops.say("/drops status")


async def test_failed_sends_retry_with_backoff_then_alert_the_admin_channel(drops: Drops) -> None:
    await drops.say("/drops enable")
    drops.publisher.failures = [ConnectionError("gateway timeout")] * 2
    assert "retrying in 30 s" in await drops.say("/drops now")
    await drops.service.tick()
    assert drops.publisher.attempts == 1, "not before the backoff"
    drops.clock.advance(seconds=31)
    await drops.service.tick()
    assert drops.publisher.attempts == 2
    [run] = await drops.runs()
    assert run.status == "retrying" and "retrying in 60 s" in run.note
    drops.clock.advance(seconds=61)
    await drops.service.tick()
    [run] = await drops.runs()
    assert run.status == "posted" and len(drops.publisher.to("terminal")) == 1
    drops.publisher.down = {"terminal"}
    await drops.say("/drops now")
    for _ in range(4):
        drops.clock.advance(hours=1)
        await drops.service.tick()
    assert drops.publisher.attempts == 3 + 4 + 1, "max_attempts = 4 sends, then it stops (and alerts once)"
    [alert] = drops.publisher.to("mods")
    assert "failed 4 times" in alert.parts[0]


async def test_a_run_interrupted_mid_send_is_never_posted_twice_after_a_restart(tmp_path: Path) -> None:
    settings = drops_settings(tmp_path)
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    hanging = RecordingPublisher(hang=asyncio.Event())
    first = await start_drops(settings, clock, hanging)
    await first.say("/drops enable")
    row = await first.service._channel(CONVERSATION.key)
    assert row is not None
    task = asyncio.create_task(first.service.run_slot(CONVERSATION.key))
    await wait_until(lambda: hanging.attempts == 1)
    [run] = await first.runs()
    assert run.status == "posting"
    task.cancel()  # the process dies between the send and recording "posted"
    await first.bot.chorus.close()

    second = await start_drops(settings, clock)
    [run] = await second.runs()
    assert run.status == "unconfirmed"
    await second.service.run_slot(CONVERSATION.key)  # the same slot fires again after the restart
    assert second.publisher.posts == []
    assert len(await second.runs()) == 1
    assert "Unconfirmed: 1 drop(s) were interrupted mid-send" in await second.say("/drops status")
    await second.bot.chorus.close()


async def test_the_same_slot_firing_twice_posts_once(drops: Drops) -> None:
    await drops.say("/drops enable")
    await drops.service.run_slot(CONVERSATION.key)
    await drops.service.run_slot(CONVERSATION.key)
    assert len(drops.publisher.posts) == 1


async def _backdate(drops: Drops, hours: float) -> None:
    """Pretend Chorus was down: the channel's last slot and the job's next run lie `hours` in the past."""
    past = datetime.now(UTC) - timedelta(hours=hours)
    async with drops.bot.store.session() as session, session.begin():
        await session.execute(update(DropChannel).values(last_slot_at=past - timedelta(minutes=1)))
    assert drops.service.scheduler is not None
    drops.service.scheduler.modify_job(f"drop:{CONVERSATION.key}", next_run_time=past)


async def _eventually(drops: Drops, condition: Callable[[list[DropRun]], bool], timeout_s: float = 20) -> list[DropRun]:
    """Poll the stored runs until `condition` holds (the scheduler works in the background)."""
    deadline = time.monotonic() + timeout_s
    while not condition(runs := await drops.runs()):
        assert time.monotonic() < deadline, [(r.status, r.note) for r in runs]
        await asyncio.sleep(0.02)
    return runs


async def test_misfires_within_the_grace_window_run_once_coalesced(tmp_path: Path) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC)))
    drops.service.clock = lambda: datetime.now(UTC)  # APScheduler runs on the real clock here
    try:
        await drops.say('/drops enable --cadence "*/20 * * * *"')
        await _backdate(drops, hours=0.9)
        runs = await _eventually(drops, lambda runs: "posted" in [r.status for r in runs])
        assert len(drops.publisher.posts) == 1
        assert [r.status for r in runs].count("posted") == 1
        assert [r.status for r in runs].count("missed") >= 1, "earlier slots are reported, not posted"
        assert "Missed while offline" in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


async def test_misfires_older_than_the_grace_window_are_skipped_and_reported(tmp_path: Path) -> None:
    drops = await start_drops(drops_settings(tmp_path, CHORUS_DROPS__MISFIRE_GRACE_S="60"), Clock(datetime.now(UTC)))
    drops.service.clock = lambda: datetime.now(UTC)
    try:
        await drops.say("/drops enable --time 00:00")
        await _backdate(drops, hours=30)
        runs = await _eventually(drops, lambda runs: bool(runs))
        assert {r.status for r in runs} == {"missed"}
        assert drops.publisher.posts == []
        assert "Missed while offline: " in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


def test_a_0900_drop_stays_at_0900_local_across_dst_changes() -> None:
    schedule = build_schedule("daily", "09:00", "Europe/Berlin", "")
    spring = fire_times(schedule.trigger(9), datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert [t.astimezone(schedule.zone).strftime("%d %H:%M") for t in spring] == [
        "27 09:00",
        "28 09:00",
        "29 09:00",
        "30 09:00",
    ]
    assert [t.astimezone(UTC).hour for t in spring] == [8, 8, 7, 7]
    # 02:30 happens twice when clocks go back (25 Oct 2026): the drop still posts once that day.
    night = build_schedule("daily", "02:30", "Europe/Berlin", "")
    autumn = fire_times(night.trigger(2), datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC))
    assert [t.astimezone(night.zone).day for t in autumn] == [24, 25, 26]


async def test_a_clock_jump_across_dst_posts_the_local_slot_once(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 28, 8, 0, 30, tzinfo=UTC))  # Sat 09:00:30 CET
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 09:00 --tz Europe/Berlin")
        await drops.service._save_channel(CONVERSATION.key, last_slot_at=datetime(2026, 3, 28, 8, tzinfo=UTC))
        clock.current = datetime(2026, 3, 29, 7, 0, 30, tzinfo=UTC)  # Sun 09:00:30 CEST, an hour "early" in UTC
        await drops.service.run_slot(CONVERSATION.key)
        await drops.service.run_slot(CONVERSATION.key)
        [run] = await drops.runs()
        assert run.status == "posted"
        assert run.scheduled_for == datetime(2026, 3, 29, 7, tzinfo=UTC)
        assert len(drops.publisher.posts) == 1
    finally:
        await drops.bot.chorus.close()


async def test_channel_activity_is_counted_by_local_hour_and_drives_auto_time(drops: Drops) -> None:
    chorus, responder = drops.bot.chorus, drops.bot.responder
    evening = datetime(2026, 11, 30, 11, 15, tzinfo=UTC)  # 20:15 in Tokyo
    answered = len(responder.replies)
    for minute in range(30):
        await chorus.handle(Activity(CONVERSATION, BOB, evening + timedelta(days=minute % 7)), responder)
    assert len(responder.replies) == answered, "channel activity is counted, never answered"
    await drops.service.flush_activity()
    matrix = await drops.service.activity_matrix(CONVERSATION, "Asia/Tokyo")
    assert matrix[:, 20].sum() == 30 and matrix.sum() == 30
    # Activity counted before drops were enabled already places the first auto drop.
    assert "20:00 JST" in await drops.say("/drops enable --tz Asia/Tokyo")
    assert "busiest hour 20:00 Asia/Tokyo" in await drops.say("/drops status")


async def test_messages_are_counted_and_still_handled_by_default(drops: Drops) -> None:
    await drops.say("/create slogan tea")
    before = len(drops.bot.generator.requests)
    await drops.say("make it rhyme")
    assert len(drops.bot.generator.requests) > before, "a plain message still refines the latest result"
    await drops.service.flush_activity()
    matrix = await drops.service.activity_matrix(CONVERSATION, "UTC")
    assert matrix.sum() == 2  # the /create command and the message


async def test_topics_and_opt_in_theme_learning(drops: Drops) -> None:
    await drops.say("/drops enable")
    assert (await drops.say("/drops topics add tea")).endswith(", tea.")
    assert "tea" not in await drops.say("/drops topics remove tea")
    assert "Not a topic here: coffee" in await drops.say("/drops topics remove coffee")
    assert "learning from messages: off" in await drops.say("/drops status")
    chorus, responder = drops.bot.chorus, drops.bot.responder
    for _ in range(3):
        await chorus.handle(Activity(CONVERSATION, BOB, datetime.now(UTC), text="gardening tips please"), responder)
    await drops.service.flush_activity()
    assert "gardening" not in await drops.say("/drops topics list"), "content is ignored until opted in"
    assert "Topic learning is on" in await drops.say("/drops topics learn on")
    for _ in range(3):
        await chorus.handle(Activity(CONVERSATION, BOB, datetime.now(UTC), text="gardening tips please"), responder)
    await drops.service.flush_activity()
    assert "Learned from the channel: gardening" in await drops.say("/drops topics list")
    assert "learning from messages: on" in await drops.say("/drops status")


async def test_stats_renders_a_png_with_a_text_summary(drops: Drops) -> None:
    await drops.say("/drops enable")
    await drops.say("/drops now")
    for hour in [3] * 8 + [20]:
        await drops.bot.chorus.handle(
            Activity(CONVERSATION, BOB, datetime(2026, 11, 30, hour, tzinfo=UTC)), drops.bot.responder
        )
    [reply] = await drops.bot.say("/stats")
    # 9 channel messages plus the three commands typed here.
    assert "12 messages counted" in reply.parts[0] and "Busiest: Mon 03:00" in reply.parts[0]
    assert "1 posted" in reply.parts[0]
    [attachment] = reply.attachments
    assert attachment.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert attachment.path.stat().st_size > 10_000


def test_the_job_store_uses_the_stores_database_through_a_sync_driver(tmp_path: Path) -> None:
    assert sync_url(f"sqlite+aiosqlite:///{tmp_path}/c.db") == f"sqlite:///{tmp_path}/c.db"
    assert sync_url("postgresql+asyncpg://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    with pytest.raises(ValueError, match="in-memory"):
        sync_url("sqlite+aiosqlite://")


async def test_without_a_scheduler_drops_say_so(tmp_path: Path) -> None:
    # An in-memory store cannot hold the job store, so the drops plug-in installs without its scheduler.
    bot = await make_bot(settings_for(tmp_path, CHORUS_STORE__URL="sqlite+aiosqlite://"), drops=True)
    try:
        [reply] = await bot.say("/drops status")
        assert reply.ephemeral and "not running" in reply_text(reply)
    finally:
        await bot.chorus.close()


class SameVectorEmbedder:
    """A deterministic fake Embedder: every text gets the same vector, so every drop looks like a repeat."""

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[1.0, 0.0, 0.0] for _ in texts]


class DistinctEmbedder:
    """A deterministic fake Embedder whose vectors differ whenever the texts differ."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()
            raw = [b - 127.5 for b in digest[:8]]
            norm = math.sqrt(sum(x * x for x in raw))
            vectors.append([x / norm for x in raw])
        return vectors


async def test_a_drop_too_similar_to_a_recent_one_is_regenerated(drops: Drops) -> None:
    embedder = SameVectorEmbedder()
    drops.bot.chorus.embedder = embedder
    await drops.say("/drops enable")
    await drops.say("/drops now")
    first = len(drops.bot.generator.requests)
    await drops.say("/drops now")
    assert len(drops.bot.generator.requests) - first == 1 + 2, "two regenerations (drops.max_regenerations)"
    assert len(drops.publisher.posts) == 2, "after the retries it still posts the last candidate"
    drops.bot.chorus.embedder = DistinctEmbedder()
    before = len(drops.bot.generator.requests)
    await drops.say("/drops now")
    assert len(drops.bot.generator.requests) - before == 1


async def test_auto_time_moves_the_next_drop_to_the_busiest_hour(drops: Drops) -> None:
    await drops.say("/drops enable --tz UTC")
    busy = datetime(2026, 11, 30, 20, 10, tzinfo=UTC)
    for day in range(7):
        for _ in range(10):
            await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, busy - timedelta(days=day)), drops.bot.responder)
    await drops.service.flush_activity()
    await drops.service.run_slot(CONVERSATION.key)
    [job] = drops.jobs()
    slot = (await drops.runs())[-1].scheduled_for
    assert job.next_run_time.hour in range(18, 23) and job.next_run_time.date() > slot.date()


async def test_moving_the_auto_hour_later_reports_no_missed_drop(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 30, 18, 0, 5, tzinfo=UTC))  # the default 18:00 slot, before activity is known
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable")
        for day in range(7):
            for _ in range(10):
                at = datetime(2026, 11, 29, 21, 30, tzinfo=UTC) - timedelta(days=day)
                await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, at), drops.bot.responder)
        await drops.service.flush_activity()
        await drops.service.run_slot(CONVERSATION.key)
        [job] = drops.jobs()
        next_at = job.next_run_time.astimezone(UTC)
        assert next_at.date() == datetime(2026, 12, 1).date() and next_at.hour in (20, 21, 22)
        clock.current = next_at + timedelta(seconds=2)
        await drops.service.run_slot(CONVERSATION.key)
        assert [run.status for run in await drops.runs()] == ["posted", "posted"]
        assert "Missed" not in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


async def test_drops_back_off_in_a_channel_that_never_engages(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 1, 4, 9, 0, 5, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 09:00")
        for _day in range(5):
            await drops.service.tick()  # settles yesterday's drop: nobody reacted
            await drops.service.run_slot(CONVERSATION.key)
            clock.advance(days=1)
        assert [run.status for run in await drops.runs()] == ["posted", "posted", "posted", "skipped", "posted"]
        assert "Frequency: backing off, posting every 2 slots" in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


def test_chorus_run_wires_drops_into_the_terminal(tmp_path: Path) -> None:
    """The composition root attaches the service: a piped terminal session enables, posts, and saves /stats."""
    script = "/drops enable --kinds question --tz Europe/Berlin\n/drops now\n/drops status\n/stats\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake"}
    result = subprocess.run(
        [sys.executable, "-m", "chorus", "run"], input=script, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Drops are on here: daily at the busiest hour (auto) Europe/Berlin" in out
    assert "[terminal] ── Question · " in out and "Posted a question" in out
    assert "Recent:" in out and "posted, engagement still counting" in out
    saved = [line.split(" saved to ", 1)[1] for line in out.splitlines() if " saved to " in line]
    assert len(saved) == 1 and Path(saved[0]).read_bytes()[:4] == b"\x89PNG"
