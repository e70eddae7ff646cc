"""Slack features beyond the command flow: native streaming, App Home, the remix shortcut, asking buttons and
modals, the Publisher with file uploads."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_slack import (
    TEAM,
    FakeSlack,
    block_actions,
    event_callback,
    find_element,
    message_event,
    message_shortcut,
    slash_body,
    view_submission,
)
from slack_support import (
    SECRETS,
    SlackChorus,
    block_texts,
    elements,
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    final_updates,
    slack_env,
    start_slack,
)

from adapters.slack.app import SlackAdapter, SlackConfigError, run_slack
from adapters.slack.translate import ASK_CALLBACK, REMIX_CALLBACK
from bots.events import Action, Conversation, Message
from bots.reply import Attachment, Reply, ReplyAction
from bots.router import Context
from generation.fake import FakeGenerator
from support import make_bot, settings_for, wait_until

GENERAL = Conversation("slack", TEAM, "C0GENERAL")


@pytest.fixture
async def slack(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[SlackChorus]:
    chorus = await start_slack(tmp_path, fake)
    yield chorus
    await chorus.close()


async def first_result(slack: SlackChorus) -> dict:
    await slack.slash(slash_body("/create", "slogan a bookstore cafe"))
    await wait_until(lambda: len(final_updates(slack.fake)) == 1)
    await slack.idle()
    final = final_updates(slack.fake)[0]
    return slack.fake.messages[(final["channel"], final["ts"])]


@pytest.mark.parametrize("refused", [False, True], ids=["native", "startStream refused"])
async def test_thread_replies_stream_natively_when_enabled(tmp_path: Path, fake: FakeSlack, refused: bool) -> None:
    words = " ".join(f"n{i}" for i in range(30))
    generator = FakeGenerator(lambda request: words, delay_s=0.02)
    slack = await start_slack(tmp_path, fake, generator=generator, CHORUS_SLACK__NATIVE_STREAMING="true")
    if refused:
        fake.fail("chat.startStream", error="not_allowed")
    try:
        v1 = await first_result(slack)
        assert fake.calls_to("chat.startStream") == []  # a slash command has no thread to stream into
        await slack.event(event_callback(message_event("more drama", thread_ts=v1["ts"])))
        await wait_until(lambda: len(final_updates(fake)) == 2)
        await slack.idle()
    finally:
        await slack.close()
    start = fake.calls_to("chat.startStream")
    assert len(start) == 1 and start[0].body["thread_ts"] == v1["ts"]
    assert start[0].body["recipient_user_id"] == "U0ALICE" and start[0].body["recipient_team_id"] == TEAM
    final = final_updates(fake)[1]
    assert "n29" in block_texts(final["blocks"]) and "v2" in block_texts(final["blocks"])
    if refused:
        assert fake.calls_to("chat.appendStream") == [] and fake.calls_to("chat.stopStream") == []
        assert fake.answered("chat.postMessage")[-1].body["thread_ts"] == v1["ts"]
    else:
        streamed_ts = start[0].response["ts"]
        appended = "".join(c.body["markdown_text"] for c in fake.calls_to("chat.appendStream"))
        assert appended and "n29" in start[0].body["markdown_text"] + appended
        stop = fake.calls_to("chat.stopStream")
        assert len(stop) == 1 and stop[0].body["ts"] == streamed_ts
        assert any(b["type"] == "actions" for b in stop[0].body["blocks"]) and final["ts"] == streamed_ts


async def test_app_home_shows_usage_and_settings_only_to_admins(slack: SlackChorus) -> None:
    await first_result(slack)
    for user in ("U0ALICE", "U0ADMIN"):
        opened = {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home", "event_ts": "1.2"}
        await slack.event(event_callback(opened))
    await wait_until(lambda: len(slack.fake.answered("views.publish")) == 2)
    views = {call.body["user_id"]: call.body["view"] for call in slack.fake.answered("views.publish")}
    alice, admin = block_texts(views["U0ALICE"]["blocks"]), block_texts(views["U0ADMIN"]["blocks"])
    assert "generations: 1" in alice and "Workspace settings" not in alice and "/create" in alice
    assert "Workspace settings" in admin and "generations: 0" in admin


async def test_the_remix_shortcut_asks_for_a_tone_then_remixes_the_message(slack: SlackChorus) -> None:
    status, _, _ = await slack.interact(message_shortcut("we open at nine &amp; close late"))
    assert status == 200
    await wait_until(lambda: len(slack.fake.answered("views.open")) == 1)
    view = slack.fake.answered("views.open")[0].body["view"]
    assert view["callback_id"] == REMIX_CALLBACK and "&amp; close late" in block_texts(view["blocks"])
    values = {
        "tone": {"tone": {"type": "static_select", "selected_option": {"value": "formal"}}},
        "n": {"n": {"type": "static_select", "selected_option": {"value": "2"}}},
    }
    status, body, _ = await slack.interact(view_submission(REMIX_CALLBACK, view["private_metadata"], values))
    assert status == 200 and body == ""  # an empty answer closes the modal
    await wait_until(lambda: len(final_updates(slack.fake)) == 1)
    await slack.idle()
    record = await slack.bot.store.latest_generation(GENERAL)
    assert record is not None and record.kind == "remix" and record.tone == "formal"
    assert record.prompt == "we open at nine & close late" and len(record.variants) == 2


async def test_an_asking_button_opens_a_modal_and_the_answer_arrives_as_the_action_value(
    slack: SlackChorus, tmp_path: Path
) -> None:
    heard: list[Action] = []

    async def collect_ideas(ctx: Context) -> bool:
        assert isinstance(ctx.event, Action)
        if ctx.event.action_id != "idea":
            return False
        heard.append(ctx.event)
        await ctx.responder.send(Reply.text(f"Added: {ctx.event.value}"))
        return True

    slack.bot.chorus.intercept(Action, collect_ideas)
    summary = tmp_path / "summary.md"
    summary.write_text("# Ideas\n- cats\n")
    publisher = slack.bot.chorus.publisher
    assert publisher is not None
    ref = await publisher.publish(
        GENERAL,
        Reply(
            parts=("Brainstorm: names for the cafe",),
            actions=(ReplyAction("idea", "Add an idea", value="s1", ask="Your idea?"),),
            attachments=(Attachment("summary.md", summary, "the summary so far"),),
        ),
    )
    channel, _, ts = ref.partition(":")
    assert channel == "C0GENERAL" and (channel, ts) in slack.fake.messages
    assert [c.method for c in slack.fake.calls if c.method.startswith("files.") or c.method == "upload"] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    posted = slack.fake.messages[(channel, ts)]
    await slack.interact(block_actions(posted, find_element(posted, "chorus:idea:ask")))
    await wait_until(lambda: len(slack.fake.answered("views.open")) == 1)
    modal = slack.fake.answered("views.open")[0].body["view"]
    assert modal["callback_id"] == ASK_CALLBACK and modal["blocks"][0]["label"]["text"] == "Your idea?"
    assert heard == []  # nothing happens until the modal is submitted
    answer = {"answer": {"text": {"type": "plain_text_input", "value": "  more cats  "}}}
    await slack.interact(view_submission(ASK_CALLBACK, modal["private_metadata"], answer))
    await wait_until(lambda: len(heard) == 1)
    await slack.idle()
    assert heard[0].value == "more cats" and heard[0].conversation.channel == "C0GENERAL"
    assert heard[0].message_ref == ref and json.loads(modal["private_metadata"])["a"] == "idea"
    assert "Added: more cats" in slack.fake.answered("chat.postMessage")[-1].body["text"]


async def test_buttons_keep_working_after_a_restart(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await start_slack(tmp_path, fake)
    v1 = await first_result(slack)
    await slack.close()
    again = await start_slack(tmp_path, fake)  # same database, new process
    try:
        await again.interact(block_actions(v1, find_element(v1, "chorus:longer")))
        await wait_until(lambda: len(final_updates(fake)) == 2)
        await again.idle()
        assert "longer" in block_texts(final_updates(fake)[1]["blocks"])
        assert [e["type"] for e in elements(final_updates(fake)[1])].count("button") == 6
    finally:
        await again.close()


async def test_the_placeholder_shows_the_queue_position_while_the_model_is_busy(
    tmp_path: Path, fake: FakeSlack
) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(queued=3, delay_s=0.05))
    try:
        await slack.slash(slash_body("/create", "slogan a cafe"))
        await wait_until(lambda: len(final_updates(fake)) == 1)
        await slack.idle()
    finally:
        await slack.close()
    placeholder = fake.answered("chat.postMessage")[0].body
    assert "in line, about" in block_texts(placeholder["blocks"])
    assert "in line" not in block_texts(final_updates(fake)[0]["blocks"])


async def test_when_an_ephemeral_cannot_be_posted_the_response_url_carries_it(slack: SlackChorus) -> None:
    slack.fake.fail("chat.postEphemeral", error="channel_not_found")
    await slack.slash(slash_body("/help", "", channel="D0SOMEDM", response_url=slack.fake.response_url("help")))
    await wait_until(lambda: len(slack.fake.calls_to("response_url")) == 1)
    hook = slack.fake.calls_to("response_url")[0].body
    assert hook["response_type"] == "ephemeral" and "/create" in block_texts(hook["blocks"])


async def test_forget_asks_privately_and_the_confirm_button_deletes(slack: SlackChorus) -> None:
    await first_result(slack)
    await slack.slash(slash_body("/forget", ""))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    question = slack.fake.answered("chat.postEphemeral")[0]
    assert question.body["user"] == "U0ALICE" and "cannot be undone" in question.body["text"]
    ephemeral = {"ts": question.response["message_ts"], "blocks": question.body["blocks"]}
    click = block_actions(ephemeral, find_element(ephemeral, "chorus:forget_confirm"))
    click.pop("message")  # Slack sends no message body for clicks on ephemeral messages
    click["container"]["is_ephemeral"] = True
    await slack.interact(click)
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 2)
    await slack.idle()
    assert "Deleted 1 result." in slack.fake.answered("chat.postEphemeral")[1].body["text"]
    assert await slack.bot.store.count_generations() == 0


async def test_run_slack_without_a_token_says_which_variable_to_set(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("CHORUS_SLACK_BOT_TOKEN", "CHORUS_SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    bot = await make_bot(settings_for(tmp_path, **slack_env(fake, "socket")))
    try:
        assert await run_slack(bot.chorus) == 2
    finally:
        await bot.chorus.close()
    assert "CHORUS_SLACK_APP_TOKEN" in capsys.readouterr().err
    assert fake.calls == []


@pytest.mark.parametrize(
    ("missing", "env"),
    [
        ("CHORUS_SLACK_SIGNING_SECRET", {}),
        ("CHORUS_SLACK_BOT_TOKEN", {}),
        ("CHORUS_SLACK_CLIENT_SECRET", {"CHORUS_SLACK__OAUTH": "true"}),
    ],
    ids=["signing secret", "bot token", "oauth client"],
)
async def test_a_missing_secret_is_named_before_slack_is_called(
    tmp_path: Path, fake: FakeSlack, missing: str, env: dict[str, str]
) -> None:
    bot = await make_bot(settings_for(tmp_path, **slack_env(fake, "http", **env)))
    try:
        with pytest.raises(SlackConfigError, match=re.escape(f"${missing}")):
            SlackAdapter(bot.chorus, env={name: value for name, value in SECRETS.items() if name != missing})
    finally:
        await bot.chorus.close()
    assert fake.calls == []


async def test_a_bot_token_slack_refuses_is_reported_with_its_variable(tmp_path: Path, fake: FakeSlack) -> None:
    fake.fail("auth.test", error="invalid_auth")
    bot = await make_bot(settings_for(tmp_path, **slack_env(fake)))
    adapter = SlackAdapter(bot.chorus, env=SECRETS)
    try:
        with pytest.raises(SlackConfigError, match=re.escape("$CHORUS_SLACK_BOT_TOKEN: invalid_auth")):
            await adapter.start()
    finally:
        await adapter.stop()
        await bot.chorus.close()
    assert adapter.port is None  # nothing listens for Slack with a token it refused


async def test_mydata_goes_to_the_users_direct_messages_with_a_private_note(slack: SlackChorus) -> None:
    await first_result(slack)
    await slack.slash(slash_body("/mydata", ""))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    await slack.idle()
    note = slack.fake.answered("chat.postEphemeral")[0].body
    assert note["user"] == "U0ALICE" and "for you alone" in note["text"]
    opened = slack.fake.answered("conversations.open")
    assert [call.body["users"] for call in opened] == ["U0ALICE"]
    completed = slack.fake.answered("files.completeUploadExternal")[0].body
    assert completed["channel_id"] == opened[0].response["channel"]["id"]
    uploaded = json.loads(next(iter(slack.fake.uploads.values())))
    assert uploaded["user_id"] == "U0ALICE" and len(uploaded["generations"]) == 1


async def test_mydata_says_so_when_slack_refuses_the_direct_message(slack: SlackChorus) -> None:
    slack.fake.fail("conversations.open", error="missing_scope")
    await slack.slash(slash_body("/mydata", ""))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    await slack.idle()
    note = slack.fake.answered("chat.postEphemeral")[0].body["text"]
    assert "missing_scope" in note and "im:write" in note
    assert slack.fake.calls_to("files.completeUploadExternal") == []


async def test_a_file_slack_refuses_leaves_the_message_posted_and_says_why(slack: SlackChorus, tmp_path: Path) -> None:
    # An install from before Chorus asked for files:write: /stats posted its summary, then failed with "Something
    # went wrong", and a drop or brainstorm summary with a file failed after posting, so it could be posted again.
    chart = tmp_path / "stats.png"
    chart.write_bytes(b"\x89PNG")

    async def send_with_a_file(ctx: Context) -> bool:
        await ctx.responder.send(Reply(parts=("Channel stats",), attachments=(Attachment("stats.png", chart),)))
        return True

    slack.bot.chorus.intercept(Message, send_with_a_file)
    slack.fake.fail("files.getUploadURLExternal", times=2, error="missing_scope")
    await slack.event(event_callback(message_event("stats please", channel="D0ALICE", channel_type="im")))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    await slack.idle()
    assert len(slack.fake.answered("chat.postMessage")) == 1
    note = slack.fake.answered("chat.postEphemeral")[0].body["text"]
    assert "stats.png could not be attached" in note and "files:write" in note and "went wrong" not in note
    publisher = slack.bot.chorus.publisher
    assert publisher is not None
    ref = await publisher.publish(GENERAL, Reply(parts=("Summary",), attachments=(Attachment("stats.png", chart),)))
    assert ref.partition(":")[2] in {call.response["ts"] for call in slack.fake.answered("chat.postMessage")}


@pytest.mark.parametrize("opened_by", ["asking button", "remix shortcut"])
async def test_a_form_slack_will_not_open_is_explained(slack: SlackChorus, opened_by: str) -> None:
    # Slack takes a click's trigger_id for 3 seconds only (then expired_trigger_id): nothing happened at all.
    slack.fake.fail("views.open", error="expired_trigger_id")
    if opened_by == "asking button":
        publisher = slack.bot.chorus.publisher
        assert publisher is not None
        ask = ReplyAction("idea", "Add an idea", value="s1", ask="Your idea?")
        channel, _, ts = (await publisher.publish(GENERAL, Reply(parts=("Ideas",), actions=(ask,)))).partition(":")
        posted = slack.fake.messages[(channel, ts)]
        await slack.interact(block_actions(posted, find_element(posted, "chorus:idea:ask")))
    else:
        await slack.interact(message_shortcut("we open at nine"))
    await wait_until(lambda: len(slack.fake.answered("chat.postEphemeral")) == 1)
    note = slack.fake.answered("chat.postEphemeral")[0].body
    assert note["user"] == "U0ALICE" and note["channel"] == "C0GENERAL"
    assert "form could not open" in note["text"] and "expired_trigger_id" in note["text"]
