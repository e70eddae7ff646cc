"""A several-variant result offers a control per variant; picking "#2 · Shorter" reworks variant 2 and keeps the
others. Through real discord.py and slack-bolt against the fake platforms on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_slack import TEAM, FakeSlack, block_actions, find_element, slash_body
from slack_support import (
    SlackChorus,
    block_texts,
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    final_updates,
    start_slack,
)
from test_discord_adapter import Harness, custom_ids, latest_with_ref, start_harness, stop_harness

from adapters.terminal.render import render_actions
from bots.events import Conversation
from bots.feedback import result_actions
from generation.fake import FakeGenerator
from generation.types import GenerationRequest
from support import wait_until

LONG = "Warm bread, slow coffee, and a chair by the window for you."


def script(request: GenerationRequest) -> str:
    """Distinct slogans for a /create; a shorter version of the variant in context for a refinement."""
    last = next((m.content for m in reversed(request.messages) if m.role == "assistant"), "")
    if request.messages[-1].content.startswith("Make it shorter"):
        return " ".join(last.split()[:4]).rstrip(",.") + "."
    return f"{LONG} Number {request.seed}."


def _selects(body: dict) -> list[dict]:
    return [c for row in body.get("components", []) for c in row["components"] if c["type"] == 3]


@pytest.fixture
async def discord_bot(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path, FakeGenerator(script, delay_s=0.01))
    yield harness
    await stop_harness(harness)


async def test_discord_variant_select_reworks_only_that_variant(discord_bot: Harness) -> None:
    bot = discord_bot
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a night-owl bakery", "n": 3})
    final = await bot.finished(payload["token"])
    v1 = await latest_with_ref(bot)
    variant_select = next(s for s in _selects(final) if s["placeholder"].startswith("Rework one variant"))
    labels = [o["label"] for o in variant_select["options"]]
    assert "#2 · Shorter" in labels and "#3 · Regenerate" in labels and len(labels) == 9
    picked = next(o["value"] for o in variant_select["options"] if o["label"] == "#2 · Shorter")

    click = await bot.fake.click(v1.message_ref, variant_select["custom_id"], values=[picked])
    v2_body = await bot.finished(click["token"])
    assert v2_body["embeds"][0]["title"] == "slogan · v2 of 2 · #2 shorter"
    v2 = await latest_with_ref(bot, version=2)
    assert v2.variants[0] == v1.variants[0] and v2.variants[2] == v1.variants[2]
    assert v2.variants[1] != v1.variants[1] and len(v2.variants[1].split()) < len(v1.variants[1].split())
    assert bot.generator.requests[-1].messages[-2].content == v1.variants[1], "built on variant 2 alone"
    assert any(cid.startswith("chorus::variant:") for cid in custom_ids(v2_body)), "v2 offers it again"


async def test_one_variant_results_offer_no_variant_select(discord_bot: Harness) -> None:
    payload = await discord_bot.fake.slash("create", {"kind": "slogan", "prompt": "a night-owl bakery"})
    final = await discord_bot.finished(payload["token"])
    assert not any(cid.startswith("chorus::variant:") for cid in custom_ids(final))


@pytest.fixture
async def slack(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[SlackChorus]:
    chorus = await start_slack(tmp_path, fake, generator=FakeGenerator(script, delay_s=0.01))
    yield chorus
    await chorus.close()


async def test_slack_variant_select_reworks_only_that_variant(slack: SlackChorus) -> None:
    await slack.slash(slash_body("/create", "slogan a bookstore cafe --n 3"))
    await wait_until(lambda: len(final_updates(slack.fake)) == 1)
    await slack.idle()
    final = final_updates(slack.fake)[-1]
    v1_message = slack.fake.messages[(final["channel"], final["ts"])]
    v1 = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL"))
    assert v1 is not None and len(v1.variants) == 3

    select = find_element(v1_message, "chorus:variant")
    assert select["type"] == "static_select" and select["placeholder"]["text"].startswith("Rework one variant")
    choice = next(o for o in select["options"] if o["text"]["text"] == "#2 · Shorter")
    await slack.interact(block_actions(v1_message, {**select, "selected_option": choice}))
    await wait_until(lambda: any("#2 shorter" in block_texts(b["blocks"]) for b in final_updates(slack.fake)))
    await slack.idle()
    v2 = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL", v1_message["ts"]))
    assert v2 is not None and v2.version == 2 and v2.instruction == "#2 shorter"
    assert v2.variants[0] == v1.variants[0] and v2.variants[2] == v1.variants[2]
    assert len(v2.variants[1].split()) < len(v1.variants[1].split())


def test_the_terminal_shows_how_to_rework_one_variant() -> None:
    assert "[2 s] one variant" in render_actions(result_actions(7, variants=3))
    assert "one variant" not in render_actions(result_actions(7))
