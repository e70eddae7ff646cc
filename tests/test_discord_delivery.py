"""Delivery on Discord under the rules that bite: follow-ups that replace a loading response, rate-limit buckets,
sustained 429s, outdated or unknown interactions, gateway resume and shutdown. Real discord.py against
fake_discord.py, Chorus on the FakeGenerator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_discord import CHANNEL_ID, FakeDiscord, RateLimits, interaction_payload
from test_discord_adapter import (
    Harness,
    bot_conversation,
    create_one,
    custom_ids,
    latest_with_ref,
    start_harness,
    stop_harness,
)

from adapters.discord.render import THINKING, WRITING
from generation.fake import FakeGenerator
from support import wait_for, wait_until


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


async def test_a_reply_whose_final_edit_is_refused_past_every_retry_still_gets_one_result(bot: Harness) -> None:
    message_id, _ = await create_one(bot)
    bot.generator.delay_s = 0.05
    # Every edit in the channel is refused (past discord.py's retries and Chorus' own): the progress message
    # cannot become the result, so the result is posted anew and the progress message removed.
    bot.fake.fail("PATCH", rf"/channels/{CHANNEL_ID}/messages/\d+", times=10_000, retry_after=0.01)
    await bot.fake.user_message("make it rhyme", reply_to=message_id)
    record = await latest_with_ref(bot, version=2)
    shown = bot.fake.messages[record.message_ref]
    assert shown["embeds"][0]["title"] == "slogan · v2 of 2 · make it rhyme" and shown["components"]
    progress = bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")[0]
    assert not progress.body.get("components")
    await wait_until(lambda: not [m for m in bot.fake.messages.values() if is_progress(m)])


async def test_a_result_that_outlasts_the_interaction_token_leaves_no_half_written_message(tmp_path: Path) -> None:
    bot = await start_harness(tmp_path, FakeGenerator(delay_s=0.2), CHORUS_DISCORD__INTERACTION_TOKEN_TTL_S="0.6")
    bot.fake.token_ttl_s = 1.2  # Discord's 15 minutes, a little after Chorus stops trusting the token
    try:
        payload = await bot.fake.slash("create", {"kind": "story", "prompt": "a long night shift at the owl bakery"})
        token = payload["token"]
        await wait_until(lambda: any(is_progress(r.body) for r in bot.originals(token)))  # progress on screen
        record = await latest_with_ref(bot)
        shown = bot.fake.messages[record.message_ref]
        assert shown["channel_id"] == CHANNEL_ID and shown["components"]
        original = bot.fake.visible(token)
        assert original is not None and not is_progress(original), "the half-written original was left behind"
        assert "post the result in this channel" in original["content"]
        assert bot.fake.expired_uses == [], "an expired interaction token was used"
    finally:
        await stop_harness(bot)


async def test_a_thinking_that_outlasts_the_interaction_token_says_where_the_result_will_be(tmp_path: Path) -> None:
    generator = FakeGenerator(lambda request: "owls", delay_s=1.5)  # nothing to show before the token expires
    bot = await start_harness(tmp_path, generator, CHORUS_DISCORD__INTERACTION_TOKEN_TTL_S="0.6")
    bot.fake.token_ttl_s = 1.2
    try:
        payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "owls"})
        record = await latest_with_ref(bot)
        assert bot.fake.messages[record.message_ref]["components"]
        original = bot.fake.visible(payload["token"])
        assert original is not None and "post the result in this channel" in original["content"]
        assert bot.fake.expired_uses == []
    finally:
        await stop_harness(bot)


async def test_a_late_result_where_chorus_may_not_post_points_to_history(tmp_path: Path) -> None:
    # Interaction responses work in a channel where the bot may not send messages; its own posts there do not.
    bot = await start_harness(tmp_path, FakeGenerator(delay_s=0.2), CHORUS_DISCORD__INTERACTION_TOKEN_TTL_S="0.6")
    bot.fake.token_ttl_s = 1.2
    bot.fake.no_send.add(CHANNEL_ID)
    try:
        payload = await bot.fake.slash("create", {"kind": "story", "prompt": "a long night shift at the owl bakery"})
        token = payload["token"]
        await wait_until(lambda: "/history" in str((bot.fake.visible(token) or {}).get("content")))

        async def stored():
            record = await bot.chorus.store.latest_generation(bot_conversation())
            return record if record is not None and record.variants else None

        await wait_for(stored, timeout_s=10, describe=lambda: "the result was not stored")
        assert not bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$"), "posted where it may not"
        assert bot.fake.expired_uses == []
    finally:
        await stop_harness(bot)


async def test_a_message_chorus_may_not_answer_in_its_channel_is_explained_to_its_author_by_dm(bot: Harness) -> None:
    message_id, _ = await create_one(bot)
    bot.fake.no_send.add(CHANNEL_ID)
    said = await bot.fake.user_message("make it rhyme", reply_to=message_id)
    await wait_until(lambda: bool(bot.fake.dms) and bool(dm_posts(bot)))
    assert list(bot.fake.dms.values()) == [said["author"]["id"]]
    note = dm_posts(bot)[0].body
    assert "Send Messages" in note["content"] and f"<#{CHANNEL_ID}>" in note["content"]
    assert note["allowed_mentions"] == {"parse": []}
    await latest_with_ref(bot)  # the first result; wait for the refinement to end
    await wait_until(lambda: not bot.adapter.tasks)
    refused = bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")
    assert len(refused) == 1, "after one 403, Chorus stops posting there (each 403 counts towards an IP ban)"


async def test_closed_dms_leave_the_refusal_in_the_log_only(bot: Harness, caplog: pytest.LogCaptureFixture) -> None:
    message_id, _ = await create_one(bot)
    bot.fake.no_send.add(CHANNEL_ID)
    bot.fake.dms_closed.add("940000000000000001")
    await bot.fake.user_message("make it rhyme", reply_to=message_id)
    await wait_until(lambda: "Cannot send messages to this user" in caplog.text)
    assert not [m for m in bot.fake.messages.values() if m["channel_id"] in bot.fake.dms]


def dm_posts(bot: Harness) -> list:
    return [
        r
        for r in bot.fake.requests
        if r.method == "POST"
        and r.path.removeprefix("/channels/").split("/")[0] in bot.fake.dms
        and r.path.endswith("/messages")
    ]


def is_progress(message: dict) -> bool:
    """A message still showing "thinking…" or "writing…" instead of a result."""
    footers = [str((embed.get("footer") or {}).get("text", "")) for embed in message.get("embeds") or []]
    return any(footer in (THINKING, WRITING) for footer in footers)


def token_of(bot: Harness, interaction_id: str) -> str:
    callbacks = bot.fake.find("POST", rf"/interactions/{interaction_id}/[^/]+/callback")
    return callbacks[0].path.split("/")[3] if callbacks else ""


async def test_a_burst_in_one_channel_is_delivered_within_the_rate_limit_buckets(bot: Harness) -> None:
    bot.fake.limits = RateLimits()
    ids = await bot.fake.burst(8)
    await wait_until(lambda: all(result_on_screen(bot, token_of(bot, i)) is not None for i in ids), 60)
    assert bot.fake.violations == []


async def private_answer(bot: Harness, payload: dict) -> str:
    """What the user alone sees, asserting it was private from the start: the interaction's first (and only)
    callback is an ephemeral message, with no public "thinking…" before it."""
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{payload['id']}/")))
    callbacks = bot.fake.find("POST", rf"/interactions/{payload['id']}/")
    assert [c.body["type"] for c in callbacks] == [4], "answered with a public defer first"
    assert callbacks[0].body["data"]["flags"] & 64
    return callbacks[0].body["data"]["content"]


async def test_a_create_from_an_outdated_client_is_told_privately_to_reload_discord(bot: Harness) -> None:
    payload = await bot.fake.slash("create", {"kind": "slogan"})  # an older /create without `prompt`
    answer = await private_answer(bot, payload)
    assert "Reload Discord" in answer and "prompt" in answer
    assert not bot.generator.requests


async def test_an_unknown_command_is_answered_privately(bot: Harness) -> None:
    payload = await bot.fake.slash("imagine", {"prompt": "a cat"})  # removed since the client cached its list
    answer = await private_answer(bot, payload)
    assert "/imagine" in answer and "Reload Discord" in answer


OLD_BUTTONS = [("Again", "chorus::regenerate:v2-7:"), ("Sparkle", "chorus::sparkle:1:")]


async def test_a_button_with_an_unknown_chorus_custom_id_is_answered_privately(bot: Harness) -> None:
    message_id, _ = await create_one(bot)
    # A message from an older Chorus: one button in an id scheme Chorus no longer reads, one action it dropped.
    old_buttons = [{"type": 2, "style": 2, "label": label, "custom_id": cid} for label, cid in OLD_BUTTONS]
    bot.fake.messages[message_id]["components"] = [{"type": 1, "components": old_buttons}]
    click = await bot.fake.click(message_id, OLD_BUTTONS[0][1])
    assert "no longer works" in await private_answer(bot, click)
    unknown = await bot.fake.click(message_id, OLD_BUTTONS[1][1])
    assert "no longer supported" in await private_answer(bot, unknown)


async def test_an_interaction_discordpy_cannot_parse_is_answered_privately_and_never_left_thinking(
    bot: Harness,
) -> None:
    payload = interaction_payload(
        2,
        {
            "id": "1",
            "name": "create",
            "type": 1,
            "options": [{"name": "kind", "type": 3, "value": "slogan"}, {"name": "prompt", "type": 3, "value": "tea"}],
        },
        user=("940000000000000001", "alice"),
    )
    payload["entitlements"] = [{"id": "1"}]  # a shape discord.py's models do not expect
    await bot.fake.dispatch("INTERACTION_CREATE", payload)
    token = payload["token"]
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{payload['id']}/")))
    await wait_until(
        lambda: (
            any(r.body and r.body.get("flags", 0) & 64 for r in bot.fake.find("POST", rf"/webhooks/\d+/{token}$"))
            or bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0].body["type"] == 4
        )
    )
    assert token not in bot.fake.loading, "a public thinking… was left"
    shown = bot.fake.visible(token)
    assert shown is None or shown["flags"] & 64


@pytest.mark.parametrize(
    ("env", "options", "expected"),
    [
        ({"CHORUS_LIMITS__MAX_PROMPT_CHARS": "40"}, {"kind": "slogan", "prompt": "x" * 60}, "limit is 40"),
        ({"CHORUS_MODERATION__BLOCKLIST": '["badword"]'}, {"kind": "slogan", "prompt": "a badword"}, "blocked word"),
        ({}, {"kind": "sonnet-ish", "prompt": "tea"}, "sonnet-ish"),
    ],
)
async def test_a_refused_create_is_private_from_the_start(
    tmp_path: Path, env: dict[str, str], options: dict[str, str], expected: str
) -> None:
    harness = await start_harness(tmp_path, **env)
    try:
        payload = await harness.fake.slash("create", options)
        assert expected in await private_answer(harness, payload)
        assert not harness.fake.find("DELETE", r"/messages/@original")
    finally:
        await stop_harness(harness)


async def test_a_private_refusal_over_2000_characters_arrives_whole_in_several_private_messages(
    tmp_path: Path,
) -> None:
    # An operator with many tones: /create's tone is then free text (autocomplete), and the refusal lists them all.
    tones = [f"tone-number-{i:03d}" for i in range(200)]
    harness = await start_harness(tmp_path, CHORUS_TONES=json.dumps(tones))
    try:
        payload = await harness.fake.slash("create", {"kind": "slogan", "prompt": "tea", "tone": "sparkly"})
        first = await private_answer(harness, payload)
        token = payload["token"]
        await wait_until(lambda: bool(harness.fake.followups.get(token)))
        rest = [harness.fake.messages[i] for i in harness.fake.followups[token]]
        assert all(message["flags"] & 64 for message in rest), "the rest of a private answer went public"
        shown = "\n".join([first, *(message["content"] for message in rest)])
        assert "Unknown tone 'sparkly'" in first and all(tone in shown for tone in tones), "text was cut"
        assert all(len(text) <= 2000 for text in [first, *(m["content"] for m in rest)])
    finally:
        await stop_harness(harness)


async def test_over_quota_is_private_from_the_start(tmp_path: Path) -> None:
    harness = await start_harness(tmp_path, CHORUS_LIMITS__QUOTA_PER_MINUTE="1")
    try:
        await create_one(harness)
        over = await harness.fake.slash("create", {"kind": "slogan", "prompt": "again"})
        assert "Try again in" in await private_answer(harness, over)
    finally:
        await stop_harness(harness)


async def test_an_undecodable_gateway_frame_resumes_the_session_and_loses_no_event(bot: Harness) -> None:
    session, client = bot.fake.session_id, bot.adapter.client
    await bot.fake.send_raw('{"op": 0, "t": "MESSAGE_CREATE", "s": 9')  # cut off mid-frame
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "in the window"})  # behind it
    final = await bot.finished(payload["token"])
    assert "in the window" in final["embeds"][0]["description"]
    resumes = [op for op in bot.fake.gateway_ops if op["op"] == 6]
    assert resumes and resumes[0]["d"]["session_id"] == session
    assert len([op for op in bot.fake.gateway_ops if op["op"] == 2]) == 1, "a new session was started"
    assert bot.adapter.client is client and bot.adapter.restarts == 0


async def test_shutdown_mid_stream_finishes_the_message_with_its_text_and_a_note_and_closes_cleanly(
    tmp_path: Path,
) -> None:
    from bots.shutdown import RESTART_NOTE

    harness = await start_harness(tmp_path, FakeGenerator(delay_s=0.1))
    try:
        payload = await harness.fake.slash("create", {"kind": "story", "prompt": "a tide that forgot to turn"})
        token = payload["token"]
        await wait_until(lambda: any("✍️" in str(r.body) for r in harness.originals(token)))  # text is streaming
        await harness.adapter.shutdown(grace_s=5.0)
        shown = harness.fake.visible(token)
        assert shown is not None and RESTART_NOTE in str(shown["embeds"]) and "✍️" not in str(shown["embeds"])
        assert shown["embeds"][0]["description"], "the text so far is kept"
        assert any(":regenerate:" in cid for cid in custom_ids(shown)), "Regenerate works after the restart"
        record = await latest_with_ref(harness)
        assert record.status == "partial" and record.message_ref == shown["id"]
        await wait_until(lambda: bool(harness.fake.close_codes))
        assert harness.fake.close_codes == [1000]
    finally:
        await stop_harness(harness)


async def test_sigterm_stops_chorus_run_cleanly(tmp_path: Path) -> None:
    import signal
    import sys

    from test_discord_adapter import _cli_env

    fake = FakeDiscord()
    await fake.start()
    env = _cli_env(tmp_path, CHORUS_DISCORD_TOKEN="cli-token", **fake.env())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus", "run", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await fake.wait_connected(60)
        await wait_until(lambda: bool(fake.find("PUT", r"/applications/\d+/commands$")), 60)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        await wait_until(lambda: bool(fake.close_codes))
        assert fake.close_codes == [1000], "the gateway was dropped instead of closed"
    finally:
        if process.returncode is None:
            process.kill()
        await fake.stop()


async def test_a_private_error_after_a_public_defer_stays_private_when_the_placeholder_cannot_be_deleted(
    bot: Harness,
) -> None:
    bot.generator.busy = True  # found out only after the defer, when the generation starts
    bot.fake.fail("DELETE", r"/messages/@original", times=1000, via=False)
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "busy day"})
    token = payload["token"]
    await wait_until(lambda: any("busy" in str(r.body) for r in bot.fake.find("POST", rf"/webhooks/\d+/{token}$")))
    private = next(r for r in bot.fake.find("POST", rf"/webhooks/\d+/{token}$") if "busy" in str(r.body))
    assert private.body["flags"] & 64
    shown = bot.fake.visible(token)
    assert shown is not None and "busy" not in str(shown), "the private error became the public message"
    assert token not in bot.fake.loading


async def wait_until_stored(harness: Harness, generation_id: int) -> None:
    async def stored() -> bool:
        record = await harness.chorus.store.get_generation(generation_id)
        return record is not None and bool(record.message_ref)

    await wait_for(stored, describe=lambda: "no message ref stored")


async def test_a_result_stored_but_not_delivered_before_a_restart_is_posted_after_it(tmp_path: Path) -> None:
    from fake_discord import CHANNEL_ID, GUILD_ID

    from bots.events import Conversation, User
    from bots.redelivery import NOTE
    from support import store_undelivered

    # The previous run stored a result and died before Discord had it (no message ref); a drop waits to be posted.
    lost, drop = await store_undelivered(
        tmp_path, Conversation("discord", GUILD_ID, CHANNEL_ID), User("940000000000000001", "alice")
    )
    harness = await start_harness(tmp_path)
    try:
        posts = harness.fake.find
        await wait_until(lambda: bool(posts("POST", rf"/channels/{CHANNEL_ID}/messages$")))
        await wait_until_stored(harness, lost)
        record = await harness.chorus.store.get_generation(lost)
        assert record is not None and record.message_ref
        shown = harness.fake.messages[record.message_ref]
        assert "Steep dreams, bold cups." in str(shown["embeds"]) and NOTE in str(shown["embeds"])
        assert any(f":regenerate:{lost}:" in cid for cid in custom_ids(shown))
        posted = harness.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")
        assert len(posted) == 1, "posted once, and the drop is left to the drops scheduler"
        assert (await harness.chorus.store.get_generation(drop)).message_ref is None
    finally:
        await stop_harness(harness)


async def test_a_private_answer_that_cannot_be_sent_is_never_posted_publicly(bot: Harness) -> None:
    from test_discord_adapter import replace_handler

    from bots.reply import Reply

    sent: list[str] = []

    async def private(ctx) -> None:
        sent.append(await ctx.responder.send(Reply.error("Your data export code is 4417.")))

    bot.chorus.router.commands["help"] = replace_handler(bot.chorus.router.commands["help"], "help", private)
    bot.fake.fail("POST", r"/interactions/\d+/[^/]+/callback", times=1000, status=403)
    await bot.fake.slash("help", {})
    await wait_until(lambda: bool(sent))
    assert not any("4417" in str(r.body) for r in bot.fake.find("POST", r"/channels/\d+/messages$"))


async def test_acks_survive_a_kept_alive_connection_the_server_closed_and_chunked_answers() -> None:
    """The direct ack client: a kept-alive connection Discord closed while idle is replaced, and the ack is sent
    once more on a fresh one (nothing had been read); chunked and close-framed answers are read whole."""
    from adapters.discord.callbacks import CallbackConnections

    received: list[bytes] = []
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n',
            b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{"code": 40060}',
        ]
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
        )
        received.append(head.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(length))
        writer.write(next(answers))
        await writer.drain()
        writer.close()  # every connection is closed after one answer, though the first said nothing of it

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    acks = CallbackConnections(f"http://127.0.0.1:{port}/api/v10", "DiscordBot (test, 1)", limit=2)
    try:
        first = await acks.post(1, "tok1", {"type": 5})
        second = await acks.post(2, "tok2", {"type": 5})  # the pooled connection is dead: a fresh one is used
        third = await acks.post(3, "tok3", {"type": 4, "data": {"content": "hi"}})
    finally:
        await acks.close()
        server.close()
        await server.wait_closed()
    assert (first.status, first.body) == (200, b"{}")
    assert (second.status, second.body) == (200, b'{"a":1}')
    assert (third.status, third.body) == (400, b'{"code": 40060}')
    assert received == [
        b'POST /api/v10/interactions/1/tok1/callback?with_response=1 HTTP/1.1 {"type":5}',
        b'POST /api/v10/interactions/2/tok2/callback?with_response=1 HTTP/1.1 {"type":5}',
        b'POST /api/v10/interactions/3/tok3/callback?with_response=1 HTTP/1.1 {"type":4,"data":{"content":"hi"}}',
    ], "each ack sent exactly once"
