"""/forget forgets the person everywhere (every table, every file), and its confirmation belongs to one /forget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from adapters.terminal.translate import CONVERSATION
from bots.events import User
from bots.store import BRAINSTORM_CLOSED
from scheduler.models import DropChannel
from support import TestBot, make_bot, reply_text, settings_for

FORGOTTEN = "zelda-forgettable"  # the terminal user's id and name
HER_PROMPT = "quokka lanterns"
HER_TOPIC = "marzipan offsite"
HER_IDEA = "heliotrope kayaks"
HER_STEP = "Book the heliotrope boats"
HER_THEME = "Heliotrope & boats"
MARKERS = (FORGOTTEN, HER_PROMPT, HER_TOPIC, HER_IDEA, HER_STEP, HER_THEME)


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[TestBot]:
    bot = await make_bot(settings_for(tmp_path / "home"))
    yield bot
    await bot.chorus.close()


async def _everything_stored(bot: TestBot) -> str:
    """Every row of every table, and the bytes of every file under the Chorus home, as one text."""
    dump: list[str] = []
    async with bot.store.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        for table in tables:
            rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
            dump.append(f"{table}: {rows!r}")
    for path in sorted(bot.chorus.settings.home_dir.rglob("*")):
        if path.is_file():
            dump.append(f"{path}: {path.read_bytes().decode('utf-8', errors='replace')}")
    return "\n".join(dump)


async def _her_brainstorm(bot: TestBot) -> int:
    """A closed session she started: her idea on top (with its next step and theme), Bob's second."""
    store = bot.store
    her, bob = User(FORGOTTEN, FORGOTTEN), User("bob", "bob")
    session = await store.create_brainstorm(CONVERSATION, her, topic=HER_TOPIC, rounds=1, minutes=5, deadline=None)
    session = await store.update_brainstorm(session.id, thread="t-1", thread_name=f"Brainstorm: {HER_TOPIC}")
    mine = await store.add_idea(session.id, her, "terminal", HER_IDEA, round=1)
    bobs = await store.add_idea(session.id, bob, "terminal", "a picnic by the river", round=1)
    await store.add_vote(mine, "terminal", "bob")
    await store.add_vote(mine, "terminal", "carol")
    await store.add_vote(bobs, "terminal", FORGOTTEN)
    now = datetime.now(UTC)
    await store.update_brainstorm(
        session.id,
        status=BRAINSTORM_CLOSED,
        themes=[{"label": HER_THEME, "idea_ids": [mine.id, bobs.id]}],
        next_steps=[HER_STEP, "Pick a picnic date"],
        next_step_idea_ids=[mine.id, bobs.id],
        closed_at=now,
        expires_at=now + timedelta(days=30),
    )
    await bot.chorus.brainstorms.summary_reply(await store.get_brainstorm(session.id))
    return session.id


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_bot(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestBot]:
    env = {"CHORUS_STORE__URL": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    bot = await make_bot(settings_for(tmp_path / "home", **env))
    yield bot
    await bot.chorus.close()


async def _her_drop_channel(bot: TestBot) -> None:
    """Drops enabled in the terminal channel by the person who will be forgotten."""
    async with bot.store.session() as session, session.begin():
        session.add(
            DropChannel(
                key="terminal:local:terminal",
                platform="terminal",
                workspace="local",
                channel="terminal",
                kinds=["prompt"],
                cadence="daily",
                time="18:00",
                tz="UTC",
                topics=["life"],
                planner={},
                enabled_by=FORGOTTEN,
            )
        )


async def test_after_forget_no_table_and_no_file_holds_anything_of_that_person(any_bot: TestBot) -> None:
    bot = any_bot
    await bot.one(f"/create slogan {HER_PROMPT}", as_user=FORGOTTEN)
    built_on_hers = await bot.say("s", as_user="bob")  # Bob's shorter version of her result
    bob_text = built_on_hers[-1].parts
    await bot.say("+", as_user="bob")
    await bot.one("/create slogan a riverside bakery", as_user="bob")
    await bot.say("+", as_user=FORGOTTEN)
    await bot.say("make it quieter", as_user=FORGOTTEN)  # her refinement of Bob's result
    session_id = await _her_brainstorm(bot)
    await _her_drop_channel(bot)
    before = await _everything_stored(bot)
    assert all(marker in before for marker in MARKERS)  # the dump sees what it looks for

    await bot.one("/forget", as_user=FORGOTTEN)
    done = await bot.one("y", as_user=FORGOTTEN)

    assert reply_text(done).startswith("Done. Deleted")
    after = await _everything_stored(bot)
    assert [marker for marker in MARKERS if marker in after] == []
    # Bob's version keeps his text, and the summary keeps Bob's idea and its next step.
    assert bob_text[0] in after
    summary = await bot.store.get_brainstorm(session_id)
    assert summary is not None
    assert summary.next_steps == ("Pick a picnic date",)
    # The theme keeps Bob's idea, named from his words now.
    remaining = await bot.store.ideas(session_id)
    assert [idea.text for idea in remaining] == ["a picnic by the river"]
    assert [list(theme["idea_ids"]) for theme in summary.themes] == [[remaining[0].id]]
    assert "a picnic by the river" in after and "Pick a picnic date" in after


async def test_refining_a_version_built_on_a_forgotten_result_no_longer_sends_the_forgotten_prompt(
    bot: TestBot,
) -> None:
    await bot.one(f"/create slogan {HER_PROMPT}", as_user=FORGOTTEN)
    await bot.say("s", as_user="bob")
    await bot.one("/forget", as_user=FORGOTTEN)
    await bot.one("y", as_user=FORGOTTEN)

    history = reply_text(await bot.one("/history", as_user="bob"))
    await bot.say("make it rhyme", as_user="bob")

    assert HER_PROMPT not in history and "bob" in history
    sent = [message.content for request in bot.generator.requests[-1:] for message in request.messages]
    assert sent and not any(HER_PROMPT in content for content in sent)


async def test_a_stale_yes_after_no_asks_again_instead_of_deleting(bot: TestBot) -> None:
    await bot.one("/create slogan a tea shop", as_user="alice")
    await bot.one("/forget")
    stale_keys = dict(bot.keys)
    await bot.one("n")
    bot.keys = stale_keys  # the old question's buttons are still on screen

    again = await bot.one("y")

    assert "nothing was deleted" in reply_text(again) and "Delete it?" in reply_text(again)
    assert (await bot.store.user_data_counts("terminal", "alice"))["generations"] == 1
    done = await bot.one("y")  # the new question's yes
    assert reply_text(done).startswith("Done. Deleted 1 result.")


async def test_an_older_forget_question_is_replaced_by_the_newer_one(bot: TestBot) -> None:
    await bot.one("/create slogan a tea shop", as_user="alice")
    await bot.one("/forget")
    first_keys = dict(bot.keys)
    await bot.one("/forget")
    bot.keys = first_keys

    again = await bot.one("y")

    assert "Delete it?" in reply_text(again)
    assert (await bot.store.user_data_counts("terminal", "alice"))["generations"] == 1


async def test_an_expired_confirmation_asks_again(bot: TestBot) -> None:
    await bot.one("/create slogan a tea shop", as_user="alice")
    await bot.one("/forget")
    async with bot.store.engine.begin() as connection:
        await connection.execute(text("UPDATE forget_requests SET expires_at = :past"), {"past": datetime(2000, 1, 1)})

    again = await bot.one("y")

    assert "Delete it?" in reply_text(again)
    assert (await bot.store.user_data_counts("terminal", "alice"))["generations"] == 1


async def test_someone_who_only_started_a_brainstorm_and_enabled_drops_can_still_be_forgotten(bot: TestBot) -> None:
    # /mydata listed the session she started, yet /forget answered "nothing stored" and kept her name and topic.
    her = User(FORGOTTEN, FORGOTTEN)
    session = await bot.store.create_brainstorm(CONVERSATION, her, topic=HER_TOPIC, rounds=1, minutes=5, deadline=None)
    await bot.store.update_brainstorm(session.id, thread="t-1", thread_name=f"Brainstorm: {HER_TOPIC}")
    await _her_drop_channel(bot)
    assert FORGOTTEN in await _everything_stored(bot) and HER_TOPIC in await _everything_stored(bot)

    question = await bot.one("/forget", as_user=FORGOTTEN)
    assert "Delete it?" in reply_text(question)
    assert "1 brainstorm started, 1 drop channel enabled" in reply_text(question)
    done = await bot.one("y", as_user=FORGOTTEN)

    assert reply_text(done).startswith("Done. Deleted") and "1 brainstorm started" in reply_text(done)
    after = await _everything_stored(bot)
    assert FORGOTTEN not in after and HER_TOPIC not in after
    assert "nothing stored" in reply_text(await bot.one("/forget", as_user=FORGOTTEN))
