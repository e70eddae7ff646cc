"""The Discord adapter end to end: real discord.py against the fake Discord in fake_discord.py, Chorus on the
FakeGenerator and a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_discord import BAKERS_ROLE_ID, BOT_ID, CHANNEL_ID, GUILD_ID, FakeDiscord, Recorded
from sqlalchemy import select

from adapters.discord.app import ACKS_FIRST_MAX_HOLD_S, DiscordAdapter, apply_endpoints
from adapters.discord.render import THINKING
from adapters.discord.responder import ACK_CONNECTIONS
from bots.app import Chorus
from bots.events import Activity, Conversation
from bots.store import EngagementEvent, Feedback, Store
from chorus.compose import build_chorus
from generation.fake import FakeGenerator
from support import settings_for, wait_for, wait_until


@dataclass
class Harness:
    fake: FakeDiscord
    adapter: DiscordAdapter
    chorus: Chorus
    generator: FakeGenerator
    task: asyncio.Task[int]

    def originals(self, token: str) -> list[Recorded]:
        return self.fake.find("PATCH", rf"/webhooks/\d+/{token}/messages/@original")

    def final_edit(self, token: str) -> Recorded | None:
        """The edit (or follow-up) that carries components: the finished result."""
        for record in reversed(
            self.fake.find("PATCH", rf"/webhooks/\d+/{token}") + self.fake.find("POST", rf"/webhooks/\d+/{token}")
        ):
            if isinstance(record.body, dict) and record.body.get("components"):
                return record
        return None

    def message_for(self, token: str) -> dict:
        return self.fake.messages[self.fake.originals[token]]

    async def finished(self, token: str, timeout_s: float = 20.0) -> dict:
        await wait_until(lambda: self.final_edit(token) is not None, timeout_s)
        record = self.final_edit(token)
        assert record is not None
        return record.body


def custom_ids(body: dict) -> list[str]:
    return [c["custom_id"] for row in body.get("components", []) for c in row["components"]]


async def start_harness(
    tmp_path: Path, generator: FakeGenerator | None = None, fake: FakeDiscord | None = None, **env: str
) -> Harness:
    if fake is None:
        fake = FakeDiscord()
        await fake.start()
    settings = settings_for(
        tmp_path,
        CHORUS_CHORUS__PLATFORM="discord",
        **fake.env(),
        CHORUS_DISCORD__RECONNECT_DELAY_S="0.05",
        CHORUS_LIMITS__STREAM_EDIT_INTERVAL_S="0.2",
        **env,
    )
    store = Store(settings.store_url)
    await store.start()
    generator = generator or FakeGenerator(delay_s=0.02)
    chorus = build_chorus(settings, store, generator, drops=False)
    apply_endpoints(settings)
    adapter = DiscordAdapter(chorus, client_options={"guild_ready_timeout": 0.05})
    fake._connected.clear()
    task = asyncio.create_task(adapter.run("fake-token"))
    await fake.wait_connected()
    await wait_until(lambda: adapter.client.is_ready())
    return Harness(fake, adapter, chorus, generator, task)


async def stop_harness(harness: Harness, *, stop_fake: bool = True) -> None:
    await harness.adapter.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(harness.task, 10)
    await harness.chorus.close()
    if stop_fake:
        await harness.fake.stop()
    assert harness.fake.invalid_forms == [], "Discord would have refused these (400 Invalid Form Body)"


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path)
    yield harness
    await stop_harness(harness)


async def test_login_syncs_every_core_command_with_typed_options(bot: Harness) -> None:
    synced = bot.fake.find("PUT", r"/applications/\d+/commands$")
    assert synced and synced[0].headers["Authorization"] == "Bot fake-token"
    commands = {c["name"]: c for c in synced[-1].body}
    assert set(bot.chorus.router.commands) <= set(commands)
    create = {o["name"]: o for o in commands["create"]["options"]}
    assert [c["value"] for c in create["kind"]["choices"]] == list(bot.chorus.settings.kinds)
    assert [c["value"] for c in create["tone"]["choices"]] == list(bot.chorus.settings.tones)
    assert [c["value"] for c in create["length"]["choices"]] == ["short", "medium", "long"]
    assert create["length"]["type"] == 3 and not create["length"].get("required", False)
    assert create["kind"]["required"] and create["prompt"]["required"] and not create["n"].get("required", False)
    assert create["n"]["type"] == 4 and create["n"]["max_value"] == bot.chorus.settings.limits.max_variants
    # A command without structured options takes free text, as in the terminal.
    assert [o["name"] for o in commands["help"]["options"]] == ["text"]
    menu = [c for c in synced[-1].body if c.get("type") == 3]
    assert [c["name"] for c in menu] == ["Remix with Chorus"]
    identify = [op for op in bot.fake.gateway_ops if op["op"] == 2]
    assert identify and identify[0]["d"]["token"] == "fake-token"


async def test_create_defers_streams_with_throttled_edits_and_ends_with_components(bot: Harness) -> None:
    bot.generator.delay_s = 0.05
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a night-owl bakery", "n": 2})
    token = payload["token"]
    await wait_until(lambda: payload["id"] in bot.fake.callback_at)
    callback = bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0]
    assert callback.body["type"] == 5  # deferred: "Chorus is thinking…"
    final = await bot.finished(token)
    edits = bot.originals(token)
    assert len(edits) >= 3, "the text should stream in several edits"
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits[:-1])]  # the final edit is not throttled
    assert gaps and min(gaps) >= 0.15, f"progress edits must be throttled, got gaps {gaps}"
    embed = final["embeds"][0]
    assert embed["title"] == "slogan · v1 of 1"
    assert "**1.**" in embed["description"] and "**2.**" in embed["description"]
    ids = custom_ids(final)
    record = await latest_with_ref(bot)
    assert record.message_ref == bot.fake.originals[token]
    assert f"chorus::regenerate:{record.id}:" in ids and f"chorus::rate_up:{record.id}:+1" in ids
    tone_select = [c for row in final["components"] for c in row["components"] if c["type"] == 3]
    assert [o["value"] for o in tone_select[0]["options"]] == list(bot.chorus.settings.tones)
    assert final["allowed_mentions"] == {"parse": []}


async def latest_with_ref(bot: Harness, version: int = 1):
    """The latest result once its message id is stored (that happens just after the final edit)."""

    async def stored():
        record = await bot.chorus.store.latest_generation(bot_conversation())
        return record if record is not None and record.message_ref and record.version >= version else None

    return await wait_for(stored, timeout_s=10, describe=lambda: "no stored message_ref")


async def test_create_with_length_short_asks_for_half_the_tokens_and_refinements_keep_it(bot: Harness) -> None:
    budget = bot.chorus.settings.kinds["story"].max_new_tokens
    payload = await bot.fake.slash("create", {"kind": "story", "prompt": "a lost umbrella", "length": "short"})
    final = await bot.finished(payload["token"])
    assert final["embeds"][0]["title"] == "story · v1 of 1"
    request = bot.generator.requests[-1]
    assert request.max_new_tokens == budget // 2 and request.messages[-1].content.endswith("Keep it brief.")
    shorter = next(cid for cid in custom_ids(final) if ":shorter:" in cid)
    click = await bot.fake.click(bot.fake.originals[payload["token"]], shorter)
    v2 = await bot.finished(click["token"])
    assert v2["embeds"][0]["title"] == "story · v2 of 2 · shorter"
    assert bot.generator.requests[-1].max_new_tokens == budget // 2


def bot_conversation() -> Conversation:
    return Conversation("discord", GUILD_ID, CHANNEL_ID)


async def create_one(bot: Harness, prompt: str = "a night-owl bakery") -> tuple[str, dict]:
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": prompt})
    final = await bot.finished(payload["token"])
    await latest_with_ref(bot)
    return bot.fake.originals[payload["token"]], final


async def test_button_makes_v2_and_a_reply_makes_v3(bot: Harness) -> None:
    message_id, final = await create_one(bot)
    regenerate = next(cid for cid in custom_ids(final) if ":regenerate:" in cid)
    click = await bot.fake.click(message_id, regenerate)
    v2 = await bot.finished(click["token"])
    assert v2["embeds"][0]["title"] == "slogan · v2 of 2 · regenerate"
    v2_message = bot.fake.originals[click["token"]]
    said = await bot.fake.user_message("make it rhyme", reply_to=v2_message)
    record = await latest_with_ref(bot, version=3)
    assert record.instruction == "make it rhyme"
    posted = bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")
    assert str(posted[0].body["message_reference"]["message_id"]) == said["id"]  # answers the user's message
    final = bot.fake.messages[record.message_ref]
    assert final["embeds"][0]["title"] == "slogan · v3 of 3 · make it rhyme" and final["components"]


async def test_a_reaction_on_a_result_is_stored_as_engagement(bot: Harness) -> None:
    message_id, _ = await create_one(bot)
    await bot.fake.react(message_id, "🔥")

    async def rows() -> list[EngagementEvent]:
        async with bot.chorus.store.session() as session:
            return list((await session.execute(select(EngagementEvent))).scalars())

    async def reactions() -> list[EngagementEvent]:
        return [r for r in await rows() if r.kind == "reaction"]

    found = await wait_for(reactions, timeout_s=10, describe=lambda: "no engagement row")
    assert found[0].value == "🔥"


async def test_rating_button_is_acknowledged_ephemerally(bot: Harness) -> None:
    message_id, final = await create_one(bot)
    thumbs = next(cid for cid in custom_ids(final) if ":rate_up:" in cid)
    click = await bot.fake.click(message_id, thumbs)
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{click['id']}/")))
    body = bot.fake.find("POST", rf"/interactions/{click['id']}/")[0].body
    assert body["type"] == 4 and body["data"]["flags"] & 64 and "Noted 👍" in body["data"]["content"]
    async with bot.chorus.store.session() as session:
        ratings = [f.value for f in (await session.execute(select(Feedback))).scalars() if f.kind == "rating"]
    assert ratings == ["+1"]


async def test_old_buttons_work_after_a_restart(tmp_path: Path) -> None:
    first = await start_harness(tmp_path)
    message_id, final = await create_one(first)
    await stop_harness(first, stop_fake=False)
    second = await start_harness(tmp_path, fake=first.fake)
    try:
        shorter = next(cid for cid in custom_ids(final) if ":shorter:" in cid)
        click = await second.fake.click(message_id, shorter)
        v2 = await second.finished(click["token"])
        assert v2["embeds"][0]["title"] == "slogan · v2 of 2 · shorter"
    finally:
        await stop_harness(second)


async def test_button_on_a_deleted_generation_says_so_ephemerally(bot: Harness) -> None:
    message_id, final = await create_one(bot)
    await bot.chorus.store.forget_user("discord", "940000000000000001")
    longer = next(cid for cid in custom_ids(final) if ":longer:" in cid)
    click = await bot.fake.click(message_id, longer)
    body = await ephemeral_answer(bot, click)
    assert "no longer exists" in body["content"]


async def ephemeral_answer(bot: Harness, payload: dict) -> dict:
    """What the user alone sees: an ephemeral callback, or (after an early defer) an ephemeral follow-up with the
    public "thinking…" placeholder deleted."""
    token = payload["token"]
    await wait_until(
        lambda: (
            bool(bot.fake.find("POST", rf"/interactions/{payload['id']}/"))
            and (
                bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0].body["type"] == 4
                or bool(bot.fake.find("POST", rf"/webhooks/\d+/{token}$"))
            )
        )
    )
    callback = bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0].body
    if callback["type"] == 4:
        assert callback["data"]["flags"] & 64
        return callback["data"]
    follow_up = bot.fake.find("POST", rf"/webhooks/\d+/{token}$")[0].body
    assert follow_up["flags"] & 64
    await wait_until(lambda: bool(bot.fake.find("DELETE", rf"/webhooks/\d+/{token}/messages/@original")))
    return follow_up


async def test_generated_text_never_pings(bot: Harness) -> None:
    bot.generator.script = lambda request: "Hey @everyone and @here, ask <@123> or <@&456> now"
    await create_one(bot)
    bodies = [b for b in bot.fake.bodies() if "content" in b or "embeds" in b]
    assert bodies
    for body in bodies:
        assert body.get("allowed_mentions") == {"parse": []}, body
        text = str(body.get("content") or "") + str(body.get("embeds") or "")
        assert "@everyone" not in text and "@here" not in text and "<@123>" not in text and "<@&456>" not in text


@pytest.mark.parametrize("is_global", [False, True])
async def test_429_on_edits_still_delivers_the_final_text(bot: Harness, is_global: bool) -> None:
    bot.fake.fail("PATCH", r"/messages/@original", times=3, is_global=is_global, retry_after=0.1)
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "rainy day cinema"})
    final = await bot.finished(payload["token"])
    assert "rainy day cinema" in final["embeds"][0]["description"]
    assert sum(f.hits for f in bot.fake.faults) == 3


async def test_a_429_storm_on_the_original_falls_back_to_a_follow_up(bot: Harness) -> None:
    # The storm outlasts discord.py's retries and Chorus' own, so the follow-up carries the result; Discord turns
    # it into an edit of the loading response, which therefore stays (see test_discord_delivery for the ref).
    bot.adapter.final_retry_s = 0.3
    bot.fake.fail("PATCH", r"/messages/@original", times=1000, retry_after=0.01)
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "rainy day cinema"})
    token = payload["token"]
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/webhooks/\d+/{token}$")))
    follow_up = bot.fake.find("POST", rf"/webhooks/\d+/{token}$")[0].body
    assert "rainy day cinema" in follow_up["embeds"][0]["description"] and follow_up["components"]
    await latest_with_ref(bot)
    assert not bot.fake.find("DELETE", rf"/webhooks/\d+/{token}/messages/@original")


async def test_a_429_without_via_is_not_retried_but_the_result_still_arrives(bot: Harness) -> None:
    bot.fake.fail("PATCH", r"/messages/@original", times=1000, via=False)
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "tea by the sea"})
    token = payload["token"]
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/webhooks/\d+/{token}$")))
    assert "tea by the sea" in bot.fake.find("POST", rf"/webhooks/\d+/{token}$")[0].body["embeds"][0]["description"]


async def test_a_malformed_gateway_event_does_not_kill_the_bot(bot: Harness) -> None:
    # A MESSAGE_CREATE without the fields discord.py indexes raises KeyError inside its parser.
    await bot.fake.dispatch("MESSAGE_CREATE", {"id": "1"})
    await bot.fake.dispatch("GUILD_MEMBER_UPDATE", {"nonsense": True})
    await bot.fake.send_raw('{"op": 0, "t": "MESSAGE_REACTION_ADD", "s": 99, "d": {"user_id": "x"}}')
    await bot.fake.dispatch("INTERACTION_CREATE", {"id": "5", "type": 2, "data": {"name": "create"}})  # no token
    await wait_until(lambda: bot.adapter.dropped_events >= 3)
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "still alive"})
    final = await bot.finished(payload["token"])
    assert "still alive" in final["embeds"][0]["description"]
    assert not bot.task.done()


async def test_a_gateway_failure_that_resuming_cannot_cure_restarts_the_client(
    bot: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discord.gateway import DiscordWebSocket

    old = bot.adapter.client
    received = DiscordWebSocket.received_message

    async def choke_on_typing(self: DiscordWebSocket, msg: object) -> None:
        if "TYPING_START" in str(msg):
            raise KeyError("boom")  # a bug in the socket loop itself, on every replay of this event
        await received(self, msg)

    monkeypatch.setattr(DiscordWebSocket, "received_message", choke_on_typing)
    await bot.fake.dispatch("TYPING_START", {})
    await wait_until(lambda: bot.adapter.restarts >= 1 and bot.adapter.client is not old)
    await wait_until(lambda: bot.adapter.client.is_ready())
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "back again"})
    final = await bot.finished(payload["token"])
    assert "back again" in final["embeds"][0]["description"]


async def test_gateway_close_is_followed_by_resume(bot: Harness) -> None:
    await bot.fake.close_socket(4000)
    await wait_until(lambda: any(op["op"] == 6 for op in bot.fake.gateway_ops))
    resume = next(op for op in bot.fake.gateway_ops if op["op"] == 6)
    assert resume["d"]["session_id"] == bot.fake.session_id and resume["d"]["token"] == "fake-token"
    await bot.fake.wait_connected()
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "after resume"})
    final = await bot.finished(payload["token"])
    assert "after resume" in final["embeds"][0]["description"]


async def test_limits_and_busy_are_ephemeral(tmp_path: Path) -> None:
    bot = await start_harness(tmp_path, CHORUS_LIMITS__QUOTA_PER_MINUTE="2", CHORUS_LIMITS__MAX_PROMPT_CHARS="40")
    try:
        long = await bot.fake.slash("create", {"kind": "slogan", "prompt": "x" * 60})
        assert "limit is 40" in (await ephemeral_answer(bot, long))["content"]

        await create_one(bot, "ok")  # a request refused before it generates costs no quota
        await create_one(bot, "ok again")
        over = await bot.fake.slash("create", {"kind": "slogan", "prompt": "again"})
        assert "Try again in" in (await ephemeral_answer(bot, over))["content"]
    finally:
        await stop_harness(bot)


async def test_queue_full_is_ephemeral_and_leaves_no_thinking(bot: Harness) -> None:
    bot.generator.busy = True
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "busy day"})
    token = payload["token"]
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/webhooks/\d+/{token}$")))
    follow_up = bot.fake.find("POST", rf"/webhooks/\d+/{token}$")[0].body
    assert follow_up["flags"] & 64 and "busy" in follow_up["content"]
    await wait_until(lambda: bool(bot.fake.find("DELETE", rf"/webhooks/\d+/{token}/messages/@original")))
    assert token not in bot.fake.originals or bot.fake.originals[token] not in bot.fake.messages


async def test_queue_position_shows_while_waiting(bot: Harness) -> None:
    bot.generator.queued = 2
    bot.generator.delay_s = 0.1
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "queued"})
    await bot.finished(payload["token"])
    footers = [str(r.body) for r in bot.originals(payload["token"])]
    assert any("Queued: " in f and "in line" in f for f in footers)
    assert THINKING not in str(bot.final_edit(payload["token"]).body)  # type: ignore[union-attr]


async def test_an_old_interaction_token_is_answered_in_the_channel(tmp_path: Path) -> None:
    bot = await start_harness(tmp_path, FakeGenerator(delay_s=0.15), CHORUS_DISCORD__INTERACTION_TOKEN_TTL_S="0.5")
    try:
        payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a very long job about owls"})
        await wait_until(
            lambda: (
                any(
                    r.body and r.body.get("components")
                    for r in bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")
                )
                or any(
                    r.body and r.body.get("components")
                    for r in bot.fake.find("PATCH", rf"/channels/{CHANNEL_ID}/messages/\d+")
                )
            )
        )
        late = [
            r
            for r in bot.fake.requests
            if r.path.startswith("/webhooks") and r.at > bot.fake.callback_at[payload["id"]] + 1.0
        ]
        assert not [r for r in late if r.method == "PATCH"], "the stale token must not be used for edits"
        await latest_with_ref(bot)
    finally:
        await stop_harness(bot)


async def test_mention_without_message_content_refines_and_plain_messages_are_activity(bot: Harness) -> None:
    seen: list[object] = []

    async def count(ctx) -> bool:
        seen.append(ctx.event)
        return True

    bot.chorus.intercept(Activity, count)
    await create_one(bot)
    await bot.fake.user_message("just chatting")
    await wait_until(lambda: len(seen) == 1)
    await bot.fake.user_message(f"<@{BOT_ID}> make it longer", mention=True)
    await wait_until(lambda: any("v2" in str(r.body) for r in bot.fake.find("PATCH", r"/channels/\d+/messages/\d+")))


async def test_an_asking_button_opens_a_modal_whose_text_comes_back_as_the_action_value(bot: Harness) -> None:
    from bots.events import Action
    from bots.reply import Reply, ReplyAction

    got: list[Action] = []

    async def offer(ctx) -> bool:
        assert isinstance(ctx.event, Action)
        got.append(ctx.event)
        await ctx.responder.send(Reply.text(f"Added: {ctx.event.value}", ephemeral=True))
        return True

    bot.chorus.intercept(Action, offer)
    ask = ReplyAction("test_idea", "Add idea", ask="Your idea")
    responder_holder: list[str] = []

    async def post_button(ctx) -> None:
        responder_holder.append(await ctx.responder.send(Reply(parts=("Ideas, anyone?",), actions=(ask,))))

    # A command whose reply carries an asking button (what /brainstorm will do).
    bot.chorus.router.commands["help"] = replace_handler(bot.chorus.router.commands["help"], "help", post_button)
    payload = await bot.fake.slash("help", {"text": ""})
    await wait_until(lambda: bool(responder_holder))
    message_id = bot.fake.originals[payload["token"]]
    button = custom_ids(bot.fake.messages[message_id])[0]
    assert button == "chorus?:test_idea::Your idea"
    click = await bot.fake.click(message_id, button)
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{click['id']}/")))
    modal = bot.fake.find("POST", rf"/interactions/{click['id']}/")[0].body
    assert modal["type"] == 9 and modal["data"]["title"] == "Your idea"
    submit = await bot.fake.submit_modal(modal["data"]["custom_id"], "a tea bar in a library")
    await wait_until(lambda: bool(got))
    assert got[0].action_id == "test_idea" and got[0].value == "a tea bar in a library"
    answer = await ephemeral_answer(bot, submit)
    assert answer["content"] == "Added: a tea bar in a library"


def replace_handler(spec, name, handler):
    import dataclasses

    return dataclasses.replace(spec, name=name, handler=handler)


async def test_messages_in_a_thread_chorus_opened_reach_the_core_without_a_mention(bot: Harness) -> None:
    from bots.events import Message
    from bots.reply import Reply

    threads: list[str] = []
    inside: list[Message] = []

    async def open_one(ctx) -> None:
        message_ref = await ctx.responder.send(Reply.text("Let's brainstorm."))
        thread_id, responder = await ctx.responder.open_thread(message_ref, "Brainstorm: tea names")
        await responder.send(Reply.text("Drop ideas here @everyone"))
        threads.append(thread_id)

    async def collect(ctx) -> bool:
        if ctx.event.conversation.thread in threads:
            inside.append(ctx.event)
            return True
        return False

    bot.chorus.intercept(Message, collect)
    bot.chorus.router.commands["help"] = replace_handler(bot.chorus.router.commands["help"], "help", open_one)
    await bot.fake.slash("help", {"text": ""})
    await wait_until(lambda: bool(threads))
    created = bot.fake.find("POST", r"/channels/\d+/messages/\d+/threads")
    assert created[0].body["name"] == "Brainstorm: tea names"
    posted = bot.fake.find("POST", rf"/channels/{threads[0]}/messages$")
    assert posted and "@everyone" not in posted[0].body["content"]
    await bot.fake.user_message("oolong-ly yours", channel_id=threads[0])
    await wait_until(lambda: bool(inside))
    assert inside[0].text == "oolong-ly yours" and inside[0].conversation.channel == CHANNEL_ID


async def test_remix_with_chorus_menu_remixes_the_message(bot: Harness) -> None:
    from fake_discord import message_payload, user_payload

    target = message_payload("777", CHANNEL_ID, user_payload("940000000000000002", "bob"), "our cafe opens at dawn")
    data = {
        "id": "1",
        "name": "Remix with Chorus",
        "type": 3,
        "target_id": "777",
        "resolved": {"messages": {"777": target}},
    }
    menu = await bot.fake.interact(2, data, user=("940000000000000001", "alice"))
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{menu['id']}/")))
    modal = bot.fake.find("POST", rf"/interactions/{menu['id']}/")[0].body
    assert modal["type"] == 9  # the tone is asked first
    inputs = {c["custom_id"]: c for row in modal["data"]["components"] for c in row["components"]}
    assert inputs["text"]["value"] == "our cafe opens at dawn" and inputs["tone"]["value"]
    submit = await bot.fake.submit_modal(modal["data"]["custom_id"], "our cafe opens at dawn", more={"tone": "witty"})
    final = await bot.finished(submit["token"])
    assert final["embeds"][0]["title"] == "remix · v1 of 1"
    assert "witty" in bot.generator.requests[-1].messages[-1].content
    assert bot.generator.requests[-1].messages[-1].content.endswith("our cafe opens at dawn")


async def test_rate_limit_headers_slow_streaming_edits(bot: Harness) -> None:
    bot.generator.delay_s = 0.05
    bot.fake.rate_limit_headers = {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset-After": "0.6"}
    payload = await bot.fake.slash("create", {"kind": "story", "prompt": "a slow river"})
    await bot.finished(payload["token"])
    edits = bot.originals(payload["token"])[:-1]
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert gaps and min(gaps) >= 0.55, gaps


async def test_sharded_client_connects_and_answers(tmp_path: Path) -> None:
    bot = await start_harness(tmp_path, CHORUS_DISCORD__SHARD_COUNT="1")
    try:
        from adapters.discord.app import ShardedChorusClient

        assert isinstance(bot.adapter.client, ShardedChorusClient)
        identify = next(op for op in bot.fake.gateway_ops if op["op"] == 2)
        assert identify["d"]["shard"] == [0, 1]
        payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "sharded tea"})
        assert "sharded tea" in (await bot.finished(payload["token"]))["embeds"][0]["description"]
    finally:
        await stop_harness(bot)


async def test_a_process_running_a_share_of_the_shards_identifies_as_them_and_leaves_syncing_to_shard_0(
    tmp_path: Path,
) -> None:
    fake = FakeDiscord()
    await fake.start()
    share = await start_harness(
        tmp_path / "b", fake=fake, CHORUS_DISCORD__SHARD_COUNT="2", CHORUS_DISCORD__SHARD_IDS="[1]"
    )
    try:
        identify = next(op for op in fake.gateway_ops if op["op"] == 2)
        assert identify["d"]["shard"] == [1, 2]  # only its own shard: the other process holds shard 0
        payload = await fake.slash("create", {"kind": "slogan", "prompt": "second shard tea"})
        assert "second shard tea" in (await share.finished(payload["token"]))["embeds"][0]["description"]
        assert not fake.find("PUT", r"/commands$")  # two processes must not both overwrite the commands
    finally:
        await stop_harness(share, stop_fake=False)
    first = await start_harness(
        tmp_path / "a", fake=fake, CHORUS_DISCORD__SHARD_COUNT="2", CHORUS_DISCORD__SHARD_IDS="[0]"
    )
    try:
        assert fake.find("PUT", r"/commands$")
    finally:
        await stop_harness(first)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CHORUS_DISCORD__SHARD_IDS": "[0]"}, "needs shard_count"),
        ({"CHORUS_DISCORD__SHARD_COUNT": "2", "CHORUS_DISCORD__SHARD_IDS": "[2]"}, "count from 0 to 1"),
        ({"CHORUS_DISCORD__SHARD_COUNT": "2", "CHORUS_DISCORD__SHARD_IDS": "[1, 1]"}, "twice"),
    ],
)
def test_shard_ids_that_cannot_work_are_refused_at_load(tmp_path: Path, env: dict[str, str], words: str) -> None:
    from config.settings import ConfigError

    with pytest.raises(ConfigError, match=words):
        settings_for(tmp_path, **env)


def test_the_token_comes_from_the_environment_or_a_secrets_file(tmp_path: Path) -> None:
    from adapters.discord.app import TokenMissing, read_token

    settings = settings_for(tmp_path)
    assert read_token(settings, {"CHORUS_DISCORD_TOKEN": " abc \n"}) == "abc"
    with pytest.raises(TokenMissing, match="CHORUS_DISCORD_TOKEN"):
        read_token(settings, {})
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    from_file = settings_for(tmp_path, CHORUS_DISCORD__TOKEN_FILE=str(secret), CHORUS_DISCORD__TOKEN_ENV="MY_TOKEN")
    assert read_token(from_file, {}) == "from-file"
    assert read_token(from_file, {"MY_TOKEN": "env-wins"}) == "env-wins"


def test_an_unreadable_or_empty_token_file_says_which_file(tmp_path: Path) -> None:
    from adapters.discord.app import TokenMissing, read_token

    missing = tmp_path / "no-such-token"
    with pytest.raises(TokenMissing, match=re.escape(f"cannot read discord.token_file {missing}")):
        read_token(settings_for(tmp_path, CHORUS_DISCORD__TOKEN_FILE=str(missing)), {})
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    with pytest.raises(TokenMissing, match=re.escape(f"set $CHORUS_DISCORD_TOKEN or {empty}")):
        read_token(settings_for(tmp_path, CHORUS_DISCORD__TOKEN_FILE=str(empty)), {})


async def test_a_token_discord_refuses_stops_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDiscord()
    await fake.start()
    fake.fail("GET", r"/users/@me$", status=401, via=False)
    settings = settings_for(tmp_path, **fake.env())
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(), drops=False)
    apply_endpoints(settings)
    try:
        code = await asyncio.wait_for(DiscordAdapter(chorus).run("wrong-token"), 30)
        assert code == 1 and "refused the bot token" in capsys.readouterr().err
    finally:
        await chorus.close()
        await fake.stop()


async def test_a_slow_handler_is_deferred_by_the_watchdog_before_discords_deadline(tmp_path: Path) -> None:
    from bots.reply import Reply

    bot = await start_harness(tmp_path, CHORUS_DISCORD__ACK_DEADLINE_S="0.2")
    try:

        async def slow(ctx) -> None:
            await asyncio.sleep(0.6)  # a slow store, say
            await ctx.responder.send(Reply(parts=("Here it is.",), title="Chorus help"))

        bot.chorus.router.commands["help"] = replace_handler(bot.chorus.router.commands["help"], "help", slow)
        payload = await bot.fake.slash("help", {})
        await wait_until(lambda: bool(bot.originals(payload["token"])))
        callback = bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0]
        edit = bot.originals(payload["token"])[0]
        # Deferred (type 5) by the watchdog, before the slow handler's answer arrived as an edit.
        assert callback.body["type"] == 5 and callback.at < edit.at
        assert edit.body["embeds"][0]["description"] == "Here it is."
    finally:
        await stop_harness(bot)


def _record_handling(bot: Harness) -> dict[str, float]:
    """Interaction id -> when the core started handling it."""
    started: dict[str, float] = {}
    handle = bot.chorus.handle

    async def recording(event, responder) -> None:
        interaction = getattr(responder, "interaction", None)
        if interaction is not None:
            started.setdefault(str(interaction.id), time.monotonic())
        await handle(event, responder)

    bot.chorus.handle = recording  # type: ignore[method-assign]
    return started


async def test_a_burst_is_acknowledged_before_any_of_it_is_processed(bot: Harness) -> None:
    started = _record_handling(bot)
    ids = await bot.fake.burst(60)
    await wait_until(lambda: all(i in started for i in ids))
    assert all(i in bot.fake.callback_at for i in ids)
    assert min(started[i] for i in ids) > max(bot.fake.callback_at[i] for i in ids)
    # Over a few kept-alive connections, not one new connection per interaction.
    peers = {r.peer for r in bot.fake.find("POST", r"/interactions/\d+/[^/]+/callback") if r.path.split("/")[2] in ids}
    assert 0 < len(peers) <= ACK_CONNECTIONS


async def test_a_stuck_ack_holds_back_the_other_commands_only_briefly(bot: Harness) -> None:
    started = _record_handling(bot)
    bot.fake.fail("POST", r"/interactions/\d+/[^/]+/callback", retry_after=1.5)  # its defer retries in 1.5 s
    stuck = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a stuck bakery"})
    await wait_until(lambda: bot.fake.faults[0].hits == 1)
    quick = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a quick bakery"})
    await wait_until(lambda: quick["id"] in started, timeout_s=ACKS_FIRST_MAX_HOLD_S + 0.75)
    assert stuck["id"] not in bot.fake.callback_at  # still waiting out its 429
    await wait_until(lambda: stuck["id"] in started)
    await bot.finished(stuck["token"])
    await bot.finished(quick["token"])


async def test_the_publisher_posts_unprompted_to_a_channel(bot: Harness) -> None:
    from bots.reply import Reply

    assert bot.chorus.publisher is not None  # attached once the gateway was ready
    message_id = await bot.chorus.publisher.publish(bot_conversation(), Reply.text("Prompt of the day: @here a door"))
    posted = bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")[-1]
    assert posted.body["allowed_mentions"] == {"parse": []} and "@here" not in posted.body["content"]
    assert message_id in bot.fake.messages


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    return (
        env
        | {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake", "CHORUS_CHORUS__PLATFORM": "discord"}
        | extra
    )


def test_chorus_run_on_discord_without_a_token_says_where_to_put_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "chorus", "run"], env=_cli_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "CHORUS_DISCORD_TOKEN" in result.stderr, result.stderr


async def test_chorus_run_connects_to_discord_and_answers_a_command(tmp_path: Path) -> None:
    import signal
    import sys

    fake = FakeDiscord()
    await fake.start()
    env = _cli_env(
        tmp_path,
        CHORUS_DISCORD_TOKEN="cli-token",
        **fake.env(),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus", "run", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await fake.wait_connected(60)
        await wait_until(lambda: bool(fake.find("PUT", r"/applications/\d+/commands$")), 60)
        payload = await fake.slash("create", {"kind": "tweet", "prompt": "a tea shop launch"})
        await wait_until(
            lambda: any(r.body and r.body.get("components") for r in fake.find("PATCH", rf"/{payload['token']}/")), 60
        )
        assert fake.requests[0].headers["Authorization"] == "Bot cli-token"
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30)
        await fake.stop()


async def test_a_long_result_is_split_into_follow_ups_with_the_buttons_on_the_last(bot: Harness) -> None:
    words = ("lighthouse", "harbour", "tide", "lantern", "gull", "keeper", "storm", "beacon", "shore", "night")
    # Varied words (a run of one word is degenerate text the studio never shows); cut at 180 words a variant.
    bot.generator.script = lambda request: " ".join(f"{words[i % 10]}{i}" for i in range(700))
    bot.generator.delay_s = 0.0
    payload = await bot.fake.slash("create", {"kind": "post", "prompt": "a long one", "n": 3})  # ~6000 chars
    token = payload["token"]
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/webhooks/\d+/{token}$")))
    final_edit = [r for r in bot.originals(token) if "v1" in str(r.body) and "✍️" not in str(r.body)][-1].body
    follow_up = bot.fake.find("POST", rf"/webhooks/\d+/{token}$")[0].body
    first, second = final_edit["embeds"][0]["description"], follow_up["embeds"][0]["description"]
    assert len(first) <= 4096 and len(second) <= 4096 and len(first) + len(second) > 4096
    assert not final_edit.get("components") and follow_up["components"]


async def test_attachments_are_uploaded(bot: Harness, tmp_path: Path) -> None:
    from bots.reply import Attachment, Reply

    chart = tmp_path / "stats.png"
    chart.write_bytes(b"\x89PNG\r\n\x1a\nfake")

    async def stats(ctx) -> None:
        await ctx.responder.send(Reply(parts=("Your week",), attachments=(Attachment("stats.png", chart, "a chart"),)))

    bot.chorus.router.commands["help"] = replace_handler(bot.chorus.router.commands["help"], "help", stats)
    payload = await bot.fake.slash("help", {})
    await wait_until(lambda: bool(bot.fake.find("POST", rf"/interactions/{payload['id']}/")))
    callback = bot.fake.find("POST", rf"/interactions/{payload['id']}/")[0]
    assert callback.headers["Content-Type"].startswith("multipart/form-data")
    assert callback.body["data"]["attachments"][0]["filename"] == "stats.png"


async def test_forget_asks_privately_and_the_confirm_button_deletes(bot: Harness) -> None:
    await create_one(bot)
    ask = await bot.fake.slash("forget", {})
    answer = await ephemeral_answer(bot, ask)
    assert "cannot be undone" in answer["content"]
    message_id = bot.fake.originals[ask["token"]]
    confirm = next(cid for cid in custom_ids(bot.fake.messages[message_id]) if ":forget_confirm:" in cid)
    assert confirm.endswith(":940000000000000001")  # only the asker may confirm
    click = await bot.fake.click(message_id, confirm)
    done = await ephemeral_answer(bot, click)
    assert done["content"].startswith("Done. Deleted ") and "1 result" in done["content"]
    assert await bot.chorus.store.latest_generation(bot_conversation()) is None


async def test_commands_sync_to_the_listed_guilds_only(tmp_path: Path) -> None:
    bot = await start_harness(tmp_path, CHORUS_DISCORD__SYNC_GUILDS=f'["{GUILD_ID}"]')
    try:
        synced = bot.fake.find("PUT", r"/applications/\d+/guilds/\d+/commands$")
        assert [r.path.split("/")[4] for r in synced] == [GUILD_ID]
        assert {c["name"] for c in synced[0].body} >= {"create", "remix", "help", "Remix with Chorus"}
        assert not bot.fake.find("PUT", r"/applications/\d+/commands$")
    finally:
        await stop_harness(bot)


async def test_asking_for_an_ungranted_message_content_intent_stops_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDiscord()
    fake.privileged_refused = 1 << 15  # MESSAGE_CONTENT
    await fake.start()
    settings = settings_for(
        tmp_path,
        **fake.env(),
        CHORUS_DISCORD__MESSAGE_CONTENT_INTENT="true",
    )
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(), drops=False)
    apply_endpoints(settings)
    try:
        code = await asyncio.wait_for(DiscordAdapter(chorus).run("fake-token"), 30)
        assert code == 1 and "Message Content intent" in capsys.readouterr().err
    finally:
        await chorus.close()
        await fake.stop()


@pytest.mark.slow
async def test_two_commands_on_the_real_engine_queue_stream_and_finish(tmp_path: Path, embedded_spec) -> None:
    from generation.engine import BatchingEngine

    engine = BatchingEngine(embedded_spec, max_batch=1, max_queue=8, prefill_chunk=16)
    await engine.warmup()
    bot = await start_harness(tmp_path, engine)  # type: ignore[arg-type]
    try:
        first = await bot.fake.slash("create", {"kind": "headline", "prompt": "a tea shop opening"})
        second = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a bike repair cafe"})

        def ended(token: str) -> dict | None:
            """The result with its buttons, or the ⚠ note that replaces it when the real model's sampled text was
            unusable (its thread count, and so its rounding, varies with load): either way not left "thinking…"."""
            if (result := bot.final_edit(token)) is not None:
                return result.body
            edits = bot.originals(token)
            last = edits[-1].body if edits else None
            return last if isinstance(last, dict) and "⚠" in str(last) else None

        one = await wait_for(lambda: ended(first["token"]), timeout_s=120)
        two = await wait_for(lambda: ended(second["token"]), timeout_s=120)
        for body, kind in ((one, "headline"), (two, "slogan")):
            if body.get("components"):
                assert body["embeds"][0]["title"] == f"{kind} · v1 of 1" and body["embeds"][0]["description"]
            else:
                assert "Try again" in str(body), body  # the note says what to do
        waiting = [str(r.body) for r in bot.originals(second["token"])]
        assert any("Queued: 1st in line" in body for body in waiting), waiting
    finally:
        await stop_harness(bot)


async def test_mydata_arrives_as_an_ephemeral_json_attachment(bot: Harness) -> None:
    await create_one(bot)
    payload = await bot.fake.slash("mydata", {})
    answer = await ephemeral_answer(bot, payload)
    assert answer["attachments"][0]["filename"] == "chorus-mydata.json"
    assert "for you alone" in answer["content"]


async def test_a_private_file_over_the_upload_limit_is_explained_not_left_unanswered(bot: Harness) -> None:
    # Discord refuses a file over the server's upload limit (413); /mydata then answered nothing at all, and Discord
    # showed "The application did not respond".
    await create_one(bot)
    bot.fake.upload_limit = 100
    payload = await bot.fake.slash("mydata", {})
    callbacks, follow_ups = rf"/interactions/{payload['id']}/", rf"/webhooks/\d+/{payload['token']}"

    def answers() -> list[dict]:
        sent = bot.fake.find("POST", callbacks) + bot.fake.find("POST", follow_ups)
        return [body for r in sent if not (body := r.body.get("data", r.body)).get("attachments")]

    await wait_until(lambda: bool(answers()))
    [answer] = answers()
    assert answer["flags"] & 64, "still private"
    assert "could not be attached" in answer["content"] and "too large" in answer["content"]
    posted = bot.fake.find("POST", r"/channels/\d+/messages$")
    assert [r for r in posted if "chorus-mydata" in str(r.body)] == []


async def test_a_private_file_is_never_posted_to_the_channel_when_the_interaction_is_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_harness(tmp_path, CHORUS_DISCORD__INTERACTION_TOKEN_TTL_S="0.000001")
    try:
        await bot.fake.slash("mydata", {})
        await wait_until(lambda: "could not be delivered privately" in caplog.text)
        posted = bot.fake.find("POST", r"/channels/\d+/messages$")
        assert [r for r in posted if "chorus-mydata" in str(r.body)] == []
    finally:
        await stop_harness(bot)


async def test_a_mention_that_asks_for_something_new_creates_it_as_a_reply_to_the_asker(bot: Harness) -> None:
    """ "@Chorus write a slogan for our bake sale" in a channel that already has a result: a new result, posted as a
    reply to the message that asked (findable in a busy channel), not a v2 of someone else's result."""
    await create_one(bot, "a bike repair cafe")
    ask = f"<@{BOT_ID}> write a slogan for our <@&{BAKERS_ROLE_ID}> bake sale"
    said = await bot.fake.user_message(ask, mention=True)

    async def new_result():
        record = await bot.chorus.store.latest_generation(bot_conversation())
        return record if record is not None and "bake sale" in record.prompt and record.message_ref else None

    record = await wait_for(new_result, timeout_s=10, describe=lambda: "no new result for the mention")
    assert record.version == 1 and record.parent_id is None and record.prompt == "our @Bakers bake sale"
    posted = bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")
    assert posted and str(posted[-1].body["message_reference"]["message_id"]) == said["id"]


