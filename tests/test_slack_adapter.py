"""The Slack adapter end to end: real slack-bolt and slack_sdk against a fake Slack on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_slack import TEAM, FakeSlack, slash_body
from slack_support import SlackChorus, block_texts, elements, final_updates, has_actions, start_slack

from bots.events import Conversation
from generation.fake import FakeGenerator
from support import wait_until

GENERAL = Conversation("slack", TEAM, "C0GENERAL")
LONG = " ".join(f"word{i}" for i in range(24))


def long_script(request) -> str:
    return LONG


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def slack(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[SlackChorus]:
    chorus = await start_slack(tmp_path, fake, generator=FakeGenerator(long_script, delay_s=0.03))
    yield chorus
    await chorus.close()


async def test_slash_command_acks_at_once_then_streams_into_a_placeholder(slack: SlackChorus) -> None:
    fake = slack.fake
    status, body, elapsed = await slack.slash(slash_body("/create", "slogan a bookstore cafe --tone playful --n 2"))
    assert status == 200 and body == ""
    assert elapsed < 3.0
    await wait_until(lambda: len(final_updates(fake)) == 1)
    await slack.idle()

    placeholder = fake.answered("chat.postMessage")
    assert len(placeholder) == 1 and not has_actions(placeholder[0].body)
    assert placeholder[0].body["channel"] == "C0GENERAL"
    updates = fake.answered("chat.update")
    progress = updates[:-1]
    assert progress, "the text should have been shown while it streamed"
    gaps = [b.at - a.at for a, b in zip([placeholder[0], *progress], progress, strict=False)]
    assert min(gaps) >= 0.2 * 0.9, gaps  # throttled to limits.stream_edit_interval_s

    final = updates[-1].body
    assert final["ts"] == placeholder[0].response["ts"]
    text = block_texts(final["blocks"])
    assert "1. word0" in text and "2. word0" in text and "word23" in text
    labels = [e["text"]["text"] for e in elements(final) if e["type"] == "button"]
    assert labels == ["Regenerate", "More like this", "Shorter", "Longer", "👍", "👎"]
    select = [e for e in elements(final) if e["type"] == "static_select"]
    assert [o["text"]["text"] for o in select[0]["options"]][:2] == ["neutral", "playful"]

    record = await slack.bot.store.latest_generation(GENERAL)
    assert record is not None and record.message_ref == f"C0GENERAL:{final['ts']}"
    assert record.user.id == "U0ALICE" and record.tone == "playful" and len(record.variants) == 2
