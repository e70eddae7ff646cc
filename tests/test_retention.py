"""Retention: every kind of stored data goes when its period is over, and in-memory tables stay bounded."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from adapters.terminal.translate import CONVERSATION
from bots.events import User
from bots.router import Quota
from bots.store import BRAINSTORM_CLOSED
from support import make_bot, settings_for


def test_the_quota_forgets_idle_users() -> None:
    now = [1000.0]
    quota = Quota(5, clock=lambda: now[0])
    for user in range(100_000):
        quota.take("discord", f"u{user}")
    assert len(quota) == 100_000
    now[0] += 61.0

    assert quota.take("discord", "late") == 0.0

    assert len(quota) == 1


def test_the_quota_still_limits_a_busy_user_across_sweeps() -> None:
    now = [0.0]
    quota = Quota(2, clock=lambda: now[0])
    quota.take("slack", "busy")
    now[0] = 59.0
    quota.take("slack", "busy")
    now[0] = 61.0  # the first use has left the window, the second has not
    assert quota.take("slack", "busy") == 0.0
    assert quota.take("slack", "busy") > 0.0


def _age(path: Path, hours: float) -> None:
    old = time.time() - hours * 3600
    os.utime(path, (old, old))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_a_sweep_deletes_what_outlived_its_period_and_keeps_the_rest(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path, CHORUS_STORE__RETENTION_DAYS="30", CHORUS_STORE__EXPORTS_HOURS="1"))
    store, home = bot.store, bot.chorus.settings.home_dir
    try:
        await bot.one("/create slogan an old tea shop", as_user="alice")
        await bot.say("+", as_user="bob")
        await store.add_engagement(CONVERSATION, "reaction", "🎉", user=User("bob", "bob"))
        await bot.one("/create slogan a new bakery", as_user="alice")
        expired = await store.create_brainstorm(
            CONVERSATION, User("a", "a"), topic="old", rounds=1, minutes=1, deadline=None
        )
        running = await store.create_brainstorm(
            CONVERSATION, User("a", "a"), topic="new", rounds=1, minutes=1, deadline=None
        )
        now = datetime.now(UTC)
        await store.update_brainstorm(expired.id, status=BRAINSTORM_CLOSED, expires_at=now - timedelta(days=1))
        for session in (expired, running):
            await bot.chorus.brainstorms.summary_reply(await store.get_brainstorm(session.id))
        old_export, new_export = (
            home / "exports" / "chorus-mydata-old.json",
            home / "exports" / "chorus-mydata-new.json",
        )
        _write(old_export, "{}")
        _write(new_export, "{}")
        _age(old_export, hours=2)
        async with store.engine.begin() as connection:
            await connection.execute(
                text("UPDATE generations SET created_at = :old WHERE prompt = 'an old tea shop'"),
                {"old": now - timedelta(days=31)},
            )
            await connection.execute(
                text("UPDATE engagement_events SET created_at = :old"), {"old": now - timedelta(days=91)}
            )
        await store.ask_to_forget("terminal", "carol", "tok", now - timedelta(minutes=1))
        summaries = home / "brainstorms"

        deleted = await bot.chorus.retention.sweep()

        assert deleted == {
            "brainstorms": 1,
            "forget questions": 1,
            "results": 1,
            "engagement": 1,
            "summary files": 1,
            "exports": 1,
        }
        assert sorted(p.name for p in summaries.iterdir()) == [f"brainstorm-{running.id}-summary.md"]
        assert sorted(p.name for p in (home / "exports").iterdir()) == [new_export.name]
        assert [g.prompt for g in [await store.latest_generation(CONVERSATION)]] == ["a new bakery"]
        assert await store.count_generations() == 1
        assert (await store.user_data_counts("terminal", "bob"))["feedback"] == 0
        assert await bot.chorus.retention.sweep() == dict.fromkeys(deleted, 0)
    finally:
        await bot.chorus.close()