async def test_mentions_in_a_slash_prompt_reach_the_model_as_names(bot: Harness) -> None:
    """Typing @Bakers or #general into a prompt sends `<@&id>` and `<#id>`: the model gets the names the person saw,
    and someone Chorus has not seen reads "@someone", never a raw id."""
    prompt = f"a bake sale by <@&{BAKERS_ROLE_ID}> in <#{CHANNEL_ID}> for <@940000000000000077>"
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": prompt})
    await bot.finished(payload["token"])
    asked = bot.generator.requests[-1].messages[-1].content
    assert "a bake sale by @Bakers in #general for @someone" in asked, asked


async def test_a_double_click_makes_one_version_and_the_second_click_is_told_privately(
    bot: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    message_id, final = await create_one(bot)
    regenerate = next(cid for cid in custom_ids(final) if ":regenerate:" in cid)
    # The first click's generation is held until the second click is answered, however slow the machine.
    gate, original = asyncio.Event(), bot.generator.stream

    async def held(request: Any) -> AsyncIterator[Any]:
        await gate.wait()
        async for chunk in original(request):
            yield chunk

    monkeypatch.setattr(bot.generator, "stream", held)
    first = await bot.fake.click(message_id, regenerate)
    await wait_until(lambda: len(bot.chorus.clicks) == 1)
    second = await bot.fake.click(message_id, regenerate)
    answer = await ephemeral_answer(bot, second)
    assert "Already on it" in answer["content"]
    gate.set()
    await bot.finished(first["token"])
    record = await latest_with_ref(bot, version=2)
    versions = await bot.chorus.store.versions(record.root_id)
    assert [version.version for version in versions] == [1, 2]
    # Once it is done, the same button works again.
    third = await bot.fake.click(message_id, regenerate)
    await bot.finished(third["token"])


async def test_a_result_a_moderator_deletes_while_it_is_written_is_not_posted_again(bot: Harness) -> None:
    """A moderator deletes the half-written result: Chorus stops editing it (every edit would be a 404, which Discord
    counts towards its invalid-request ban) and does not post the finished result again, undoing the moderator. The
    version is still stored, so /history has it."""
    bot.generator.delay_s = 0.1
    payload = await bot.fake.slash("create", {"kind": "slogan", "prompt": "a night-owl bakery"})
    token = payload["token"]
    await wait_until(lambda: len(bot.originals(token)) >= 2)
    await bot.fake.delete_message(bot.fake.originals[token])
    deleted_at = len(bot.fake.requests)

    async def stored():
        record = await bot.chorus.store.latest_generation(bot_conversation())
        return record if record is not None and record.variants else None

    record = await wait_for(stored, timeout_s=20, describe=lambda: "the result was not stored")
    await wait_until(lambda: not bot.adapter.tasks and not bot.adapter.streams)  # its handling is over
    record = await bot.chorus.store.get_generation(record.id)
    assert record is not None
    after = [r for r in bot.fake.requests[deleted_at:] if token in r.path or "/channels/" in r.path]
    assert len([r for r in after if r.method == "PATCH"]) <= 1, [r.path for r in after]
    assert not [r for r in after if r.method == "POST"], [r.path for r in after]
    assert record.message_ref is None


async def test_a_bare_mention_is_answered_with_how_to_ask(bot: Harness) -> None:
    """ "@Chorus" alone (people ping a bot to see whether it is there) gets an answer, as a reply, not silence."""
    said = await bot.fake.user_message(f"<@{BOT_ID}>", mention=True)

    def answered() -> list[Recorded]:
        return [
            r
            for r in bot.fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")
            if str((r.body.get("message_reference") or {}).get("message_id")) == said["id"]
        ]

    await wait_until(lambda: bool(answered()))
    assert "write a slogan for our bake sale" in str(answered()[0].body)
