"""/drops status says only what was learned, and retention keeps the drops data from growing for ever."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drops_support import BOB, Clock, Drops, drops_settings, start_drops
from sqlalchemy import func, select

from adapters.terminal.translate import CONVERSATION
from bots.events import Reaction
from bots.store import EngagementEvent, Feedback
from scheduler.models import DropRun


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
        await drops.say("/drops enable --time 09:00 --kinds question,prompt")
        for _ in range(12):
            assert (await drops.say("/drops now")).startswith("Posted")
            [run] = (await drops.runs())[-1:]
            if (run.plan or {})["kind"] == "question":
                for user in range(8):
                    reaction = Reaction(CONVERSATION, BOB.__class__(f"u{user}", f"u{user}"), run.message_ref, "❤️")
                    await drops.bot.chorus.handle(reaction, drops.bot.responder)
            drops.clock.advance(hours=25)
            await drops.service.settle_due()
        assert "does best with kinds question" in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


async def test_retention_prunes_old_runs_events_feedback_and_stats_images(tmp_path: Path) -> None:
    clock = Clock(datetime.now(UTC))  # the store stamps engagement and feedback with the real time
    drops = await start_drops(drops_settings(tmp_path, CHORUS_DROPS__KEEP_STATS_IMAGES_H="1"), clock)
    try:
        store = drops.bot.store
        await drops.say("/drops enable --time 09:00")
        await drops.say("/drops now")
        [(_, old)] = drops.publisher.posts
        await store.add_engagement(CONVERSATION, "reaction", "❤️", user=BOB, generation_id=old.generation_id)
        assert old.generation_id is not None
        await store.add_feedback(old.generation_id, BOB, "terminal", "rating", "+1")
        [image] = (await drops.bot.say("/stats"))[0].attachments
        stale = image.path.with_name("stats-terminal-20250101-000000.png")
        stale.write_bytes(b"\x89PNG old")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))

        # A year on: the old drop was settled long ago; a new one still waits for its engagement window.
        await drops.service.settle_due()  # nothing due yet
        clock.advance(days=1)
        await drops.service.settle_due()
        clock.advance(days=400)
        await drops.say("/drops now")
        pruned = await drops.service.prune_if_due()
        assert pruned is not None
        assert (pruned.runs, pruned.engagement_events, pruned.feedback) == (1, 1, 1)
        assert pruned.stats_images == 1 and not stale.exists() and image.path.exists(), "a fresh image is kept"
        async with store.session() as session:
            [run] = list(await session.scalars(select(DropRun)))
            assert run.status == "posted" and not run.settled, "a drop still counting engagement is kept"
            assert await session.scalar(select(func.count()).select_from(EngagementEvent)) == 0
            assert await session.scalar(select(func.count()).select_from(Feedback)) == 0
        assert await drops.service.prune_if_due() is None, "at most once an hour"
        assert "Learned from 1 drop(s)" in await drops.say("/drops status"), "what was learned is kept"
    finally:
        await drops.bot.chorus.close()


def test_retention_is_configurable_and_zero_keeps_everything(tmp_path: Path) -> None:
    settings = drops_settings(tmp_path, CHORUS_DROPS__KEEP_RUNS_DAYS="0", CHORUS_DROPS__KEEP_ENGAGEMENT_DAYS="30")
    assert (settings.drops.keep_runs_days, settings.drops.keep_engagement_days) == (0, 30)
    assert timedelta(days=settings.drops.keep_feedback_days) > timedelta(days=30)
