"""Engagement settlement and channel activity: reactions, replies and clicks within the window become a drop's
reward; channel messages are counted by local hour (never stored as text) and drive the auto time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from drops_support import ALICE, BOB, Clock, Drops, drops_settings, start_drops

from adapters.terminal.translate import CONVERSATION
from bots.events import Action, Activity, Message, Reaction
from support import reply_text


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


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
    await chorus.handle(Action(CONVERSATION, BOB, "rate_up", "+1", target_id=reply.generation_id), responder)
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
