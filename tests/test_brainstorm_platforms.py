"""Brainstorm sessions end to end on Discord and Slack: the real discord.py / slack-bolt against their fakes, Chorus
on the scripted FakeGenerator and the deterministic WordEmbedder of test_brainstorm.py, a real SQLite store."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_discord import BOT_ID, CHANNEL_ID, GUILD_ID, Recorded, user_payload
from fake_slack import BOT_ID as SLACK_BOT_ID
from fake_slack import BOT_USER as SLACK_BOT_USER
from fake_slack import (
    FakeSlack,
    block_actions,
    event_callback,
    find_element,
    message_changed_event,
    message_deleted_event,
    message_event,
    reaction_event,
    slash_body,
    view_submission,
)
from slack_support import SlackChorus, block_texts, start_slack
from test_brainstorm import WordEmbedder, script
from test_discord_adapter import Harness, custom_ids, ephemeral_answer, start_harness, stop_harness

from adapters.discord.translate import decode_custom_id
from adapters.slack.translate import ASK_CALLBACK
from generation.fake import FakeGenerator
from support import wait_until

ALICE = ("940000000000000001", "alice")
BOB = ("940000000000000002", "bob")
CAROL = ("940000000000000003", "carol")
SEEDS = 4  # brainstorm.seed_ideas in config/default.toml


# -- Discord ---------------------------------------------------------------------------------------------------------


def _thread_posts(fake: Any, thread: str) -> list[Recorded]:
    return fake.find("POST", rf"/channels/{thread}/messages$")


def _upload(fake: Any, token: str) -> Recorded | None:
    """The multipart request that answered interaction `token` with a file (callback, edit or follow-up)."""
    for record in fake.requests:
        if token in record.path and record.headers.get("Content-Type", "").startswith("multipart/"):
            return record
    return None


def _text(body: dict) -> str:
    embeds = body.get("embeds") or []
    return "\n".join(
        [body.get("content") or ""] + [f"{e.get('title', '')}\n{e.get('description', '')}" for e in embeds]
    )


async def _discord(tmp_path: Path, **env: str) -> Harness:
    harness = await start_harness(tmp_path, FakeGenerator(script), **env)
    harness.chorus.embedder = WordEmbedder()
    return harness


@pytest.fixture
async def discord_bot(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await _discord(tmp_path, CHORUS_DISCORD__MESSAGE_CONTENT_INTENT="true")
    yield harness
    await stop_harness(harness)


async def _start_discord_session(bot: Harness) -> tuple[str, str]:
    """/brainstorm by alice; returns (kickoff message id, thread id) once the seed ideas are in the thread."""
    payload = await bot.fake.slash("brainstorm", {"text": "the team offsite --minutes 30"}, user=ALICE)
    await wait_until(lambda: len(bot.fake.threads) == 1)
    thread = next(iter(bot.fake.threads))
    await wait_until(lambda: len(_thread_posts(bot.fake, thread)) == SEEDS)
    return bot.fake.originals[payload["token"]], thread


async def _click(bot: Harness, message: dict, custom_id: str, user: tuple[str, str]) -> dict:
    """A button click as Discord sends it from wherever the message is (the channel or the thread)."""
    data = {"custom_id": custom_id, "component_type": 2}
    return await bot.fake.interact(3, data, user=user, message=message, channel_id=message["channel_id"])


async def _modal(bot: Harness, message: dict, custom_id: str, text: str, user: tuple[str, str]) -> dict:
    """Click an asking button, check the modal opens, submit `text`; returns the submission payload."""
    click = await _click(bot, message, custom_id, user)
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{click['id']}/")))
    modal = bot.fake.find("POST", rf"/interactions/{click['id']}/")[0].body
    assert modal["type"] == 9
    return await bot.fake.submit_modal(modal["data"]["custom_id"], text, user=user)


async def _react(bot: Harness, message: dict, emoji: str, user: tuple[str, str]) -> None:
    """MESSAGE_REACTION_ADD in the message's own channel (a thread), as Discord sends it."""
    await bot.fake.dispatch(
        "MESSAGE_REACTION_ADD",
        {
            "user_id": user[0],
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "guild_id": GUILD_ID,
            "emoji": {"id": None, "name": emoji},
            "type": 0,
            "burst": False,
            "message_author_id": message["author"]["id"],
            "member": {
                "user": user_payload(*user),
                "roles": [],
                "joined_at": "2026-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
            },
        },
    )


