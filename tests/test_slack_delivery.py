"""Every result arrives on Slack: under Slack's rate limits, sustained 429s, Block Kit limits and a stop mid-stream.

The fake Slack models the documented rules (tests/fake_slack.py: RateModel, block_problems) on a clock 20× faster
than Slack's; Chorus paces itself on the same clock (slack_support.SCALE).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fake_slack import (
    TEAM,
    FakeSlack,
    RateModel,
    block_actions,
    block_problems,
    event_callback,
    find_element,
    message_event,
    reaction_event,
    slash_body,
)
from slack_support import (
    SCALE,
    SECRETS,
    block_texts,
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    final_updates,
    has_actions,
    results,
    slack_env,
    start_slack,
)

import adapters.slack.app as slack_app
from adapters.slack.render import SECTION_LIMIT, render_message, render_progress
from bots.events import Conversation
from bots.reply import Reply
from bots.shutdown import RESTART_NOTE
from generation.fake import FakeGenerator
from generation.types import Chunk, GenerationRequest
from support import make_bot, settings_for, store_undelivered, wait_for, wait_until

GENERAL = Conversation("slack", TEAM, "C0GENERAL")
WORDS = " ".join(f"word{i}" for i in range(12))


async def test_a_final_edit_refused_past_the_sdks_retries_is_posted_anew_and_linked(
    tmp_path: Path, fake: FakeSlack
) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: WORDS, delay_s=0.01))
    try:
        fake.fail("chat.update", times=10_000, retry_after=1)  # every edit refused, far past slack_sdk's 5 retries
        await slack.slash(slash_body("/create", "slogan a night bakery"))
        await wait_until(lambda: len(results(fake)) == 1)
        await slack.idle()
        (shown,) = results(fake)
        assert "word11" in block_texts(shown["blocks"])
        placeholder = fake.answered("chat.postMessage")[0].response["ts"]
        assert ("C0GENERAL", placeholder) not in fake.messages  # no "Busy ▍" left behind
        assert fake.calls_to("chat.postEphemeral") == []  # nobody was told "Something went wrong"
        record = await slack.bot.store.latest_generation(GENERAL)
        assert record is not None and record.message_ref == f"C0GENERAL:{shown['ts']}"
        # A reaction on the message the user sees is linked to the result.
        await slack.event(event_callback(reaction_event("fire", "C0GENERAL", shown["ts"])))
        await slack.idle()
        assert (await slack.bot.store.user_data_counts("slack", "U0BOB"))["feedback"] == 1
    finally:
        await slack.close()


async def test_a_result_slack_refuses_past_chorus_patience_is_explained_to_the_user(
    tmp_path: Path, fake: FakeSlack
) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: WORDS, delay_s=0.01))
    try:
        fake.fail("chat.postMessage", times=10_000, retry_after=1)  # 429 after 429, far past final_patience_s
        await slack.slash(slash_body("/create", "slogan a night bakery"))
        await wait_until(lambda: len(fake.answered("chat.postEphemeral")) == 1)
        await slack.idle()
    finally:
        await slack.close()
    note = fake.answered("chat.postEphemeral")[0].body["text"]
    assert "Slack kept refusing new messages in this channel" in note and "went wrong" not in note


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_thirty_creates_at_once_in_one_channel_all_arrive_within_slacks_limits(tmp_path: Path, mode: str) -> None:
    fake = FakeSlack(RateModel(scale=SCALE))
    await fake.start()
    slack = await start_slack(tmp_path, fake, mode=mode, generator=FakeGenerator(lambda r: WORDS, delay_s=0.02))
    try:
        commands = [slash_body("/create", f"slogan stall {i}", user=f"U0USER{i:02d}") for i in range(30)]
        if mode == "http":
            await asyncio.gather(*(slack.slash(command) for command in commands))
        else:
            await fake.wait_connected()
            await fake.push_many("slash_commands", commands)
        await wait_until(lambda: len(results(fake)) == 30, timeout_s=60)
        await slack.idle()
        assert fake.violations == []
        assert fake.refused == []
        assert all("word11" in block_texts(message["blocks"]) for message in results(fake))
        # Each message shown is the stored result it shows, so reactions and replies on it are linked.
        linked = [await slack.bot.store.find_by_message_ref("slack", f"C0GENERAL:{m['ts']}") for m in results(fake)]
        assert len({record.id for record in linked if record is not None}) == 30
    finally:
        await slack.close()
        await fake.close()


class Chunked(FakeGenerator):
    """Streams fixed pieces of text, a pause before each (and deaf to abort): a test decides exactly what each
    progress edit shows, or makes a generation that a stop cannot end."""

    def __init__(self, pieces: list[str], pauses: list[float]) -> None:
        super().__init__(lambda request: "".join(pieces))
        self.pieces = pieces
        self.pauses = pauses

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        for count, (piece, pause) in enumerate(zip(self.pieces, self.pauses, strict=True), start=1):
            await asyncio.sleep(pause)
            yield Chunk(request_id=request.request_id, text=piece, tokens=count)
        yield Chunk(request_id=request.request_id, finish_reason="stop", tokens=len(self.pieces))


def exactly(length: int) -> str:
    """Varied words ending in a space, `length` characters in all."""
    text, i = "", 0
    while len(text) + len(f"word{i} ") <= length:
        text, i = text + f"word{i} ", i + 1
    return text + "abcdefghij"[: max(0, length - len(text) - 1)] + (" " if len(text) < length else "")


async def test_the_streaming_cursor_never_pushes_a_section_over_slacks_limit(tmp_path: Path, fake: FakeSlack) -> None:
    # A first piece that fills one section exactly, then more after a pause: the edit in between shows 3000
    # characters plus the cursor.
    first = exactly(SECTION_LIMIT)
    assert len(first) == SECTION_LIMIT
    slack = await start_slack(tmp_path, fake, generator=Chunked([first, "and then the end."], [0.6, 0.6]))
    try:
        await slack.slash(slash_body("/create", "story a long one"))
        await wait_until(lambda: len(results(fake)) == 1)
        await slack.idle()
    finally:
        await slack.close()
    assert fake.refused == []
    streamed = [call for call in fake.answered("chat.update") if not has_actions(call.body)]
    assert any(first.split()[-1] in block_texts(call.body["blocks"]) for call in streamed)
    assert "the end." in block_texts(results(fake)[0]["blocks"])


@pytest.mark.parametrize("text", ["x" * 3000, "y " * 1500, "z" * 2999 + " q", "w" * 9000])
def test_progress_sections_fit_with_the_cursor(text: str) -> None:
    blocks = render_progress("story · v1 of 1", [text])["blocks"]
    assert block_problems(blocks, 50) == []
    assert all(len(b["text"]["text"]) <= SECTION_LIMIT for b in blocks if b["type"] == "section")
    assert block_texts(blocks).rstrip().endswith("▍")


async def test_a_long_refinement_of_markup_characters_still_posts(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: WORDS))
    try:
        await slack.slash(slash_body("/create", "slogan a bakery"))
        await wait_until(lambda: len(results(fake)) == 1)
        await slack.idle()
        v1 = results(fake)[0]
        instruction = "wrap it in " + "<>&" * 329  # 998 characters, within the 1000 allowed; 4288 once escaped
        escaped = instruction.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # as Slack sends it
        await slack.event(event_callback(message_event(escaped, thread_ts=v1["ts"])))
        await wait_until(lambda: len(results(fake)) == 2)
        await slack.idle()
    finally:
        await slack.close()
    assert fake.refused == []
    v2 = next(message for message in results(fake) if "v2 of 2" in block_texts(message["blocks"]))
    assert "&lt;&gt;&amp;" in block_texts(v2["blocks"])


def test_a_title_is_capped_after_escaping_and_never_inside_an_entity() -> None:
    message = render_message(Reply(parts=("ok",), title="slogan · v2 of 2 · " + "&<>" * 333))
    assert block_problems(message["blocks"], 50) == []
    title = message["blocks"][0]["elements"][0]["text"]
    assert title.endswith("…*") and title.count("&") == title.count(";")
    assert len(message["text"]) <= 3000 and message["text"].count("&") == message["text"].count(";")


async def test_bolt_does_not_check_the_token_again_for_a_burst_of_commands(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: WORDS))
    try:
        answers = await asyncio.gather(
            *(slack.slash(slash_body("/create", f"slogan {i}", user=f"U0USER{i:02d}")) for i in range(30))
        )
        assert [status for status, _, _ in answers] == [200] * 30
        await wait_until(lambda: len(results(fake)) == 30, timeout_s=60)
        await slack.idle()
    finally:
        await slack.close()
    assert len(fake.calls_to("auth.test")) == 1  # Chorus' own check at start-up


async def test_no_post_unfurls_links(tmp_path: Path, fake: FakeSlack) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: "see https://example.com now"))
    try:
        await slack.slash(slash_body("/create", "slogan a link"))
        await wait_until(lambda: len(final_updates(fake)) == 1)
        await slack.idle()
    finally:
        await slack.close()
    posts = fake.calls_to("chat.postMessage")
    assert posts and all(p.body.get("unfurl_links") is False and p.body.get("unfurl_media") is False for p in posts)


def _cut_short(fake: FakeSlack) -> dict[str, Any]:
    (placeholder,) = fake.answered("chat.postMessage")
    return fake.messages[(placeholder.response["channel"], placeholder.response["ts"])]


async def _assert_finished_as_a_partial_version(fake: FakeSlack, store: Any) -> None:
    """The message being written shows its text so far and the restart note, with the buttons of a stored partial
    version (so Regenerate works after the restart); nothing is half-written and nobody got an error."""
    message = _cut_short(fake)
    text = block_texts(message["blocks"])
    assert "w3" in text and "w199" not in text and "▍" not in text
    assert RESTART_NOTE in text and has_actions(message)
    record = await store.find_by_message_ref("slack", f"C0GENERAL:{message['ts']}")
    assert record is not None and record.status == "partial" and "w3" in record.variants[0]
    assert fake.calls_to("chat.postEphemeral") == []


async def test_sigterm_mid_stream_finishes_the_message_and_closes_the_socket(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(slack_app, "settle_heap", lambda: None)  # no gc.freeze() in the test process
    settings = settings_for(tmp_path, **slack_env(fake, "socket"))
    slow = " ".join(f"w{i}" for i in range(200))
    bot = await make_bot(settings, FakeGenerator(lambda r: slow, delay_s=0.05))
    running = asyncio.create_task(slack_app.run_slack(bot.chorus))
    try:
        await fake.wait_connected()
        await fake.push("slash_commands", slash_body("/create", "story a long night"))
        await wait_until(lambda: any("w3" in block_texts(c.body["blocks"]) for c in fake.answered("chat.update")))
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(running, 30) == 0
        await _assert_finished_as_a_partial_version(fake, bot.store)
    finally:
        if not running.done():
            running.cancel()
        await bot.chorus.close()
    assert fake.socket_closes == [1000]  # a clean close, not a dropped connection


async def test_stopping_in_http_mode_finishes_the_message_and_refuses_new_requests(
    tmp_path: Path, fake: FakeSlack
) -> None:
    slow = " ".join(f"w{i}" for i in range(200))
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: slow, delay_s=0.05))
    port = slack.adapter.port
    try:
        await slack.slash(slash_body("/create", "story a long night"))
        await wait_until(lambda: any("w3" in block_texts(c.body["blocks"]) for c in fake.answered("chat.update")))
        await slack.adapter.stop()
        await _assert_finished_as_a_partial_version(fake, slack.bot.store)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as http:
                await http.post(f"http://127.0.0.1:{port}/slack/events", data=b"")
    finally:
        if slack.http is not None:
            await slack.http.close()
        await slack.bot.chorus.close()


async def test_a_handler_that_fails_mid_stream_leaves_no_half_written_message(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(lambda r: WORDS, delay_s=0.05))

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(slack.bot.store, "add_generation", broken)
    try:
        await slack.slash(slash_body("/create", "slogan a night bakery"))
        await wait_until(lambda: len(fake.answered("chat.postEphemeral")) == 1)  # the private error
        await slack.idle()
        await wait_until(lambda: not slack.adapter.outbound.streams)
    finally:
        await slack.close()
    text = block_texts(_cut_short(fake)["blocks"])
    assert "word11" in text and "▍" not in text and "stopped before it was finished" in text


async def test_a_generation_that_outlives_the_stop_still_leaves_a_finished_message(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slack_app, "STOP_GRACE_S", 0.5)
    stuck = Chunked(["once upon a time ", "the end."], [0.05, 600])
    slack = await start_slack(tmp_path, fake, generator=stuck)
    try:
        await slack.slash(slash_body("/create", "story a long night"))
        await wait_until(
            lambda: any("time" in block_texts(c.body["blocks"]) for c in fake.answered("chat.postMessage"))
        )
        await slack.adapter.stop()
        message = _cut_short(fake)
    finally:
        if slack.http is not None:
            await slack.http.close()
        await slack.bot.chorus.close()
    text = block_texts(message["blocks"])
    assert "once upon a time" in text and "▍" not in text and "Chorus restarted" in text
    assert not slack.adapter.outbound.streams


async def _stored_but_undelivered(home: Path) -> tuple[int, int]:
    from bots.events import User

    return await store_undelivered(home, GENERAL, User("U0BOB", "bob"))


async def _delivered(slack: Any, generation_id: int) -> Any:
    record = await slack.bot.store.get_generation(generation_id)
    return record if record is not None and record.message_ref else None


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_result_stored_but_not_delivered_before_a_restart_is_posted_after_it(
    tmp_path: Path, fake: FakeSlack, mode: str
) -> None:
    from bots.redelivery import NOTE

    lost, drop = await _stored_but_undelivered(tmp_path)
    slack = await start_slack(tmp_path, fake, mode=mode)
    try:
        record = await wait_for(lambda: _delivered(slack, lost), describe=lambda: fake.calls_to("chat.postMessage"))
        (shown,) = results(fake)
        assert record.message_ref == f"C0GENERAL:{shown['ts']}"
        text = block_texts(shown["blocks"])
        assert "Steep dreams, bold cups." in text and NOTE in text
        assert len(fake.answered("chat.postMessage")) == 1, "posted once; the drop is left to the drops scheduler"
        assert (await slack.bot.store.get_generation(drop)).message_ref is None
        # Its buttons work as if it had arrived the first time: Regenerate makes version 2 of that result.
        click = block_actions(shown, find_element(shown, "chorus:regenerate"))
        if mode == "http":
            await slack.interact(click)
        else:
            await fake.push("interactive", click)
        v2 = await wait_for(lambda: [b for b in final_updates(fake) if "v2" in block_texts(b["blocks"])])
        await slack.idle()
        again = await slack.bot.store.find_by_message_ref("slack", f"{v2[0]['channel']}:{v2[0]['ts']}")
        assert again is not None and again.version == 2 and again.prompt == "tea"
    finally:
        await slack.close()


async def test_two_workers_starting_on_one_store_post_an_undelivered_result_once(
    tmp_path: Path, fake: FakeSlack
) -> None:
    lost, _ = await _stored_but_undelivered(tmp_path)
    fake.fail("chat.postMessage", times=2)  # slow to post: both workers have listed it before either posted it
    first, second = await asyncio.gather(start_slack(tmp_path, fake), start_slack(tmp_path, fake))
    try:
        await wait_for(lambda: _delivered(first, lost))
        await first.idle()
        await second.idle()
    finally:
        await first.close()
        await second.close()
    assert len(fake.answered("chat.postMessage")) == 1


async def test_a_result_this_process_is_still_delivering_is_not_posted_again(tmp_path: Path, fake: FakeSlack) -> None:
    from bots.events import User
    from bots.redelivery import deliver_undelivered

    slack = await start_slack(tmp_path, fake)
    try:
        await slack.idle()  # the redelivery at start found nothing
        ours = await slack.bot.store.add_generation(  # stored, its placeholder not edited yet
            GENERAL, User("U0BOB", "bob"), kind="slogan", tone="", prompt="tea", params={}, variants=("Tea.",)
        )
        publisher = slack.bot.chorus.publisher
        assert publisher is not None
        assert await deliver_undelivered(slack.bot.store, publisher, "slack", started=slack.adapter.started) == 0
        assert fake.calls_to("chat.postMessage") == []
        assert (await slack.bot.store.get_generation(ours.id)).message_ref is None
    finally:
        await slack.close()
