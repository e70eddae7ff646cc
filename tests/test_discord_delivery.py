"""Delivery on Discord under the rules that bite: follow-ups that replace a loading response, rate-limit buckets,
sustained 429s, outdated or unknown interactions, gateway resume and shutdown. Real discord.py against
fake_discord.py, Chorus on the FakeGenerator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_discord import RateLimits
from test_discord_adapter import Harness, latest_with_ref, start_harness, stop_harness

from support import wait_until


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path)
    harness.adapter.final_retry_s = 0.5
    yield harness
    await stop_harness(harness)


def result_on_screen(bot: Harness, token: str) -> dict | None:
    """The message the user sees for an interaction, once it carries the finished result (its buttons)."""
    message = bot.fake.visible(token)
    return message if message is not None and message.get("components") else None


async def test_a_429_storm_on_every_edit_leaves_the_result_on_screen_and_the_ref_on_it(bot: Harness) -> None:
    # Every edit of the loading response is refused, so the follow-up is what Discord turns into the result.
    bot.fake.fail("PATCH", r"/messages/@original", times=10_000, retry_after=0.01)
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "rainy day cinema"})
    token = payload["token"]
    await wait_until(lambda: result_on_screen(bot, token) is not None)
    record = await latest_with_ref(bot)
    message = bot.fake.messages.get(record.message_ref)
    assert message is not None, "the stored ref points at a deleted message"
    assert "rainy day cinema" in message["embeds"][0]["description"] and message["components"]
    await asyncio.sleep(0)  # nothing may delete it afterwards
    assert record.message_ref not in bot.fake.deleted


async def test_a_final_edit_refused_more_often_than_discordpy_retries_still_lands_in_place(bot: Harness) -> None:
    bot.adapter.final_retry_s = 10.0
    bot.generator.delay_s = 0.05
    # Only the final render (the one with buttons) is refused, 8 times: discord.py alone gives up after 5.
    bot.fake.fail(
        "PATCH", r"/messages/@original", times=8, retry_after=0.02, when=lambda body: bool(body.get("components"))
    )
    payload = await bot.fake.slash("create", {"kind": "story", "prompt": "a lighthouse keeper"})
    token = payload["token"]
    await wait_until(lambda: result_on_screen(bot, token) is not None)
    assert not bot.fake.find("POST", rf"/webhooks/\d+/{token}$"), "retried until delivered: no second message"
    record = await latest_with_ref(bot)
    assert record.message_ref == bot.fake.originals[token]


async def test_after_progress_a_storm_on_the_final_edit_leaves_exactly_one_result(bot: Harness) -> None:
    bot.generator.delay_s = 0.05
    payload = await bot.fake.slash("create", {"kind": "story", "prompt": "a lost kite"})
    token = payload["token"]
    await wait_until(lambda: bool(bot.originals(token)))
    bot.fake.fail("PATCH", rf"/webhooks/\d+/{token}/messages/@original", times=10_000, retry_after=0.01)
    record = await latest_with_ref(bot)
    shown = bot.fake.messages[record.message_ref]
    assert "a lost kite" in shown["embeds"][0]["description"] and shown["components"]
    half_written = bot.fake.originals[token]
    assert half_written != record.message_ref and half_written in bot.fake.deleted


def token_of(bot: Harness, interaction_id: str) -> str:
    callbacks = bot.fake.find("POST", rf"/interactions/{interaction_id}/[^/]+/callback")
    return callbacks[0].path.split("/")[3] if callbacks else ""


async def test_a_burst_in_one_channel_is_delivered_within_the_rate_limit_buckets(bot: Harness) -> None:
    bot.fake.limits = RateLimits()
    ids = await bot.fake.burst(8)
    await wait_until(lambda: all(result_on_screen(bot, token_of(bot, i)) is not None for i in ids), 60)
    assert bot.fake.violations == []
