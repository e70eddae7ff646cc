"""/drops status says only what was learned, and retention keeps the drops data from growing for ever."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from drops_support import BOB, Clock, Drops, drops_settings, start_drops

from adapters.terminal.translate import CONVERSATION
from bots.events import Activity, Reaction, User
from support import reply_text


async def _post_and_settle(drops: Drops, n: int, react: bool) -> None:
    for _ in range(n):
        assert (await drops.say("/drops now")).startswith("Posted")
        if react:
            await drops.bot.chorus.handle(
                Reaction(CONVERSATION, BOB, f"msg-{len(drops.publisher.posts)}", "❤️"), drops.bot.responder
            )
    drops.clock.advance(hours=25)
    assert await drops.service.settle_due() == n


async def test_thirty_drops_without_engagement_claim_no_favourite(tmp_path: Path) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime(2026, 12, 1, 9, tzinfo=UTC)))
    try:
        await drops.say("/drops enable --time 09:00")
        await _post_and_settle(drops, 30, react=False)
        status = await drops.say("/drops status")
        assert "Learned from 30 drop(s): none got any engagement yet" in status
        assert "does best with" not in status
    finally:
        await drops.bot.chorus.close()


async def test_status_names_a_favourite_once_engagement_says_so(tmp_path: Path) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime(2026, 12, 1, 9, tzinfo=UTC)))
    try:
        # A few prompts nobody reacts to, then questions that people love.
        for kinds, drops_of_it, hearts in (("prompt", 4, 0), ("question,prompt", 8, 8)):
            await drops.say(f"/drops enable --time 09:00 --kinds {kinds}")
            for _ in range(drops_of_it):
                assert (await drops.say("/drops now")).startswith("Posted")
                [run] = (await drops.runs())[-1:]
                if (run.plan or {})["kind"] == "question":
                    for user in range(hearts):
                        reaction = Reaction(CONVERSATION, User(f"u{user}", f"u{user}"), run.message_ref, "❤️")
                        await drops.bot.chorus.handle(reaction, drops.bot.responder)
                drops.clock.advance(hours=25)
                await drops.service.settle_due()
        assert "does best with kinds question" in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


async def test_retention_prunes_old_runs_and_stats_images_and_keeps_what_was_learned(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 1, 1, 9, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path, CHORUS_DROPS__KEEP_STATS_IMAGES_H="1"), clock)
    try:
        await drops.say("/drops enable --time 09:00")
        await drops.say("/drops now")
        [image] = (await drops.bot.say("/stats"))[0].attachments
        stale = image.path.with_name("stats-terminal-20250101-000000.png")
        stale.write_bytes(b"\x89PNG old")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        clock.advance(days=1)
        assert await drops.service.settle_due() == 1
        # Half a year on (keep_runs_days is 180): the old drop goes; a new one still counting engagement stays.
        clock.advance(days=200)
        await drops.say("/drops now")
        pruned = await drops.service.prune_if_due()
        assert pruned is not None and (pruned.runs, pruned.stats_images) == (1, 1)
        assert not stale.exists() and image.path.exists(), "a fresh image is kept"
        [run] = await drops.runs()
        assert run.status == "posted" and not run.settled, "a drop still counting engagement is kept"
        assert await drops.service.prune_if_due() is None, "at most once an hour"
        assert "Learned from 1 drop(s)" in await drops.say("/drops status"), "what was learned is kept"
    finally:
        await drops.bot.chorus.close()


def test_retention_is_configurable_and_zero_keeps_everything(tmp_path: Path) -> None:
    settings = drops_settings(tmp_path, CHORUS_DROPS__KEEP_RUNS_DAYS="0", CHORUS_DROPS__KEEP_STATS_IMAGES_H="2")
    assert (settings.drops.keep_runs_days, settings.drops.keep_stats_images_h) == (0, 2.0)


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


def test_stats_says_one_message_not_one_messages() -> None:
    import numpy as np

    from scheduler.stats import StatsData

    activity = np.zeros((7, 24))
    activity[0, 9] = 1
    assert StatsData("terminal", "UTC", activity).summary().startswith("#terminal: 1 message counted (")


async def test_stats_renders_a_png_with_a_text_summary(drops: Drops) -> None:
    await drops.say("/drops enable")
    await drops.say("/drops now")
    for hour in [3] * 8 + [20]:
        await drops.bot.chorus.handle(
            Activity(CONVERSATION, BOB, datetime(2026, 11, 30, hour, tzinfo=UTC)), drops.bot.responder
        )
    [refused] = await drops.bot.say("/stats last week")  # words it cannot use are refused, not ignored
    assert refused.ephemeral and not refused.attachments
    assert "/stats takes nothing after it (got “last week”). Type /stats alone." in reply_text(refused)
    [reply] = await drops.bot.say("/stats")
    # 9 channel messages plus the four commands typed here.
    assert "13 messages counted" in reply.parts[0] and "Busiest: Mon 03:00" in reply.parts[0]
    assert "1 posted" in reply.parts[0]
    [attachment] = reply.attachments
    assert attachment.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert attachment.path.stat().st_size > 10_000