async def _votes(bot: Harness, number: int) -> int:
    session = (await bot.chorus.store.open_brainstorms())[0]
    idea = await bot.chorus.store.find_idea(session.id, number=number)
    assert idea is not None
    voters = await bot.chorus.store.voters(session.id)
    return len(voters.get(idea.id, frozenset()))


def _button(message: dict, action: str) -> str:
    return next(cid for cid in custom_ids(message) if f":{action}:" in cid)


async def test_discord_brainstorm_started_inside_a_thread_is_refused_privately(discord_bot: Harness) -> None:
    # Discord has no threads inside threads: the kickoff was posted, opening its thread failed, and the user got
    # "Something went wrong" under a kickoff whose buttons led nowhere.
    bot = discord_bot
    thread = "930000000000000077"
    bot.fake.threads[thread] = {
        "id": thread,
        "type": 11,
        "guild_id": GUILD_ID,
        "parent_id": CHANNEL_ID,
        "owner_id": ALICE[0],
        "name": "offsite planning",
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": "2026-01-01T00:00:00+00:00",
            "locked": False,
        },
        "message_count": 0,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "flags": 0,
    }
    payload = await bot.fake.slash("brainstorm", {"text": "the team offsite"}, user=ALICE, channel_id=thread)

    answer = await ephemeral_answer(bot, payload)

    assert "/brainstorm in the channel" in answer["content"] and "went wrong" not in answer["content"]
    assert len(bot.fake.threads) == 1 and not bot.fake.find("POST", r"/threads$")
    assert await bot.chorus.store.open_brainstorms() == []
    assert not [m for m in bot.fake.messages.values() if "Brainstorm" in _text(m)]


async def test_discord_brainstorm_where_chorus_may_not_open_threads_says_which_permission(
    discord_bot: Harness,
) -> None:
    # Discord answers 403 (Missing Access / Missing Permissions) when the bot lacks Create Public Threads there.
    bot = discord_bot
    bot.fake.fail("POST", r"/threads$", status=403)
    payload = await bot.fake.slash("brainstorm", {"text": "the team offsite"}, user=ALICE)
    follow_ups = rf"/webhooks/\d+/{payload['token']}$"

    await wait_until(lambda: bool(bot.fake.find("POST", follow_ups)))
    answer = bot.fake.find("POST", follow_ups)[0].body

    assert answer["flags"] & 64, "the answer is private"
    assert "Create Public Threads" in answer["content"] and "went wrong" not in answer["content"]
    assert await bot.chorus.store.open_brainstorms() == []


