"""The run lifecycle: a bad run (half-made, or of a kind removed from the config) never stops the tick for other
runs or channels, across a restart too; a drop posts at the hour chosen for it; engagement is learned before the
next slot chooses; only PublishForbidden pauses a channel."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from drops_support import ALICE, BOB, Clock, Drops, RecordingPublisher, drops_settings, start_drops
from sqlalchemy import update

from adapters.terminal.translate import CONVERSATION
from bots.drops import DropsOptions
from bots.events import Activity, Conversation
from scheduler.core import KIND_LABELS
from scheduler.models import DropChannel, DropRun
from scheduler.planner import Engagement, Planner, SharedPrior

OTHER = Conversation("terminal", "local", "other")
THIRD = Conversation("terminal", "local", "third")


async def _set_kinds(drops: Drops, conversation: Conversation, kinds: list[str]) -> None:
    """What a channel looks like after kinds it uses were removed from the config file."""
    async with drops.bot.store.session() as session, session.begin():
        await session.execute(update(DropChannel).where(DropChannel.key == conversation.key).values(kinds=kinds))


async def _retrying_run(drops: Drops, conversation: Conversation, name: str, plan: dict | None) -> int:
    row = await drops.service._channel(conversation.key)
    assert row is not None
    run_id = await drops.service._claim(row, f"{conversation.key}@{name}", drops.clock())
    assert run_id is not None
    await drops.service._set_run(run_id, status="retrying", next_attempt_at=drops.clock(), plan=plan)
    return run_id


async def test_bad_runs_are_repaired_or_failed_and_the_tick_still_serves_every_channel(tmp_path: Path) -> None:
    settings = drops_settings(tmp_path)
    clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    first = await start_drops(settings, clock)
    service = first.service
    for conversation in (CONVERSATION, OTHER, THIRD):
        await service.enable(conversation, ALICE, DropsOptions(kinds=("prompt", "question"), time="09:00"))
    # OTHER, a healthy channel: a posted drop with engagement, and a send that failed once and waits for a retry.
    assert (await service.post_now(OTHER, ALICE)).startswith("Posted")
    [(_, posted)] = first.publisher.posts
    await first.bot.store.add_engagement(
        OTHER, "reaction", "❤️", user=BOB, generation_id=posted.generation_id, at=clock() + timedelta(minutes=5)
    )
    first.publisher.failures = [ConnectionError("gateway timeout")]
    assert "retrying" in await service.post_now(OTHER, ALICE)
    # The process is killed between claiming a run and planning it (a "generating" run with no plan).
    row = await service._channel(CONVERSATION.key)
    assert row is not None
    assert await service._claim(row, f"{CONVERSATION.key}@half-made", clock()) is not None
    await first.bot.chorus.close()

    clock.advance(hours=25)
    second = await start_drops(settings, clock)
    service = second.service
    # Kinds removed from the config: one channel still has another kind, the third has none left.
    await _set_kinds(second, CONVERSATION, ["prompt", "limerick"])
    await _retrying_run(
        second, CONVERSATION, "removed-kind", {"kind": "limerick", "tone": "warm", "topic": "tea", "hour": 9}
    )
    await _set_kinds(second, THIRD, ["limerick"])
    await _retrying_run(second, THIRD, "no-kind-left", {"kind": "limerick", "tone": "warm", "topic": "tea", "hour": 9})
    # OTHER's settings changed in another process: its job must follow at the next tick.
    async with second.bot.store.session() as session, session.begin():
        await session.execute(
            update(DropChannel).where(DropChannel.key == OTHER.key).values(time="07:00", updated_at=clock())
        )

    await service.tick()

    runs = {run.run_key.rsplit("@", 1)[-1] if "@" in run.run_key else run.run_key: run for run in await second.runs()}
    other = [run for run in runs.values() if run.channel_key == OTHER.key]
    assert [run.status for run in other] == ["posted", "posted"], "the retry went out"
    assert other[0].settled and other[0].reward == 2.0, "engagement was settled"
    [job] = [job for job in second.jobs() if job.id == f"drop:{OTHER.key}"]
    assert job.next_run_time.astimezone(UTC).strftime("%H:%M") == "07:00", "the schedule was reconciled"
    half_made, removed, no_kind = runs["half-made"], runs["removed-kind"], runs["no-kind-left"]
    assert half_made.status == "posted" and "interrupted before it was planned" in half_made.note
    assert removed.status == "posted" and (removed.plan or {})["kind"] == "prompt"
    assert no_kind.status == "failed" and "choose others with /drops enable --kinds" in no_kind.note
    alerts = [reply.parts[0] for reply in second.publisher.to("mods")]
    assert len(alerts) == 3 and any("limerick" in alert for alert in alerts)
    status = await service.status(CONVERSATION)
    assert "the kind 'limerick' is no longer configured" in status, status
    assert "none of this channel's kinds (limerick)" in await service.status(THIRD)

    posts, alerted = len(second.publisher.posts), len(alerts)
    clock.advance(hours=1)
    await service.tick()
    assert len(second.publisher.posts) == posts and len(second.publisher.to("mods")) == alerted, "settled for good"
    # The next slots of the channel with no kind left fail the same way: the admins were told once, and status
    # still shows each failed drop.
    for name in ("no-kind-again", "no-kind-third"):
        await _retrying_run(second, THIRD, name, {"kind": "limerick", "tone": "warm", "topic": "tea", "hour": 9})
        await service.tick()
    failed = [run for run in await second.runs() if run.channel_key == THIRD.key and run.status == "failed"]
    assert len(failed) == 3
    assert len(second.publisher.to("mods")) == alerted, "the same failure is not alerted at every slot"
    await second.bot.chorus.close()


async def test_a_written_drop_waiting_for_a_retry_whose_kind_was_removed_is_rewritten_as_a_remaining_kind(
    tmp_path: Path,
) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC)))
    try:
        await drops.say("/drops enable --time 09:00 --kinds prompt,question")
        drops.publisher.failures = [ConnectionError("gateway timeout")]
        assert "retrying" in await drops.say("/drops now")
        [waiting] = await drops.runs()
        written = (waiting.plan or {})["kind"]
        assert waiting.text, "it was written before the send failed"
        left = "question" if written == "prompt" else "prompt"
        await _set_kinds(drops, CONVERSATION, [left, "limerick"])  # its kind is no longer one the channel can use
        drops.clock.advance(minutes=5)
        await drops.service.tick()
        [run] = await drops.runs()
        [posted] = drops.publisher.to(CONVERSATION.channel)
        assert run.status == "posted" and (run.plan or {})["kind"] == left, (run.status, run.plan)
        assert posted.title.startswith(KIND_LABELS[left]) and f"no longer configured, so it became a {left}" in run.note
    finally:
        await drops.bot.chorus.close()


async def test_a_channel_whose_zone_no_longer_exists_fails_its_run_and_other_channels_carry_on(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        for conversation in (CONVERSATION, OTHER):
            await drops.service.enable(conversation, ALICE, DropsOptions(time="09:00"))
        broken = await _retrying_run(drops, CONVERSATION, "broken", None)
        healthy = await _retrying_run(drops, OTHER, "healthy", None)
        clock.advance(minutes=1)
        async with drops.bot.store.session() as session, session.begin():
            await session.execute(
                update(DropChannel)
                .where(DropChannel.key == CONVERSATION.key)
                .values(tz="Mars/Base", updated_at=clock())
            )
            await session.execute(
                update(DropChannel).where(DropChannel.key == OTHER.key).values(time="07:00", updated_at=clock())
            )
        await drops.service.tick()
        statuses = {run.id: (run.status, run.note) for run in await drops.runs()}
        assert statuses[broken][0] == "failed" and "Mars/Base" in statuses[broken][1]
        assert statuses[healthy][0] == "posted"
        [job] = [job for job in drops.jobs() if job.id == f"drop:{OTHER.key}"]
        assert job.next_run_time.astimezone(UTC).strftime("%H:%M") == "07:00"
    finally:
        await drops.bot.chorus.close()


async def test_a_channel_whose_zone_vanished_is_told_once_and_can_be_fixed_from_the_channel(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 09:00 --tz Europe/Berlin")
        clock.advance(minutes=1)
        async with drops.bot.store.session() as session, session.begin():  # a zone the system no longer knows
            await session.execute(update(DropChannel).values(tz="Mars/Base", updated_at=clock()))
        for _ in range(3):
            clock.advance(minutes=1)
            await drops.service.tick()
        alerts = [reply.parts[0] for reply in drops.publisher.to("mods")]
        assert len(alerts) == 1 and "cannot be scheduled" in alerts[0] and "Mars/Base" in alerts[0], alerts
        status = await drops.say("/drops status")
        assert "saved schedule no longer works" in status and "/drops enable" in status, status
        assert "Updated drops here" in await drops.say("/drops enable --tz Europe/Berlin")
        assert "Schedule: daily at 09:00 Europe/Berlin" in await drops.say("/drops status")
        assert len(drops.jobs()) == 1
    finally:
        await drops.bot.chorus.close()


async def _busy_at(drops: Drops, hour_utc: int, days: int = 7) -> None:
    for day in range(days):
        for _ in range(10):
            at = datetime(2026, 11, 29, hour_utc, 30, tzinfo=UTC) - timedelta(days=day)
            await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, at), drops.bot.responder)
    await drops.service.flush_activity()


async def test_each_auto_drop_posts_at_the_hour_chosen_for_it(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 30, 18, 0, 5, tzinfo=UTC))  # the default 18:00, before activity is known
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable")
        await _busy_at(drops, 21)
        for _ in range(3):
            await drops.service.run_slot(CONVERSATION.key)
            [job] = drops.jobs()
            clock.current = job.next_run_time.astimezone(UTC) + timedelta(seconds=2)
        runs = await drops.runs()
        assert [run.status for run in runs] == ["posted"] * 3
        for run in runs:
            posted_hour = run.scheduled_for.astimezone(ZoneInfo("UTC")).hour
            assert (run.plan or {})["hour"] == posted_hour, "the hour the planner learns from is the hour it posted"
        assert runs[1].scheduled_for.hour in (20, 21, 22), "the next drop moved to the busy evening"
    finally:
        await drops.bot.chorus.close()


async def test_engagement_due_before_a_slot_is_learned_before_that_slot_chooses(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable --time 09:00")
        await drops.service.run_slot(CONVERSATION.key)
        [(_, posted)] = drops.publisher.posts
        await drops.bot.store.add_engagement(  # on the test's clock, not today's date
            CONVERSATION,
            "reaction",
            "🔥",
            user=BOB,
            generation_id=posted.generation_id,
            at=clock() + timedelta(hours=1),
        )
        clock.advance(days=1)  # the next slot fires exactly as the first drop's 24 h window closes; no tick ran
        await drops.service.run_slot(CONVERSATION.key)
        first, second = await drops.runs()
        assert first.settled and first.reward == 2.0
        row = await drops.service._channel(CONVERSATION.key)
        assert row is not None
        planner = Planner.from_state(row.planner)
        assert (planner.observed, planner.chosen) == (1, 2), "the second drop was chosen knowing the first's reward"
        assert second.status == "posted"
    finally:
        await drops.bot.chorus.close()


async def test_yesterdays_drop_is_learned_before_todays_slot_chooses_though_it_posted_after_its_slot(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    # Writing and sending a drop takes a while, so it posts after its slot, and its 24 h window closes after the
    # next day's slot at the same time fires.
    publisher = RecordingPublisher(clock=clock, latency=timedelta(seconds=90))
    drops = await start_drops(drops_settings(tmp_path), clock, publisher)
    try:
        await drops.say("/drops enable --time 09:00")
        await drops.service.run_slot(CONVERSATION.key)
        [first] = await drops.runs()
        await drops.bot.store.add_engagement(
            CONVERSATION, "reaction", "🔥", user=BOB, generation_id=first.generation_id, at=clock()
        )
        clock.current = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # the next slot fires on time; no tick ran
        await drops.service.run_slot(CONVERSATION.key)
        first, _ = await drops.runs()
        assert first.settled and first.reward == 2.0
        planner = await _planner_of(drops)
        assert (planner.observed, planner.chosen) == (1, 2), "the second drop was chosen knowing the first's reward"
    finally:
        await drops.bot.chorus.close()


async def _planner_of(drops: Drops) -> Planner:
    row = await drops.service._channel(CONVERSATION.key)
    assert row is not None
    return Planner.from_state(row.planner)


async def _one_posted_drop_with_engagement(tmp_path: Path) -> Drops:
    clock = Clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    await drops.say("/drops enable --time 09:00")
    await drops.service.run_slot(CONVERSATION.key)
    [run] = await drops.runs()
    await drops.bot.store.add_engagement(
        CONVERSATION, "reaction", "🔥", user=BOB, generation_id=run.generation_id, at=clock()
    )
    return drops


async def test_a_drop_settled_by_the_tick_and_by_a_slot_at_the_same_time_is_learned_once(tmp_path: Path) -> None:
    drops = await _one_posted_drop_with_engagement(tmp_path)
    try:
        drops.clock.advance(days=1)
        service = drops.service
        counting, go_on = asyncio.Event(), asyncio.Event()
        count = service.engagement_for

        async def slow_count(run: DropRun) -> Engagement:
            if not counting.is_set():  # the tick's settlement: held after it listed the drop as unsettled
                counting.set()
                await go_on.wait()
            return await count(run)

        service.engagement_for = slow_count  # type: ignore[method-assign]
        tick = asyncio.create_task(service.settle_due())
        await counting.wait()
        await service.run_slot(CONVERSATION.key)  # the next slot settles the same drop itself, then chooses
        go_on.set()
        await tick
        planner = await _planner_of(drops)
        assert (planner.observed, planner.chosen) == (1, 2), "one drop, one observation"
        first, _ = await drops.runs()
        assert first.reward == 2.0
    finally:
        await drops.bot.chorus.close()


async def test_a_settlement_while_a_drop_is_being_chosen_is_not_overwritten_by_that_choice(tmp_path: Path) -> None:
    drops = await _one_posted_drop_with_engagement(tmp_path)
    try:
        drops.clock.advance(days=1, hours=2)
        service = drops.service
        choosing, go_on = asyncio.Event(), asyncio.Event()
        prior = service._shared_prior

        async def slow_prior(key: str) -> SharedPrior:
            if not choosing.is_set():  # /drops now has read the channel's planner and is about to choose
                choosing.set()
                await go_on.wait()
            return await prior(key)

        service._shared_prior = slow_prior  # type: ignore[method-assign]
        now = asyncio.create_task(service.post_now(CONVERSATION, ALICE))
        await choosing.wait()
        await service.settle_due()  # the tick settles yesterday's drop meanwhile
        go_on.set()
        assert (await now).startswith("Posted")
        await service.settle_due()
        planner = await _planner_of(drops)
        assert (planner.observed, planner.chosen) == (1, 2), "what the tick learned survived the choice"
    finally:
        await drops.bot.chorus.close()


async def test_only_publish_forbidden_pauses_a_channel_platform_words_in_other_errors_are_retried(
    tmp_path: Path,
) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime(2026, 12, 1, 9, tzinfo=UTC)))
    try:
        await drops.say("/drops enable")
        drops.publisher.failures = [ConnectionError("proxy said: not_in_channel? Missing Access? (HTTP 404)")]
        assert "retrying in 30 s" in await drops.say("/drops now")
        assert "Paused" not in await drops.say("/drops status")
        assert len(drops.jobs()) == 1
    finally:
        await drops.bot.chorus.close()


async def test_a_damaged_planner_row_starts_afresh_instead_of_failing_every_drop(tmp_path: Path) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime(2026, 12, 1, 9, tzinfo=UTC)))
    try:
        await drops.say("/drops enable --time 09:00")
        async with drops.bot.store.session() as session, session.begin():
            await session.execute(update(DropChannel).values(planner={"version": 3, "kinds": ["prompt"]}))
        assert "Schedule: daily at 09:00" in await drops.say("/drops status")
        assert (await drops.say("/drops now")).startswith("Posted")
    finally:
        await drops.bot.chorus.close()
