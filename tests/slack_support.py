"""Chorus on the FakeGenerator behind the real Slack adapter, wired to a FakeSlack; shared by the Slack tests."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fake_slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, form, sign

from adapters.slack.app import SlackAdapter
from adapters.slack.outbound import SlackLimits
from generation.fake import FakeGenerator
from support import TestBot, make_bot, settings_for, wait_until

MENTION_KEYS = ("<!channel>", "<!here>", "<!everyone>", "<@U", "<!subteam^")
# Slack's clock in tests: a Slack second lasts 50 ms, for Chorus' pacing, Retry-After and the fake's RateModel.
SCALE = 0.05
FAST_LIMITS = SlackLimits(scale=SCALE)


@pytest.fixture(name="fake")
async def fake_slack_fixture() -> AsyncIterator[FakeSlack]:
    """The `fake` fixture: a FakeSlack on 127.0.0.1 for one test (a test module imports it to use it)."""
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()


@dataclass
class SlackChorus:
    """One Chorus on Slack: the bot (store, generator), the adapter and the fake it talks to."""

    bot: TestBot
    adapter: SlackAdapter
    fake: FakeSlack
    http: aiohttp.ClientSession | None = None

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}/slack/events"

    async def post(
        self, body: str, content_type: str, *, headers: dict[str, str] | None = None, signed: bool = True
    ) -> tuple[int, str, float]:
        """POST as Slack does; returns (status, body, seconds until the answer)."""
        assert self.http is not None
        sent = {"Content-Type": content_type, **(sign(body) if signed else {}), **(headers or {})}
        started = time.monotonic()
        async with self.http.post(self.events_url, data=body.encode(), headers=sent) as response:
            text = await response.text()
            return response.status, text, time.monotonic() - started

    async def slash(self, body: dict[str, Any], **kwargs: Any) -> tuple[int, str, float]:
        return await self.post(form(body), "application/x-www-form-urlencoded", **kwargs)

    async def event(self, body: dict[str, Any], **kwargs: Any) -> tuple[int, str, float]:
        return await self.post(json.dumps(body), "application/json", **kwargs)

    async def interact(self, payload: dict[str, Any], **kwargs: Any) -> tuple[int, str, float]:
        return await self.post(form({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded", **kwargs)

    async def idle(self) -> None:
        """Wait until every event handler task (generation, store writes) has finished."""
        await wait_until(lambda: not self.adapter.tasks)

    async def close(self) -> None:
        await self.adapter.stop()
        if self.http is not None:
            await self.http.close()
        await self.bot.chorus.close()


def slack_env(fake: FakeSlack, mode: str = "http", **env: str) -> dict[str, str]:
    return {
        "CHORUS_SLACK__MODE": mode,
        "CHORUS_SLACK__API_BASE_URL": fake.api_url,
        "CHORUS_SLACK__HOST": "127.0.0.1",
        "CHORUS_SLACK__PORT": "0",
        "CHORUS_SLACK__ADMINS": '["U0ADMIN"]',
        "CHORUS_LIMITS__STREAM_EDIT_INTERVAL_S": "0.2",
        **env,
    }


SECRETS = {
    "CHORUS_SLACK_BOT_TOKEN": BOT_TOKEN,
    "CHORUS_SLACK_APP_TOKEN": APP_TOKEN,
    "CHORUS_SLACK_SIGNING_SECRET": SIGNING_SECRET,
}


async def start_slack(
    home: Path,
    fake: FakeSlack,
    *,
    mode: str = "http",
    generator: FakeGenerator | None = None,
    secrets: dict[str, str] | None = None,
    limits: SlackLimits = FAST_LIMITS,
    **env: str,
) -> SlackChorus:
    settings = settings_for(home, **slack_env(fake, mode, **env))
    bot = await make_bot(settings, generator or FakeGenerator(delay_s=0.01))
    adapter = SlackAdapter(bot.chorus, env=secrets or SECRETS, limits=limits)
    await adapter.start()
    return SlackChorus(bot, adapter, fake, aiohttp.ClientSession() if mode == "http" else None)


def block_texts(blocks: list[dict[str, Any]]) -> str:
    """All mrkdwn/plain text in a message's blocks, joined."""
    found: list[str] = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        for element in block.get("elements", []):
            if isinstance(element.get("text"), str):
                found.append(element["text"])
            elif isinstance(element.get("text"), dict):
                found.append(element["text"]["text"])
    return "\n".join(found)


def elements(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The interactive elements (buttons, selects) of a message body, in order."""
    return [e for block in body.get("blocks") or [] if block.get("type") == "actions" for e in block["elements"]]


def has_actions(body: dict[str, Any]) -> bool:
    return any(block.get("type") == "actions" for block in body.get("blocks") or [])


def final_updates(fake: FakeSlack) -> list[dict[str, Any]]:
    """Bodies of the calls that delivered a finished reply (it carries the result's buttons), in order: mostly the
    chat.update of its placeholder, or a chat.postMessage when the result was ready before its placeholder was
    posted (then `ts` and `channel` are filled in from Slack's answer)."""
    finished: list[dict[str, Any]] = []
    for call in fake.calls:
        if call.method == "chat.update" and call.response.get("ok") and has_actions(call.body):
            finished.append(call.body)
        elif call.method == "chat.postMessage" and call.response.get("ok") and has_actions(call.body):
            finished.append({**call.body, "ts": call.response["ts"], "channel": call.response["channel"]})
    return finished


def results(fake: FakeSlack) -> list[dict[str, Any]]:
    """The messages in Slack that show a finished result (they carry its buttons), however they got there: an edited
    placeholder, or a new message when the result was ready before its placeholder's turn came."""
    return [message for message in fake.messages.values() if has_actions(message)]