async def test_discord_brainstorm_topics_and_ideas_never_ping_anyone(discord_bot: Harness) -> None:
    bot = discord_bot
    await bot.fake.slash("brainstorm", {"text": "a party for @everyone --rounds 1"}, user=ALICE)
    await wait_until(lambda: len(bot.fake.threads) == 1)
    thread = next(iter(bot.fake.threads))
    await wait_until(lambda: len(_thread_posts(bot.fake, thread)) == SEEDS)
    await bot.fake.user_message("ping <@123> and @here about cake", user=BOB, channel_id=thread)
    await wait_until(lambda: any("Idea #5 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    sent = json.dumps([record.body for record in bot.fake.requests], ensure_ascii=False, default=str)
    assert "party for @\u200beveryone" in sent  # the topic is shown, defused
    for ping in ("@everyone", "@here", "<@123>"):
        assert ping not in sent


async def test_discord_brainstorm_from_kickoff_to_summary(discord_bot: Harness) -> None:
    bot = discord_bot
    kickoff_id, thread = await _start_discord_session(bot)
    kickoff = bot.fake.messages[kickoff_id]
    # The kickoff in the channel, a thread on it, and each seed idea its own message in the thread with a Vote button.
    assert kickoff["embeds"][0]["title"] == "💡 Brainstorm: the team offsite"
    created = bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages/{kickoff_id}/threads")
    assert created and created[0].body["name"] == "Brainstorm: the team offsite"
    assert [decode_custom_id(c)[1] for c in custom_ids(kickoff)] == [
        "brainstorm_idea",
        "brainstorm_vote",
        "brainstorm_next",
        "brainstorm_wrap",
    ]
    seeds = [bot.fake.messages[_id] for _id in bot.fake.messages if bot.fake.messages[_id]["channel_id"] == thread]
    assert [m["content"].split(":")[0] for m in seeds] == [f"Seed idea #{n}" for n in range(1, SEEDS + 1)]
    assert all(any(":brainstorm_vote:" in cid for cid in custom_ids(m)) for m in seeds)

    # Two people post ideas in the thread (no mention needed in a Chorus thread); a throw-away "lol" is not one.
    bob_idea = await bot.fake.user_message("kayaking on the lake with a guide", user=BOB, channel_id=thread)
    await wait_until(lambda: any("Idea #5 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    noted = next(r.body for r in _thread_posts(bot.fake, thread) if "Idea #5 noted" in _text(r.body))
    assert str(noted["message_reference"]["message_id"]) == bob_idea["id"]  # a reply to bob's message
    lol = await bot.fake.user_message("lol", user=CAROL, channel_id=thread)
    await bot.fake.user_message("a pasta cooking class for everyone", user=CAROL, channel_id=thread)
    await wait_until(lambda: any("Idea #6 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    replied_to = [
        str((r.body.get("message_reference") or {}).get("message_id")) for r in _thread_posts(bot.fake, thread)
    ]
    assert lol["id"] not in replied_to  # "lol" is chat: no answer
    # 💡 Add idea → a modal → the idea, acknowledged privately.
    submit = await _modal(bot, kickoff, _button(kickoff, "brainstorm_idea"), "cooking pasta and pizza together", ALICE)
    assert "Idea #7 noted" in (await ephemeral_answer(bot, submit))["content"]

    # Votes: 👍 reactions (any skin tone), the Vote button on a seed, the Vote modal with a number; one each.
    await _react(bot, bob_idea, "👍🏽", CAROL)
    await _react(bot, bob_idea, "👍", ALICE)
    seed_one = seeds[0]
    click = await _click(bot, seed_one, _button(seed_one, "brainstorm_vote"), BOB)
    assert "Vote counted for #1" in (await ephemeral_answer(bot, click))["content"]
    vote = await _modal(bot, kickoff, _button(kickoff, "brainstorm_vote"), "6", BOB)
    assert "Vote counted for #6" in (await ephemeral_answer(bot, vote))["content"]
    own = await _modal(bot, kickoff, _button(kickoff, "brainstorm_vote"), "6", CAROL)
    assert "your own idea" in (await ephemeral_answer(bot, own))["content"]
    await _wait_votes(bot, {5: 2, 1: 1, 6: 1})

    # ⏭ Next round: Themes in the thread, then yes-and ideas and round 2.
    before = len(_thread_posts(bot.fake, thread))
    nxt = await _click(bot, kickoff, _button(kickoff, "brainstorm_next"), BOB)
    await wait_until(lambda: any("Round 2 of 2 is open" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    posted = [r.body for r in _thread_posts(bot.fake, thread)[before:]]
    themes = next(body for body in posted if "Themes — round 1 of 2" in _text(body))
    assert "Pasta cooking" in _text(themes) and "Kayaking on the lake" in _text(themes)
    assert "#5 kayaking on the lake with a guide — bob · 2 votes" in _text(themes)
    assert sum("Yes, and…" in _text(body) for body in posted) == 3
    await _no_stale_placeholder(bot, nxt)

    # ✅ Wrap up by someone who neither started it nor moderates: refused, privately.
    refused = await _click(bot, kickoff, _button(kickoff, "brainstorm_wrap"), CAROL)
    assert "Only alice" in (await ephemeral_answer(bot, refused))["content"]
    assert (await bot.chorus.store.open_brainstorms())[0].is_open
    # By the starter: the summary in the thread, with the Markdown file uploaded.
    wrap = await _click(bot, kickoff, _button(kickoff, "brainstorm_wrap"), ALICE)
    await wait_until(lambda: any("Brainstorm summary" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    summary = next(r for r in _thread_posts(bot.fake, thread) if "Brainstorm summary" in _text(r.body))
    assert summary.headers["Content-Type"].startswith("multipart/form-data")
    assert summary.body["attachments"][0]["filename"] == "brainstorm-1-summary.md"
    text = _text(summary.body)
    assert "1. #5 kayaking on the lake with a guide — bob · 2 votes" in text
    assert "carol (2 ideas)" in text or "carol (1 idea)" in text
    assert "bob (1 idea)" in text and "alice (1 idea)" in text
    await _no_stale_placeholder(bot, wrap)
    assert await bot.chorus.store.open_brainstorms() == []
    # /brainstorm summary in the channel shows it again, file and all.
    again = await bot.fake.slash("brainstorm", {"text": "summary"}, user=CAROL)
    await wait_until(lambda: bool(_upload(bot.fake, again["token"])))
    shown = _upload(bot.fake, again["token"])
    assert shown.body["attachments"][0]["filename"] == "brainstorm-1-summary.md"
    assert "1. #5 kayaking on the lake with a guide — bob · 2 votes" in _text(shown.body)


async def _wait_votes(bot: Harness, expected: dict[int, int]) -> None:
    async def counts() -> dict[int, int]:
        return {number: await _votes(bot, number) for number in expected}

    for _ in range(400):
        if await counts() == expected:
            return
        await wait_until(lambda: True)
    assert await counts() == expected


async def _no_stale_placeholder(bot: Harness, payload: dict) -> None:
    """A deferred button leaves no "Chorus is thinking…" behind: its placeholder is answered or deleted."""
    token = payload["token"]
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{payload['id']}/")))
    callback = bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0].body
    if callback["type"] != 5:
        return
    await wait_until(
        lambda: (
            bool(bot.fake.find("DELETE", rf"/webhooks/\d+/{token}/messages/@original"))
            or bool(bot.fake.find("PATCH", rf"/webhooks/\d+/{token}/messages/@original"))
        )
    )


# -- Slack -----------------------------------------------------------------------------------------------------------

SLACK_CHANNEL = "C0GENERAL"


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def slack(tmp_path: Path, slack_fake: FakeSlack) -> AsyncIterator[SlackChorus]:
    chorus = await start_slack(tmp_path, slack_fake, generator=FakeGenerator(script))
    chorus.bot.chorus.embedder = WordEmbedder()
    yield chorus
    await chorus.close()


def _slack_message(fake: FakeSlack, call: Any) -> dict:
    return fake.messages[(call.response["channel"], call.response["ts"])]


def _ephemerals(fake: FakeSlack, user: str) -> list[str]:
    return [c.body["text"] for c in fake.answered("chat.postEphemeral") if c.body.get("user") == user]


async def _slack_modal(slack: SlackChorus, message: dict, action_id: str, text: str, user: str) -> None:
    """Click an asking button in `message`, check a modal opens, submit `text` in it."""
    opened = len(slack.fake.answered("views.open"))
    await slack.interact(block_actions(message, find_element(message, action_id), user=user))
    await wait_until(lambda: len(slack.fake.answered("views.open")) == opened + 1)
    modal = slack.fake.answered("views.open")[-1].body["view"]
    assert modal["callback_id"] == ASK_CALLBACK
    answer = {"answer": {"text": {"type": "plain_text_input", "value": text}}}
    await slack.interact(view_submission(ASK_CALLBACK, modal["private_metadata"], answer, user=user))


async def test_slack_brainstorm_from_kickoff_to_summary(slack: SlackChorus) -> None:
    fake = slack.fake
    await slack.slash(slash_body("/brainstorm", "the team offsite --minutes 30"))
    await wait_until(lambda: len(fake.answered("chat.postMessage")) == 1 + SEEDS)
    await slack.idle()
    posts = fake.answered("chat.postMessage")
    kickoff = _slack_message(fake, posts[0])
    thread = kickoff["ts"]
    # The kickoff in the channel; the seed ideas each their own reply in its thread, with a Vote button.
    assert "thread_ts" not in posts[0].body and "💡 Brainstorm: the team offsite" in block_texts(kickoff["blocks"])
    assert [c.body.get("thread_ts") for c in posts[1:]] == [thread] * SEEDS
    assert [c.body["text"].split(":")[0] for c in posts[1:]] == [f"Seed idea #{n}" for n in range(1, SEEDS + 1)]
    seed_one = _slack_message(fake, posts[1])
    find_element(seed_one, "chorus:brainstorm_vote")

    # Ideas as thread replies (a throw-away "lol" is not one), acknowledged privately in the thread.
    bob_ts = "1800000000.000101"
    await slack.event(
        event_callback(message_event("kayaking on the lake with a guide", user="U0BOB", ts=bob_ts, thread_ts=thread))
    )
    await wait_until(lambda: any("Idea #5 noted" in text for text in _ephemerals(fake, "U0BOB")))
    await slack.event(event_callback(message_event("lol", user="U0CAROL", thread_ts=thread)))
    await slack.idle()
    await slack.event(
        event_callback(message_event("a pasta cooking class for everyone", user="U0CAROL", thread_ts=thread))
    )
    await wait_until(lambda: any("Idea #6 noted" in text for text in _ephemerals(fake, "U0CAROL")))
    assert len(_ephemerals(fake, "U0CAROL")) == 1  # "lol" got no answer: it is chat, not an idea
    noted = next(c.body for c in fake.answered("chat.postEphemeral") if "Idea #5 noted" in c.body["text"])
    assert noted["thread_ts"] == thread and noted["channel"] == SLACK_CHANNEL
    # 💡 Add idea → a modal → the idea.
    await _slack_modal(slack, kickoff, "chorus:brainstorm_idea:ask", "cooking pasta and pizza together", "U0ALICE")
    await wait_until(lambda: any("Idea #7 noted" in text for text in _ephemerals(fake, "U0ALICE")))

    # Votes: :+1: and :thumbsup: (with a skin tone) reactions, the Vote button, the Vote modal; one each.
    await slack.event(event_callback(reaction_event("+1", SLACK_CHANNEL, bob_ts, user="U0CAROL")))
    await slack.event(event_callback(reaction_event("thumbsup::skin-tone-3", SLACK_CHANNEL, bob_ts, user="U0ALICE")))
    await slack.interact(block_actions(seed_one, find_element(seed_one, "chorus:brainstorm_vote"), user="U0BOB"))
    await wait_until(lambda: any("Vote counted for #1" in text for text in _ephemerals(fake, "U0BOB")))
    await _slack_modal(slack, kickoff, "chorus:brainstorm_vote:ask", "6", "U0BOB")
    await wait_until(lambda: any("Vote counted for #6" in text for text in _ephemerals(fake, "U0BOB")))
    await _slack_modal(slack, kickoff, "chorus:brainstorm_vote:ask", "6", "U0CAROL")
    await wait_until(lambda: any("your own idea" in text for text in _ephemerals(fake, "U0CAROL")))
    await slack.idle()

    # ⏭ Next round: Themes in the thread, then yes-and ideas and round 2.
    before = len(fake.answered("chat.postMessage"))
    await slack.interact(block_actions(kickoff, find_element(kickoff, "chorus:brainstorm_next"), user="U0BOB"))
    await wait_until(lambda: any("Round 2 of 2 is open" in c.body["text"] for c in fake.answered("chat.postMessage")))
    await slack.idle()
    posted = fake.answered("chat.postMessage")[before:]
    assert all(c.body.get("thread_ts") == thread for c in posted)
    themes = next(block_texts(c.body["blocks"]) for c in posted if "Themes — round 1 of 2" in c.body["text"])
    assert "Pasta cooking" in themes and "Kayaking on the lake" in themes
    assert "#5 kayaking on the lake with a guide — bob · 2 votes" in themes  # named via users.info, never <@U0BOB>
    assert sum("Yes, and…" in c.body["text"] for c in posted) == 3

    # ✅ Wrap up by someone who neither started it nor is an admin: refused, privately.
    await slack.interact(block_actions(kickoff, find_element(kickoff, "chorus:brainstorm_wrap"), user="U0CAROL"))
    await wait_until(lambda: any("Only alice" in text for text in _ephemerals(fake, "U0CAROL")))
    # By the starter: the summary in the thread, and the Markdown file uploaded into it.
    await slack.interact(block_actions(kickoff, find_element(kickoff, "chorus:brainstorm_wrap"), user="U0ALICE"))
    await wait_until(lambda: bool(fake.answered("files.completeUploadExternal")))
    await slack.idle()
    summary = next(c.body for c in fake.answered("chat.postMessage") if "Brainstorm summary" in c.body["text"])
    assert summary["thread_ts"] == thread
    text = block_texts(summary["blocks"])
    assert "1. #5 kayaking on the lake with a guide — bob · 2 votes" in text
    assert re.search(r"## Contributors\n\S+ \(\d ideas?\), \S+ \(\d ideas?\), \S+ \(\d ideas?\)", text)
    assert {"alice (1 idea)", "bob (1 idea)", "carol (1 idea)"} == set(re.findall(r"\b[a-z]+ \(1 idea\)", text))
    assert "<@U" not in text
    # Names are looked up once per person, and not at all for alice, whose name came with her /brainstorm.
    assert [c.body["user"] for c in fake.answered("users.info")] == ["U0BOB", "U0CAROL"]
    upload = fake.answered("files.getUploadURLExternal")[0].body
    assert upload["filename"] == "brainstorm-1-summary.md"
    complete = fake.answered("files.completeUploadExternal")[0].body
    assert complete["channel_id"] == SLACK_CHANNEL and complete["thread_ts"] == thread
    assert await slack.bot.store.open_brainstorms() == []
    # /brainstorm summary in the channel shows it again, with the file.
    await slack.slash(slash_body("/brainstorm", "summary", user="U0CAROL"))
    await wait_until(lambda: len(fake.answered("files.completeUploadExternal")) == 2)
    again = fake.answered("chat.postMessage")[-1].body
    assert "Brainstorm summary" in again["text"] and "thread_ts" not in again
    assert fake.answered("files.getUploadURLExternal")[1].body["filename"] == "brainstorm-1-summary.md"


async def test_discord_without_the_message_content_intent_ideas_come_by_mention_or_the_button(
    tmp_path: Path,
) -> None:
    bot = await _discord(tmp_path)  # message_content_intent = false, the default
    try:
        _, thread = await _start_discord_session(bot)
        # Discord then sends a thread message that does not mention Chorus with empty content.
        await bot.fake.user_message("", user=BOB, channel_id=thread)
        await wait_until(lambda: any("could not read" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
        hint = next(r.body for r in _thread_posts(bot.fake, thread) if "could not read" in _text(r.body))
        assert "Mention @Chorus" in hint["content"] and "💡 Add idea" in hint["content"]
        await bot.fake.user_message("", user=BOB, channel_id=thread)  # told once, not at every message
        said = await bot.fake.user_message(
            f"<@{BOT_ID}> kayaking on the lake with a guide", user=BOB, channel_id=thread, mention=True
        )
        await wait_until(lambda: any("Idea #5 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
        assert sum("could not read" in _text(r.body) for r in _thread_posts(bot.fake, thread)) == 1
        session = (await bot.chorus.store.open_brainstorms())[0]
        idea = await bot.chorus.store.find_idea(session.id, number=5)
        assert idea is not None and idea.text == "kayaking on the lake with a guide" and idea.user.name == "bob"
        assert idea.message_ref == said["id"]
    finally:
        await stop_harness(bot)


async def test_slack_ideas_are_credited_by_id_when_names_cannot_be_looked_up(slack: SlackChorus) -> None:
    fake = slack.fake
    fake.fail("users.info", error="missing_scope", times=5)  # an app installed before users:read was added
    await slack.slash(slash_body("/brainstorm", "a name for the cafe"))
    await wait_until(lambda: len(fake.answered("chat.postMessage")) == 1 + SEEDS)
    thread = fake.answered("chat.postMessage")[0].response["ts"]
    await slack.event(event_callback(message_event("the night owl", user="U0BOB", thread_ts=thread)))
    await wait_until(lambda: any("Idea #5 noted" in text for text in _ephemerals(fake, "U0BOB")))
    await slack.idle()
    session = (await slack.bot.store.open_brainstorms())[0]
    idea = await slack.bot.store.find_idea(session.id, number=5)
    assert idea is not None and idea.user.name == "U0BOB" and idea.text == "the night owl"
    await slack.event(event_callback(message_event("the early bird", user="U0BOB", thread_ts=thread)))
    await wait_until(lambda: any("Idea #6 noted" in text for text in _ephemerals(fake, "U0BOB")))
    assert len(fake.calls_to("users.info")) == 1  # a failed look-up is not repeated at every message


async def test_slack_an_edited_idea_takes_its_new_text_and_a_deleted_one_is_withdrawn(slack: SlackChorus) -> None:
    fake = slack.fake
    await slack.slash(slash_body("/brainstorm", "the team offsite --minutes 30"))
    await wait_until(lambda: len(fake.answered("chat.postMessage")) == 1 + SEEDS)
    posts = fake.answered("chat.postMessage")
    thread = posts[0].response["ts"]
    bob = message_event("kayking on the lak", user="U0BOB", ts="1800000000.000201", thread_ts=thread)
    carol = message_event("a pasta cooking class", user="U0CAROL", ts="1800000000.000202", thread_ts=thread)
    for said, number in ((bob, 5), (carol, 6)):
        await slack.event(event_callback(said))
        await wait_until(
            lambda n=number: any(f"Idea #{n} noted" in c.body["text"] for c in fake.answered("chat.postEphemeral"))
        )
    await slack.event(event_callback(reaction_event("+1", SLACK_CHANNEL, carol["ts"], user="U0ALICE")))
    await slack.idle()
    session = (await slack.bot.store.open_brainstorms())[0]
    await wait_until(lambda: slack.bot.store.voters(session.id))
    said_before = len(fake.answered("chat.postMessage")) + len(fake.answered("chat.postEphemeral"))

    # Before: Slack's message_changed and message_deleted events were dropped, and the typo and the regretted
    # idea (with its vote) went into Themes and the summary.
    await slack.event(event_callback(message_changed_event(bob, "kayaking on the lake with a guide")))
    await slack.event(event_callback(message_deleted_event(carol)))
    # Chorus' own posts are edited all the time (streaming); Slack reports those too, and they mean nothing.
    seed = fake.messages[(SLACK_CHANNEL, posts[1].response["ts"])]
    own = {**seed, "user": SLACK_BOT_USER, "bot_id": SLACK_BOT_ID, "channel": SLACK_CHANNEL, "thread_ts": thread}
    await slack.event(event_callback(message_changed_event(own, "Seed idea #1: rewritten")))

    async def settled() -> bool:
        ideas = {idea.number: idea.text for idea in await slack.bot.store.ideas(session.id)}
        return ideas.get(5) == "kayaking on the lake with a guide" and 6 not in ideas

    await wait_until(settled)
    await slack.idle()
    assert await slack.bot.store.voters(session.id) == {}
    seed_idea = await slack.bot.store.find_idea(session.id, number=1)
    assert seed_idea is not None and "rewritten" not in seed_idea.text
    # The thread stays quiet: nothing posted, publicly or privately, for an edit or a deletion.
    assert len(fake.answered("chat.postMessage")) + len(fake.answered("chat.postEphemeral")) == said_before

    before = len(fake.answered("chat.postMessage"))
    kickoff = _slack_message(fake, posts[0])
    await slack.interact(block_actions(kickoff, find_element(kickoff, "chorus:brainstorm_next"), user="U0BOB"))
    await wait_until(lambda: any("Round 2 of 2 is open" in c.body["text"] for c in fake.answered("chat.postMessage")))
    posted = fake.answered("chat.postMessage")[before:]
    themes = next(block_texts(c.body["blocks"]) for c in posted if "Themes — round 1 of 2" in c.body["text"])
    assert "#5 kayaking on the lake with a guide — bob" in themes
    assert "pasta" not in themes and "#6" not in themes


async def test_discord_an_edited_idea_takes_its_new_text_and_a_deleted_one_is_withdrawn(discord_bot: Harness) -> None:
    bot = discord_bot
    kickoff_id, thread = await _start_discord_session(bot)
    bob = await bot.fake.user_message("kayking on the lak", user=BOB, channel_id=thread)
    await wait_until(lambda: any("Idea #5 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    carol = await bot.fake.user_message("a pasta cooking class", user=CAROL, channel_id=thread)
    await wait_until(lambda: any("Idea #6 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    await _react(bot, carol, "👍", ALICE)
    await _wait_votes(bot, {6: 1})
    said_before = len(_thread_posts(bot.fake, thread))

    # Before: MESSAGE_UPDATE and MESSAGE_DELETE were never looked at, and the typo and the regretted idea (with its
    # vote) went into Themes and the summary.
    await bot.fake.edit_message(bob["id"], "kayaking on the lake with a guide")
    await bot.fake.delete_message(carol["id"])
    # Chorus edits its own posts all the time (streaming); Discord reports those too, and they mean nothing.
    seed_id = next(_id for _id, m in bot.fake.messages.items() if m["channel_id"] == thread)
    await bot.fake.edit_message(seed_id, "Seed idea #1: rewritten")
    session = (await bot.chorus.store.open_brainstorms())[0]

    async def settled() -> bool:
        ideas = {idea.number: idea.text for idea in await bot.chorus.store.ideas(session.id)}
        return ideas.get(5) == "kayaking on the lake with a guide" and 6 not in ideas

    await wait_until(settled)
    assert await _votes(bot, 6) == 0
    seed = await bot.chorus.store.find_idea(session.id, number=1)
    assert seed is not None and "rewritten" not in seed.text
    assert len(_thread_posts(bot.fake, thread)) == said_before  # the thread stays quiet

    kickoff = bot.fake.messages[kickoff_id]
    await _click(bot, kickoff, _button(kickoff, "brainstorm_next"), BOB)
    await wait_until(lambda: any("Round 2 of 2 is open" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
    themes = next(_text(r.body) for r in _thread_posts(bot.fake, thread) if "Themes — round 1 of 2" in _text(r.body))
    assert "#5 kayaking on the lake with a guide — bob" in themes
    assert "pasta" not in themes and "#6" not in themes


async def test_discord_without_the_message_content_intent_an_edit_with_withheld_content_keeps_the_idea(
    tmp_path: Path,
) -> None:
    bot = await _discord(tmp_path)  # message_content_intent = false, the default
    try:
        _, thread = await _start_discord_session(bot)
        said = await bot.fake.user_message(
            f"<@{BOT_ID}> kayaking on the lake", user=BOB, channel_id=thread, mention=True
        )
        await wait_until(lambda: any("Idea #5 noted" in _text(r.body) for r in _thread_posts(bot.fake, thread)))
        # The edit drops the mention, so Discord withholds its content: "" is not the person clearing the idea.
        await bot.fake.edit_message(said["id"], "")
        await _react(bot, said, "👍", ALICE)  # dispatched after the edit: a withdrawn idea would take no vote
        await _wait_votes(bot, {5: 1})
        session = (await bot.chorus.store.open_brainstorms())[0]
        idea = await bot.chorus.store.find_idea(session.id, number=5)
        assert idea is not None and (idea.source, idea.text) == ("person", "kayaking on the lake")
    finally:
        await stop_harness(bot)
