"""The Slack adapter end to end: real slack-bolt and slack_sdk against a fake Slack on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_slack import (
    BOT_USER,
    TEAM,
    FakeSlack,
    block_actions,
    event_callback,
    find_element,
    form,
    message_deleted_event,
    message_event,
    reaction_event,
    sign,
    slash_body,
)
from slack_support import (
    MENTION_KEYS,
    SCALE,
    SlackChorus,
    block_texts,
    elements,
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    final_updates,
    has_actions,
    start_slack,
)

from bots.events import Conversation
from generation.fake import FakeGenerator
from support import wait_until

GENERAL = Conversation("slack", TEAM, "C0GENERAL")
LONG = " ".join(f"word{i}" for i in range(24))


def long_script(request) -> str:
    return LONG


@pytest.fixture
async def slack(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[SlackChorus]:
    chorus = await start_slack(tmp_path, fake, generator=FakeGenerator(long_script, delay_s=0.015))
    yield chorus
    await chorus.close()


async def test_slash_command_acks_at_once_then_streams_into_a_placeholder(slack: SlackChorus) -> None:
    fake = slack.fake
    status, body, _ = await slack.slash(slash_body("/create", "slogan a bookstore cafe --tone playful --n 2"))
    # Acked first: the answer came back before the (slow) generation finished.
    assert status == 200 and body == "" and not final_updates(fake)
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


async def create_result(slack: SlackChorus, text: str = "slogan a bookstore cafe") -> dict:
    """Run /create and return the finished message as the fake holds it (ts, blocks)."""
    before = len(final_updates(slack.fake))
    status, _, _ = await slack.slash(slash_body("/create", text))
    assert status == 200
    await wait_until(lambda: len(final_updates(slack.fake)) > before)
    await slack.idle()
    final = final_updates(slack.fake)[-1]
    return slack.fake.messages[(final["channel"], final["ts"])]


async def test_a_button_makes_version_2_in_the_results_thread(slack: SlackChorus) -> None:
    v1 = await create_result(slack)
    status, _, _ = await slack.interact(block_actions(v1, find_element(v1, "chorus:regenerate")))
    # Acked first: version 2 was still being written when the answer came back.
    assert status == 200 and not any("v2" in block_texts(b["blocks"]) for b in final_updates(slack.fake))
    await wait_until(lambda: any("v2" in block_texts(b["blocks"]) for b in final_updates(slack.fake)))
    await slack.idle()
    v2_post = [c for c in slack.fake.answered("chat.postMessage") if c.body.get("thread_ts") == v1["ts"]]
    assert len(v2_post) == 1  # the new version's placeholder, in the thread under v1
    record = await slack.bot.store.find_by_message_ref("slack", f"C0GENERAL:{v2_post[0].response['ts']}")
    assert record is not None and record.version == 2 and record.instruction == "regenerate"


async def test_the_tone_select_makes_a_version_in_that_tone(slack: SlackChorus) -> None:
    v1 = await create_result(slack)
    select = find_element(v1, "chorus:tone")
    choice = next(option for option in select["options"] if option["text"]["text"] == "formal")
    await slack.interact(block_actions(v1, {**select, "selected_option": choice}))
    await wait_until(lambda: any("tone: formal" in block_texts(b["blocks"]) for b in final_updates(slack.fake)))
    await slack.idle()
    latest = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL", v1["ts"]))
    assert latest is not None and latest.tone == "formal" and latest.version == 2


async def test_a_thread_reply_refines_the_newest_version_in_the_thread(slack: SlackChorus) -> None:
    v1 = await create_result(slack)
    await slack.interact(block_actions(v1, find_element(v1, "chorus:shorter")))
    await wait_until(lambda: any("v2" in block_texts(b["blocks"]) for b in final_updates(slack.fake)))
    await slack.idle()
    reply = message_event("make it rhyme", thread_ts=v1["ts"])
    status, _, _ = await slack.event(event_callback(reply))
    assert status == 200
    await wait_until(lambda: any("v3" in block_texts(b["blocks"]) for b in final_updates(slack.fake)))
    await slack.idle()
    v3 = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL", v1["ts"]))
    assert v3 is not None and v3.version == 3 and v3.instruction == "make it rhyme"
    v2 = await slack.bot.store.get_generation(v3.parent_id or 0)
    assert v2 is not None and v2.version == 2  # refined the newest version, not the thread's root
    assert all(c.body.get("thread_ts") == v1["ts"] for c in slack.fake.answered("chat.postMessage")[1:])


async def test_a_reaction_on_a_result_is_an_engagement_signal(slack: SlackChorus) -> None:
    v1 = await create_result(slack)
    status, _, _ = await slack.event(event_callback(reaction_event("fire", "C0GENERAL", v1["ts"])))
    assert status == 200
    await slack.idle()  # the handler task exists before Slack gets its 200
    assert await slack.bot.store.user_data_counts("slack", "U0BOB") == {
        "generations": 0,
        "feedback": 1,
        "engagement": 1,
    }


async def test_429s_on_post_and_update_are_waited_out_and_the_final_text_arrives(slack: SlackChorus) -> None:
    fake = slack.fake
    fake.fail("chat.postMessage", retry_after=1)
    fake.fail("chat.update", times=2, retry_after=0)
    await slack.slash(slash_body("/create", "slogan a bookstore cafe"))
    await wait_until(lambda: len(final_updates(fake)) == 1)
    limited, retried = fake.calls_to("chat.postMessage")  # one 429, then the retry after Retry-After
    assert retried.at - limited.at >= 1.0 * SCALE
    assert len(fake.calls_to("chat.update")) > len(fake.answered("chat.update"))
    assert "word23" in block_texts(final_updates(fake)[0]["blocks"])


async def test_a_retried_event_does_not_start_a_second_generation(slack: SlackChorus) -> None:
    v1 = await create_result(slack)
    callback = event_callback(message_event("make it longer", thread_ts=v1["ts"]))
    first = await slack.event(callback)
    retry = await slack.event(callback, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert first[0] == retry[0] == 200
    await wait_until(lambda: len(final_updates(slack.fake)) == 2)
    await slack.idle()
    assert await slack.bot.store.count_generations() == 2
    # /create, then one refinement (plus its one retry when the model hands the same text back)
    assert len(slack.bot.generator.requests) <= 3


@pytest.mark.parametrize(
    "how",
    ["wrong secret", "stale timestamp", "unsigned"],
)
async def test_bad_or_stale_signatures_are_refused(slack: SlackChorus, how: str) -> None:
    body = form(slash_body("/create", "slogan a cafe"))
    if how == "wrong secret":
        headers = sign(body, secret="not-the-secret")
    elif how == "stale timestamp":
        headers = sign(body, timestamp=int(time.time()) - 600)
    else:
        headers = {}
    status, _, _ = await slack.post(body, "application/x-www-form-urlencoded", headers=headers, signed=False)
    assert status == 401
    assert slack.fake.calls_to("chat.postMessage") == [] and slack.bot.generator.requests == []


async def test_a_button_on_a_deleted_result_explains_itself_ephemerally(slack: SlackChorus) -> None:
    v1 = await create_result(slack)
    element = find_element(v1, "chorus:more")
    await slack.bot.store.forget_user("slack", "U0ALICE")
    await slack.interact(block_actions(v1, element, user="U0ALICE"))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    ephemeral = slack.fake.answered("chat.postEphemeral")[0].body
    assert ephemeral["user"] == "U0ALICE" and "no longer exists" in ephemeral["text"]
    assert len(slack.bot.generator.requests) == 1


async def test_a_parse_error_is_a_usage_hint_only_the_user_sees(slack: SlackChorus) -> None:
    await slack.slash(slash_body("/create", "sloagn a cafe"))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    ephemeral = slack.fake.answered("chat.postEphemeral")[0].body
    assert "Did you mean 'slogan'?" in ephemeral["text"] and ephemeral["user"] == "U0ALICE"
    assert slack.fake.calls_to("chat.postMessage") == []


async def test_length_in_the_command_text_sizes_the_result_and_a_typo_gets_a_did_you_mean(slack: SlackChorus) -> None:
    budget = slack.bot.chorus.settings.kinds["story"].max_new_tokens
    v1 = await create_result(slack, "story a lighthouse --length long")
    assert "story · v1 of 1" in block_texts(v1["blocks"])
    request = slack.bot.generator.requests[-1]
    assert request.max_new_tokens == budget * 2 and request.messages[-1].content.endswith("Make it rich and detailed.")
    await slack.slash(slash_body("/create", "story a lighthouse --length medum"))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    ephemeral = slack.fake.answered("chat.postEphemeral")[0].body
    assert "Unknown length 'medum'. Did you mean 'medium'?" in ephemeral["text"]
    assert len(slack.bot.generator.requests) == 1


async def test_a_mention_in_a_command_reaches_the_model_as_a_name_not_a_user_id(slack: SlackChorus) -> None:
    await create_result(slack, "slogan a farewell party for <@U0BOB>")
    prompt = slack.bot.generator.requests[-1].messages[-1].content
    assert "@bob" in prompt and "U0BOB" not in prompt
    # Someone Slack will not name (left the workspace, or no users:read): readable text, and no error.
    slack.fake.fail("users.info", error="user_not_found")
    await create_result(slack, "slogan a welcome for <@U0GONE>")
    prompt = slack.bot.generator.requests[-1].messages[-1].content
    assert "@someone" in prompt and "U0GONE" not in prompt


async def test_a_command_is_acknowledged_before_the_people_it_mentions_are_looked_up(slack: SlackChorus) -> None:
    # Slack shows "operation_timeout" unless a command is acknowledged within 3 seconds; users.info (slow, or waiting
    # out a 429) must not stand between a command and its ack.
    looked_up = slack.fake.hold("users.info")
    try:
        status, _, _ = await asyncio.wait_for(slack.slash(slash_body("/create", "slogan a party for <@U0BOB>")), 3.0)
    finally:
        looked_up.set()
    assert status == 200
    await wait_until(lambda: len(final_updates(slack.fake)) == 1)
    await slack.idle()
    prompt = slack.bot.generator.requests[-1].messages[-1].content
    assert "@bob" in prompt and "U0BOB" not in prompt


async def test_outside_its_channels_chorus_says_so_through_the_response_url(slack: SlackChorus) -> None:
    slack.fake.fail("chat.postMessage", times=5, error="not_in_channel")
    await slack.slash(slash_body("/create", "slogan a cafe", response_url=slack.fake.response_url("cmd1")))
    await wait_until(lambda: len(slack.fake.calls_to("response_url")) == 1)
    await slack.idle()
    assert len(slack.fake.calls_to("chat.postMessage")) == 1 and slack.fake.calls_to("chat.update") == []
    hook = slack.fake.calls_to("response_url")[0]
    assert hook.path == "/response/cmd1" and "/invite @Chorus" in hook.body["text"]
    assert hook.body["response_type"] == "ephemeral"


async def test_where_an_invitation_would_not_help_chorus_does_not_ask_for_one(slack: SlackChorus) -> None:
    # restricted_action: the channel lets only some people (admins) post; inviting Chorus changes nothing.
    slack.fake.fail("chat.postMessage", times=5, error="restricted_action")
    await slack.slash(slash_body("/create", "slogan a cafe", response_url=slack.fake.response_url("cmd1")))
    await wait_until(lambda: len(slack.fake.calls_to("response_url")) == 1)
    await slack.idle()
    text = slack.fake.calls_to("response_url")[0].body["text"]
    assert "settings don't let me post here" in text and "/invite" not in text


async def test_a_command_in_a_direct_message_between_people_does_not_ask_for_an_invite(slack: SlackChorus) -> None:
    # Slash commands work in any DM, but an app cannot be invited into a DM between two people.
    slack.fake.fail("chat.postMessage", times=5, error="channel_not_found")
    hook = slack.fake.response_url("dm1")
    await slack.slash(slash_body("/create", "slogan a cafe", channel="D0ALICEBOB", response_url=hook))
    await wait_until(lambda: len(slack.fake.calls_to("response_url")) == 1)
    await slack.idle()
    text = slack.fake.calls_to("response_url")[0].body["text"]
    assert "direct message between other people" in text and "/invite" not in text


async def test_nothing_chorus_sends_can_ping_anyone(tmp_path: Path, fake: FakeSlack) -> None:
    def pinging(request) -> str:
        return "hey <!channel> and <!here> <!everyone> <@U0BOSS> <!subteam^S0ALL> & friends"

    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(pinging))
    try:
        await slack.slash(slash_body("/create", "slogan <!here> a cafe &amp; <@U0BOSS>"))
        await wait_until(lambda: len(final_updates(fake)) == 1)
        await slack.idle()
        v1 = fake.messages[(final_updates(fake)[0]["channel"], final_updates(fake)[0]["ts"])]
        await slack.event(event_callback(message_event("say <!channel> louder", thread_ts=v1["ts"])))
        await wait_until(lambda: len(final_updates(fake)) == 2)
        await slack.idle()
    finally:
        await slack.close()
    sent = [call.text() for call in fake.calls if call.method.startswith(("chat.", "views.", "response_url"))]
    assert sent and not [key for key in MENTION_KEYS for text in sent if key in text]
    assert "&amp; friends" in block_texts(final_updates(fake)[0]["blocks"])


async def test_help_is_ephemeral(slack: SlackChorus) -> None:
    await slack.slash(slash_body("/help", ""))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    assert "/create" in block_texts(slack.fake.answered("chat.postEphemeral")[0].body["blocks"])


async def test_a_retry_that_reaches_another_worker_is_not_handled_twice(tmp_path: Path, fake: FakeSlack) -> None:
    first = await start_slack(tmp_path, fake)
    second = await start_slack(tmp_path, fake)  # a second HTTP worker on the same database
    try:
        v1 = await create_result(first)
        callback = event_callback(message_event("make it bolder", thread_ts=v1["ts"]))
        await first.event(callback)
        await second.event(callback, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
        await wait_until(lambda: len(final_updates(fake)) == 2)
        await first.idle()
        await second.idle()
        assert await first.bot.store.count_generations() == 2
        assert len(first.bot.generator.requests) + len(second.bot.generator.requests) == 2
    finally:
        await second.close()
        await first.close()


async def test_slack_can_verify_the_request_url(slack: SlackChorus) -> None:
    """Setting the Request URL in Slack's app config sends a signed challenge that must be echoed."""
    status, body, _ = await slack.event(
        {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY", "type": "url_verification"}
    )
    assert status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY" in body


async def test_with_a_command_prefix_every_hint_names_the_prefixed_commands(tmp_path: Path, fake: FakeSlack) -> None:
    # With `/create` taken by another app, Chorus' own hints still said "/create …", which runs that other app.
    slack = await start_slack(tmp_path, fake, CHORUS_SLACK__COMMAND_PREFIX="chorus-")
    try:
        await slack.slash(slash_body("/chorus-help", ""))
        await slack.slash(slash_body("/chorus-create", ""))
        await wait_until(lambda: len(fake.answered("chat.postEphemeral")) == 2)
        help_text, error = (json.dumps(call.body, ensure_ascii=False) for call in fake.answered("chat.postEphemeral"))
        assert "/chorus-create &lt;kind&gt;" in help_text and "/chorus-brainstorm" in help_text
        assert "Say what to create: /chorus-create &lt;kind&gt;" in error
        opened = {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0HOME", "tab": "home", "event_ts": "1.2"}
        await slack.event(event_callback(opened))
        await wait_until(lambda: len(fake.answered("views.publish")) == 1)
        home = json.dumps(fake.answered("views.publish")[0].body, ensure_ascii=False)
        assert "/chorus-drops status" in home and "/chorus-brainstorm summary" in home
        for text in (help_text, error, home):
            assert not re.search(r"(?<![\w-])/(create|remix|brainstorm|drops|help|forget|mydata|history)\b", text)
    finally:
        await slack.close()


async def test_a_command_prefix_renames_the_slash_commands(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await start_slack(tmp_path, fake, CHORUS_SLACK__COMMAND_PREFIX="chorus-")
    try:
        await slack.slash(slash_body("/chorus-help", ""))
        await wait_until(lambda: len(fake.answered("chat.postEphemeral")) == 1)
        assert "Commands:" in fake.answered("chat.postEphemeral")[0].body["text"]
        status, _, _ = await slack.slash(slash_body("/help", ""))
        assert status == 404  # not registered under its bare name
    finally:
        await slack.close()


async def test_a_tone_in_another_alphabet_keeps_the_result_and_its_tone_select(tmp_path: Path, fake: FakeSlack) -> None:
    # Slack refuses a select option whose value is over 150 characters (the fake checks it): with the tone written as
    # \u escapes, one 30-letter Cyrillic tone made every result in the workspace invalid_blocks.
    tone = "дружелюбный и неформальный тон"
    slack = await start_slack(tmp_path, fake, CHORUS_TONES=json.dumps(["нейтральный", tone], ensure_ascii=False))
    try:
        v1 = await create_result(slack)
        select = find_element(v1, "chorus:tone")
        choice = next(option for option in select["options"] if option["text"]["text"] == tone)
        await slack.interact(block_actions(v1, {**select, "selected_option": choice}))
        await wait_until(lambda: len(final_updates(fake)) == 2)
        await slack.idle()
        latest = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL", v1["ts"]))
    finally:
        await slack.close()
    assert fake.refused == []
    assert latest is not None and latest.tone == tone and latest.version == 2


async def test_a_brainstorm_outside_its_channels_only_asks_to_be_invited(slack: SlackChorus) -> None:
    # The kickoff could not be posted, so there was no thread to open: "Something went wrong" followed the hint.
    slack.fake.fail("chat.postMessage", times=5, error="not_in_channel")
    slack.fake.fail("chat.postEphemeral", times=5, error="not_in_channel")
    await slack.slash(slash_body("/brainstorm", "names for the cafe", response_url=slack.fake.response_url("b1")))
    await wait_until(lambda: len(slack.fake.calls_to("response_url")) == 1)
    await slack.idle()
    assert [call.body["text"] for call in slack.fake.calls_to("response_url")] == [
        "I can't post in this channel yet. Invite me with `/invite @Chorus` and try again."
    ]
    assert await slack.bot.store.open_brainstorm_in_channel(GENERAL) is None  # a later /brainstorm can start


async def test_a_mention_that_asks_for_something_new_creates_it_and_a_dm_does_too(slack: SlackChorus) -> None:
    """ "@Chorus write a slogan for our bake sale" in a channel that already has a result is a new request, not a
    change to that result; Slack's `&amp;` reaches the model as `&`. A DM with a request works the same."""
    v1 = await create_result(slack, "tagline a bike repair cafe")
    before = len(final_updates(slack.fake))
    ask = message_event(f"<@{BOT_USER}> write a slogan for our bake sale &amp; fair")
    await slack.event(event_callback(ask))
    await wait_until(lambda: len(final_updates(slack.fake)) > before)
    await slack.idle()
    record = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL"))
    assert record is not None and record.kind == "slogan" and record.parent_id is None
    assert record.prompt == "our bake sale & fair"
    assert v1["ts"] != final_updates(slack.fake)[-1]["ts"]
    dm = message_event("can you write a poem about the sea", channel="D0ALICE", channel_type="im")
    await slack.event(event_callback(dm))
    await wait_until(lambda: len(final_updates(slack.fake)) > before + 1)
    await slack.idle()
    record = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "D0ALICE"))
    assert record is not None and record.kind == "poem" and record.prompt == "the sea"


async def test_a_double_click_makes_one_version_and_says_so_privately(
    slack: SlackChorus, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = await create_result(slack)
    button = find_element(v1, "chorus:regenerate")
    # The first press's generation is held until the second press is answered, however slow the machine.
    generator, gate = slack.bot.chorus.generator, asyncio.Event()
    original = generator.stream

    async def held(request: Any) -> AsyncIterator[Any]:
        await gate.wait()
        async for chunk in original(request):
            yield chunk

    monkeypatch.setattr(generator, "stream", held)
    await slack.interact(block_actions(v1, button))
    await wait_until(lambda: len(slack.bot.chorus.clicks) == 1)
    await slack.interact(block_actions(v1, button))
    await wait_until(lambda: bool(slack.fake.answered("chat.postEphemeral")))
    assert "Already on it" in slack.fake.answered("chat.postEphemeral")[0].body["text"]
    gate.set()
    await wait_until(lambda: any("v2" in block_texts(b["blocks"]) for b in final_updates(slack.fake)))
    await slack.idle()
    versions = await slack.bot.store.versions(
        (await slack.bot.store.find_by_message_ref("slack", f"C0GENERAL:{v1['ts']}")).root_id
    )
    assert [version.version for version in versions] == [1, 2]


async def test_a_result_an_admin_deletes_while_it_is_written_is_not_posted_again(slack: SlackChorus) -> None:
    """chat.update answers message_not_found once the message is deleted: Chorus stops editing it and does not post
    the finished result anew, which would undo the admin. The version is still stored."""
    await slack.slash(slash_body("/create", "slogan a bookstore cafe"))
    await wait_until(lambda: bool(slack.fake.answered("chat.update")))
    placeholder = slack.fake.answered("chat.postMessage")[0].response
    original = slack.fake.messages.pop((placeholder["channel"], placeholder["ts"]))
    await slack.event(event_callback(message_deleted_event({**original, "channel": placeholder["channel"]})))
    await wait_until(lambda: not slack.adapter.outbound.streams, 20)
    await slack.idle()
    record = await slack.bot.store.latest_generation(Conversation("slack", TEAM, "C0GENERAL"))
    assert record is not None and record.variants and record.message_ref is None
    assert len(slack.fake.answered("chat.postMessage")) == 1, "the result was posted again"


async def test_an_uninstall_of_a_single_workspace_app_is_acknowledged_and_logged_with_what_to_do(
    slack: SlackChorus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="adapters.slack.app"):
        status, _, _ = await slack.event(event_callback({"type": "app_uninstalled"}))
        await slack.idle()
    assert status == 200  # Slack does not retry it, and the operator is told
    assert any("uninstalled" in r.getMessage() and "CHORUS_SLACK_BOT_TOKEN" in r.getMessage() for r in caplog.records)
