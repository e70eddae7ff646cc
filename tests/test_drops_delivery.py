"""The run lifecycle on SQLite with the real APScheduler: a drop is posted exactly once, across a restart, a slot
firing twice, misfires and DST jumps; failed sends retry then alert; a channel Chorus may no longer post to is
paused; near-repeats are rewritten; a quiet channel gets fewer drops."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from drops_support import Clock, Drops, Forbidden, RecordingPublisher, drops_settings, start_drops
from sqlalchemy import update

from adapters.terminal.translate import CONVERSATION
from generation.types import GenerationError, Priority
from scheduler.models import DropChannel, DropRun
from scheduler.service import DropsService
from support import make_bot, wait_for, wait_until


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


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
    seen: list[DropRun] = []

    async def met() -> bool:
        seen[:] = await drops.runs()
        return condition(seen)

    await wait_for(met, timeout_s=timeout_s, describe=lambda: [(r.status, r.note) for r in seen])
    return seen


def _fire_on_wall_clock(drops: Drops) -> None:
    """A service started with an injected clock keeps APScheduler paused; these tests switch to the real clock."""
    assert drops.service.scheduler is not None
    drops.service.scheduler.resume()


async def test_misfires_within_the_grace_window_run_once_coalesced(tmp_path: Path) -> None:
    settings = drops_settings(tmp_path, CHORUS_DROPS__MISFIRE_GRACE_S="10800")
    drops = await start_drops(settings, Clock(datetime.now(UTC)))
    drops.service.clock = lambda: datetime.now(UTC)  # APScheduler runs on the real clock here
    _fire_on_wall_clock(drops)
    try:
        await drops.say('/drops enable --cadence "0 * * * *"')  # hourly, the most often a cron may fire
        await _backdate(drops, hours=2.9)
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
    _fire_on_wall_clock(drops)
    try:
        await drops.say("/drops enable --time 00:00")
        await _backdate(drops, hours=30)
        runs = await _eventually(drops, lambda runs: bool(runs))
        assert {r.status for r in runs} == {"missed"}
        assert drops.publisher.posts == []
        assert "Missed while offline: " in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


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


class DownEmbedder:
    """An embedding service that cannot be reached (brainstorm.embedding_url pointing at a stopped server)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise GenerationError("The embedding service at http://127.0.0.1:9/v1/embeddings could not be reached.")


async def test_a_drop_is_posted_when_the_embedding_service_is_down(drops: Drops) -> None:
    drops.bot.chorus.embedder = DownEmbedder()
    await drops.say("/drops enable")
    # Before: the repeat check's failure failed the whole drop; it was retried and, after max_attempts, dropped.
    assert (await drops.say("/drops now")).startswith("Posted a ")
    [run] = await drops.runs()
    assert run.status == "posted" and len(drops.publisher.posts) == 1


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


async def test_the_scheduler_fires_on_its_own_only_when_the_service_keeps_wall_clock_time(tmp_path: Path) -> None:
    """In production (no injected clock) APScheduler fires the jobs; with a test's clock it must not, or a job due
    by that clock's calendar fires (or is reported missed) by the real one."""
    bot = await make_bot(drops_settings(tmp_path))
    service = DropsService(bot.chorus)
    service.attach()
    try:
        await bot.chorus.attach_publisher(RecordingPublisher())
        scheduler = await wait_for(lambda: service.scheduler)
        assert scheduler.state == STATE_RUNNING
    finally:
        await bot.chorus.close()
    drops = await start_drops(drops_settings(tmp_path / "frozen"), Clock(datetime(2026, 11, 30, 12, tzinfo=UTC)))
    try:
        assert drops.service.scheduler is not None and drops.service.scheduler.state == STATE_PAUSED
    finally:
        await drops.bot.chorus.close()
