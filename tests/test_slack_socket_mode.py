"""Socket Mode: the real slack_sdk SocketModeClient against the fake's WebSocket; acks, retries, reconnects."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack, event_callback, message_event, slash_body
from slack_support import (
    SlackChorus,
    block_texts,
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    final_updates,
    results,
    start_slack,
)

from generation.fake import FakeGenerator
from support import wait_until

WORDS = " ".join(f"w{i}" for i in range(20))


async def socket_chorus(home: Path, fake: FakeSlack, delay_s: float = 0.01) -> SlackChorus:
    slack = await start_slack(home, fake, mode="socket", generator=FakeGenerator(lambda r: WORDS, delay_s=delay_s))
    await fake.wait_connected()
    return slack


async def test_a_slash_command_over_the_socket_is_acked_then_answered(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await socket_chorus(tmp_path, fake)
    try:
        envelope = await fake.push("slash_commands", slash_body("/create", "slogan a cafe --n 2"))
        await wait_until(lambda: envelope in fake.acks)
        assert fake.acks[envelope] == {"envelope_id": envelope}
        await wait_until(lambda: len(final_updates(fake)) == 1)
        # Acked first: before Chorus posted anything in answer.
        assert fake.ack_times[envelope] < min(call.at for call in fake.answered("chat.postMessage"))
        assert "2. w0" in block_texts(final_updates(fake)[0]["blocks"])
        connect = fake.calls_to("apps.connections.open")[0]
        assert connect.headers["Authorization"] == "Bearer xapp-1-chorus-test"
    finally:
        await slack.close()


async def test_a_dropped_socket_reconnects_and_the_running_generation_still_posts(
    tmp_path: Path, fake: FakeSlack
) -> None:
    slack = await socket_chorus(tmp_path, fake, delay_s=0.05)
    try:
        first = await fake.push("slash_commands", slash_body("/create", "slogan a cafe"))
        await wait_until(lambda: first in fake.acks and len(fake.answered("chat.postMessage")) == 1)
        await fake.drop_socket()
        await wait_until(lambda: fake.connections == 2)
        assert len(fake.calls_to("apps.connections.open")) == 2
        await wait_until(lambda: len(final_updates(fake)) == 1)
        assert "w19" in block_texts(final_updates(fake)[0]["blocks"])
        second = await fake.push("slash_commands", slash_body("/create", "tagline a bakery"))
        await wait_until(lambda: second in fake.acks and len(final_updates(fake)) == 2)
        await slack.idle()
        assert await slack.bot.store.count_generations() == 2
    finally:
        await slack.close()


async def test_a_redelivered_envelope_does_not_generate_twice(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await socket_chorus(tmp_path, fake)
    try:
        await fake.push("slash_commands", slash_body("/create", "slogan a cafe"))
        await wait_until(lambda: len(final_updates(fake)) == 1)
        await slack.idle()
        v1 = final_updates(fake)[0]
        callback = event_callback(message_event("shorter please", thread_ts=v1["ts"]))
        once = await fake.push("events_api", callback)
        again = await fake.push("events_api", callback, retry_attempt=1)
        await wait_until(lambda: once in fake.acks and again in fake.acks)
        await wait_until(lambda: len(final_updates(fake)) == 2)
        await slack.idle()
        assert await slack.bot.store.count_generations() == 2
        # /create, then one refinement (plus its one retry when the model hands the same text back)
        assert len(slack.bot.generator.requests) <= 3
    finally:
        await slack.close()


async def test_chorus_run_serves_slack_until_sigterm(tmp_path: Path, fake: FakeSlack) -> None:
    """`chorus run` with chorus.platform = "slack", as a user starts it: connects, answers, stops cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")} | {
        "CHORUS_HOME": str(tmp_path),
        "CHORUS_MODEL__SOURCE": "fake",
        "CHORUS_CHORUS__PLATFORM": "slack",
        "CHORUS_SLACK__API_BASE_URL": fake.api_url,
        "CHORUS_SLACK_BOT_TOKEN": BOT_TOKEN,
        "CHORUS_SLACK_APP_TOKEN": APP_TOKEN,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus", "run", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await fake.wait_connected(60)
        envelope = await fake.push("slash_commands", slash_body("/create", "tagline a tea shop"))
        await wait_until(lambda: envelope in fake.acks and len(final_updates(fake)) == 1)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, (process.returncode, stderr.decode())
    assert "Chorus is on Slack, connected through Socket Mode" in stdout.decode()


async def test_a_burst_of_commands_is_acked_before_any_of_it_is_processed(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await socket_chorus(tmp_path, fake)
    started: list[float] = []
    handle = slack.bot.chorus.handle

    async def recording(event, responder) -> None:
        started.append(time.monotonic())
        await handle(event, responder)

    slack.bot.chorus.handle = recording  # type: ignore[method-assign]
    try:
        users = [f"U{i:08d}" for i in range(40)]
        sent = await fake.push_many("slash_commands", [slash_body("/create", "slogan a cafe", user=u) for u in users])
        await wait_until(lambda: len(started) == len(sent) and all(e in fake.acks for e in sent))
        assert min(started) > max(fake.ack_times[e] for e in sent)
        await wait_until(lambda: len(results(fake)) == len(sent))
    finally:
        await slack.close()
