"""Scheduled drops through the real Discord and Slack clients against their fakes: moderator-only /drops enable, a
drop posted by each adapter's Publisher, reactions and thread replies as engagement, the /stats PNG upload, a
channel Chorus may no longer post to, and the scheduled job firing once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from drops_support import Clock
from fake_discord import CHANNEL_ID, GUILD_ID, FakeDiscord, snowflake
from fake_slack import FakeSlack, event_callback, message_event, reaction_event, slash_body
from slack_support import MENTION_KEYS, block_texts, start_slack
from sqlalchemy import select
from test_discord_adapter import ephemeral_answer, start_harness, stop_harness

from bots.app import Chorus
from bots.events import Conversation
from bots.reply import PublishForbidden
from generation.fake import FakeGenerator
from generation.types import GenerationRequest
from scheduler import jobs
from scheduler.models import DropRun
from scheduler.planner import Engagement
from scheduler.service import DropsService, _unavailable
from support import wait_for, wait_until

PNG = b"\x89PNG\r\n\x1a\n"
PINGS = "Write about tea, @everyone @here <@123> <!channel> <!here> <@U0BOSS>"
ENABLE = "enable --cadence daily --time 09:30 --tz Europe/Berlin"
DISCORD_ADMIN = "920000000000000099"
SLACK_CHANNEL, SLACK_ADMIN = "C0GENERAL", "C0ADMIN"


def pinging(request: GenerationRequest) -> str:
    return PINGS


def drops_env(admin: str) -> dict[str, str]:
    return {"CHORUS_DROPS__TICK_S": "3600", "CHORUS_DROPS__ADMIN_CHANNEL": admin}


def discord_text(body: dict[str, Any]) -> str:
    embeds = body.get("embeds") or []
    pieces = [body.get("content") or ""]
    pieces += [f"{e.get('title', '')}\n{e.get('description', '')}" for e in embeds]
    return "\n".join(pieces)


@dataclass
class Side:
    """One platform driven through its real client: send commands, inspect what reached the fake."""

    name: str
    chorus: Chorus
    conversation: Conversation
    service: DropsService
    clock: Clock
    command: Callable[..., Awaitable[tuple[str, bool]]]  # (name, text, moderator) -> (answer text, ephemeral)
    posts: Callable[[str], list[dict[str, Any]]]  # bodies posted unprompted to a channel
    react: Callable[[str], Awaitable[None]]  # a 🔥 on a message (by message_ref)
    reply_in_thread: Callable[[str], Awaitable[None]]
    forbid_next_post: Callable[[], None]
    stats_upload: Callable[[], tuple[bytes, str] | None]  # (the PNG, the text posted with it)
    admin: str
    stop: Callable[[], Awaitable[None]]
    extra: dict[str, Any] = field(default_factory=dict)

    async def runs(self) -> list[DropRun]:
        async with self.chorus.store.session() as session:
            return list(await session.scalars(select(DropRun).order_by(DropRun.id)))

    async def posted(self) -> list[DropRun]:
        return [run for run in await self.runs() if run.status == "posted"]


async def attach_drops(chorus: Chorus, clock: Clock) -> DropsService:
    """What `chorus run` does, after the adapter has connected: the service starts with the adapter's Publisher."""
    service = DropsService(chorus, clock=clock)
    service.attach()
    assert chorus.publisher is not None
    await service.start(chorus.publisher)
    await wait_until(lambda: service.scheduler is not None, 10)
    return service


async def discord_side(tmp_path: Path, clock: Clock) -> Side:
    harness = await start_harness(tmp_path, FakeGenerator(pinging), **drops_env(DISCORD_ADMIN))
    fake: FakeDiscord = harness.fake
    service = await attach_drops(harness.chorus, clock)
    tokens: list[str] = []

    async def command(name: str, text: str, moderator: bool = False) -> tuple[str, bool]:
        user = ("940000000000000002", "mod") if moderator else ("940000000000000001", "alice")
        payload = await fake.slash(name, {"text": text} if text else {}, user=user, moderator=moderator)
        tokens.append(payload["token"])
        if name == "stats":
            await wait_until(lambda: any(r.files for r in fake.find("PATCH", payload["token"])), 15)
            return "", False
        if text == "status":  # public: a message callback, or the deferred original response edited into it

            def answer() -> dict[str, Any] | None:
                for record in fake.find("POST", rf"/interactions/{payload['id']}/"):
                    if record.body.get("type") == 4:
                        return record.body["data"]
                edits = [r.body for r in harness.originals(payload["token"]) if discord_text(r.body).strip()]
                return edits[-1] if edits else None

            await wait_until(lambda: answer() is not None, 15)
            found = answer()
            assert found is not None and not (found.get("flags", 0) & 64)
            return discord_text(found), False
        return discord_text(await ephemeral_answer(harness, payload)), True

    def posts(channel: str) -> list[dict[str, Any]]:
        return [r.body for r in fake.find("POST", rf"^/channels/{channel}/messages$")]

    async def reply_in_thread(ref: str) -> None:
        # Someone replies to the drop, then opens a thread on it (Discord gives the thread the message's id).
        await fake.user_message("love this one", reply_to=ref, user=("940000000000000003", "bob"))
        thread = {
            "id": ref,
            "type": 11,
            "guild_id": GUILD_ID,
            "parent_id": CHANNEL_ID,
            "owner_id": "940000000000000003",
            "name": "drop talk",
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": snowflake()},
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "newly_created": True,
        }
        thread["thread_metadata"]["archive_timestamp"] = datetime.now(UTC).isoformat()
        await fake.dispatch("THREAD_CREATE", thread)
        await wait_until(lambda: harness.adapter.client.get_channel(int(ref)) is not None, 10)
        await fake.user_message("it reminds me of my gran", channel_id=ref, user=("940000000000000003", "bob"))

    def stats_upload() -> tuple[bytes, str] | None:
        for record in fake.find("PATCH", tokens[-1]):
            pngs = [data for name, data in record.files.items() if name.endswith(".png")]
            if pngs:
                assert record.headers["Content-Type"].startswith("multipart/form-data")
                assert record.body["attachments"][0]["filename"].endswith(".png")
                return pngs[0], discord_text(record.body)
        return None

    async def stop() -> None:
        await stop_harness(harness)

    return Side(
        name="discord",
        chorus=harness.chorus,
        conversation=Conversation("discord", GUILD_ID, CHANNEL_ID),
        service=service,
        clock=clock,
        command=command,
        posts=posts,
        react=lambda ref: fake.react(ref, "🔥", user_id="940000000000000003"),
        reply_in_thread=reply_in_thread,
        forbid_next_post=lambda: fake.fail("POST", rf"^/channels/{CHANNEL_ID}/messages$", times=1, status=403),
        stats_upload=stats_upload,
        admin=DISCORD_ADMIN,
        stop=stop,
        extra={"fake": fake},
    )


async def slack_side(tmp_path: Path, clock: Clock) -> Side:
    fake = FakeSlack()
    await fake.start()
    slack = await start_slack(tmp_path, fake, generator=FakeGenerator(pinging), **drops_env(SLACK_ADMIN))
    service = await attach_drops(slack.bot.chorus, clock)

    async def command(name: str, text: str, moderator: bool = False) -> tuple[str, bool]:
        before_eph = len(fake.answered("chat.postEphemeral"))
        before_msg = len(fake.answered("chat.postMessage"))
        status, _, _ = await slack.slash(slash_body(f"/{name}", text, user="U0ADMIN" if moderator else "U0ALICE"))
        assert status == 200
        if name == "stats":
            await wait_until(lambda: len(fake.answered("files.completeUploadExternal")) >= 1, 15)
            await slack.idle()
            return fake.answered("chat.postMessage")[before_msg].body.get("text", ""), False
        if text == "status":  # public
            await wait_until(lambda: len(fake.answered("chat.postMessage")) > before_msg, 15)
            await slack.idle()
            body = fake.answered("chat.postMessage")[before_msg].body
            return f"{body.get('text', '')}\n{block_texts(body.get('blocks') or [])}", False
        await wait_until(lambda: len(fake.answered("chat.postEphemeral")) > before_eph, 15)
        await slack.idle()
        body = fake.answered("chat.postEphemeral")[before_eph].body
        return f"{body.get('text', '')}\n{block_texts(body.get('blocks') or [])}", True

    def posts(channel: str) -> list[dict[str, Any]]:
        return [c.body for c in fake.calls_to("chat.postMessage") if c.body.get("channel") == channel]  # every try

    async def react(ref: str) -> None:
        channel, _, ts = ref.partition(":")
        await slack.event(event_callback(reaction_event("fire", channel, ts)))

    async def reply_in_thread(ref: str) -> None:
        channel, _, ts = ref.partition(":")
        await slack.event(event_callback(message_event("love this one", user="U0BOB", channel=channel, thread_ts=ts)))

    def stats_upload() -> tuple[bytes, str] | None:
        methods = [c.method for c in fake.calls if c.method.startswith("files.") or c.method == "upload"]
        if methods != ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]:
            return None
        complete = fake.answered("files.completeUploadExternal")[0].body
        assert complete.get("channel_id") == SLACK_CHANNEL and complete.get("thread_ts")
        assert json.loads(complete["files"])[0]["title"] == "activity and engagement"
        [data] = fake.uploads.values()
        text = [c.body.get("text", "") for c in fake.answered("chat.postMessage") if "Channel stats" in c.text()]
        return data, "\n".join(text)

    async def stop() -> None:
        await slack.close()
        await fake.close()

    return Side(
        name="slack",
        chorus=slack.bot.chorus,
        conversation=Conversation("slack", "T0CHORUS", SLACK_CHANNEL),
        service=service,
        clock=clock,
        command=command,
        posts=posts,
        react=react,
        reply_in_thread=reply_in_thread,
        forbid_next_post=lambda: fake.fail("chat.postMessage", times=1, error="not_in_channel"),
        stats_upload=stats_upload,
        admin=SLACK_ADMIN,
        stop=stop,
        extra={"fake": fake, "slack": slack},
    )


SIDES = {"discord": discord_side, "slack": slack_side}


@pytest.fixture(params=sorted(SIDES))
async def side(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Side]:
    running = await SIDES[request.param](tmp_path, Clock(datetime.now(UTC).replace(microsecond=0)))
    try:
        yield running
    finally:
        await running.stop()


def channel_of(side: Side) -> str:
    return side.conversation.channel


def assert_no_pings(side: Side, body: dict[str, Any]) -> None:
    if side.name == "discord":
        assert body["allowed_mentions"] == {"parse": []}, "a drop must never ping anyone"
    else:
        sent = json.dumps(body, ensure_ascii=False)
        assert not [key for key in MENTION_KEYS if key in sent], sent


async def test_only_a_moderator_enables_drops_and_the_refusal_is_private(side: Side) -> None:
    text, ephemeral = await side.command("drops", ENABLE)
    assert ephemeral and "Only moderators can use /drops enable" in text
    assert await side.runs() == [] and side.service.scheduler.get_jobs() == []  # type: ignore[union-attr]
    text, ephemeral = await side.command("drops", ENABLE, moderator=True)
    assert ephemeral and "Drops are on here: daily at 09:30 Europe/Berlin" in text
    [job] = side.service.scheduler.get_jobs()  # type: ignore[union-attr]
    local = job.next_run_time.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (9, 30)
    if side.name == "slack":
        assert "Manage Channels" not in (await side.command("drops", "pause"))[0]


async def test_drops_now_posts_through_the_publisher_and_engagement_counts(side: Side) -> None:
    await side.command("drops", ENABLE, moderator=True)
    text, ephemeral = await side.command("drops", "now", moderator=True)
    assert ephemeral and "Posted a " in text, text
    [body] = side.posts(channel_of(side))
    [run] = await side.posted()
    assert run.title in (discord_text(body) if side.name == "discord" else block_texts(body["blocks"]))
    assert_no_pings(side, body)
    fake = side.extra["fake"]
    if side.name == "discord":  # the stored message_ref is the id Discord gave the channel message
        assert fake.messages[run.message_ref]["channel_id"] == CHANNEL_ID
    else:  # "<channel>:<ts>" of the chat.postMessage, with the rating buttons
        channel, _, ts = run.message_ref.partition(":")
        assert channel == SLACK_CHANNEL and (channel, ts) in fake.messages and body["unfurl_links"] in (False, "0")
        assert [e["action_id"] for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]][:2] == [
            "chorus:rate_up",
            "chorus:rate_down",
        ]
    await side.react(run.message_ref)
    await side.reply_in_thread(run.message_ref)
    replies_expected = 2 if side.name == "discord" else 1  # Discord: a reply and a message in the drop's thread

    seen = await engagement_until(side, run, lambda e: e.replies >= replies_expected and bool(e.reactions))
    assert seen.reactions == {"🔥": 1} and seen.replies == replies_expected
    assert side.service.reward(seen) == 2.0 + 3.0 * replies_expected  # 🔥 weighs 2 on both platforms
    # The replies were claimed as engagement: Chorus did not answer them as refinement requests.
    assert len(side.posts(channel_of(side))) == 1


async def engagement_until(side: Side, run: DropRun, done: Callable[[Engagement], bool]) -> Engagement:
    """The drop's engagement once `done` holds (events arrive through the adapter's background tasks)."""
    seen: list[Engagement] = []

    async def recorded() -> Engagement | None:
        seen[:] = [await side.service.engagement_for(run)]
        return seen[0] if done(seen[0]) else None

    return await wait_for(recorded, timeout_s=15, describe=lambda: f"engagement not recorded: {seen}")


async def test_a_slack_thumbs_down_counts_against_a_drop_and_taking_it_back_undoes_it(tmp_path: Path) -> None:
    side = await slack_side(tmp_path, Clock(datetime.now(UTC).replace(microsecond=0)))
    try:
        await side.command("drops", ENABLE, moderator=True)
        await side.command("drops", "now", moderator=True)
        [run] = await side.posted()
        slack = side.extra["slack"]
        channel, _, ts = run.message_ref.partition(":")
        await slack.event(event_callback(reaction_event("-1", channel, ts)))  # Slack's name for 👎
        seen = await engagement_until(side, run, lambda e: bool(e.reactions))
        assert seen.reactions == {"👎": 1} and side.service.reward(seen) == -2.0
        await slack.event(event_callback(reaction_event("-1", channel, ts, added=False)))
        await slack.event(event_callback(reaction_event("+1", channel, ts)))
        seen = await engagement_until(side, run, lambda e: "👎" not in e.reactions and bool(e.reactions))
        assert seen.reactions == {"👍": 1} and side.service.reward(seen) == 1.0
    finally:
        await side.stop()


async def test_stats_uploads_a_png_with_the_summary(side: Side) -> None:
    await side.command("drops", ENABLE, moderator=True)
    await side.command("drops", "now", moderator=True)
    await side.command("stats", "")
    upload = side.stats_upload()
    assert upload is not None, "no PNG upload recorded"
    data, text = upload
    assert data.startswith(PNG) and len(data) > 1000
    assert "Channel stats" in text and "drop" in text.lower()


async def test_slack_refusing_a_drop_is_told_to_the_admin_in_a_few_words(tmp_path: Path) -> None:
    side = await slack_side(tmp_path, Clock(datetime.now(UTC).replace(microsecond=0)))
    try:
        await side.command("drops", ENABLE, moderator=True)
        side.extra["fake"].fail("chat.postMessage", error="invalid_blocks")
        text, _ = await side.command("drops", "now", moderator=True)
    finally:
        await side.stop()
    assert "Could not post the drop" in text and "Slack refused the post (invalid_blocks)" in text
    assert "http" not in text and "responded with" not in text  # not slack_sdk's dump of the call


async def test_a_channel_chorus_may_not_post_to_pauses_drops_and_tells_the_admins(side: Side) -> None:
    await side.command("drops", ENABLE, moderator=True)
    side.forbid_next_post()
    text, _ = await side.command("drops", "now", moderator=True)
    assert "can no longer post here" in text
    [alert] = side.posts(side.admin)
    alert_text = discord_text(alert) if side.name == "discord" else alert["text"]
    assert "paused" in alert_text and "/drops resume" in alert_text
    assert side.service.scheduler.get_jobs() == []  # type: ignore[union-attr]
    tries = len(side.posts(channel_of(side)))
    for _ in range(3):
        side.clock.advance(hours=1)
        await side.service.tick()
    assert len(side.posts(channel_of(side))) == tries == 1, "no retry storm"
    [run] = await side.runs()
    assert run.status == "failed" and run.attempts == 1
    status, _ = await side.command("drops", "status")
    assert "Paused: Chorus can no longer post here" in status


async def test_the_scheduled_job_firing_posts_exactly_once(side: Side) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    slot = (side.clock() + timedelta(hours=2)).astimezone(berlin).replace(second=0)
    await side.command("drops", f"enable --cadence daily --time {slot:%H:%M} --tz Europe/Berlin", moderator=True)
    side.clock.current = slot.astimezone(UTC) + timedelta(seconds=5)  # the service's clock reaches the slot
    scheduler = side.service.scheduler
    assert scheduler is not None
    [job] = scheduler.get_jobs()
    scheduler.modify_job(job.id, next_run_time=datetime.now(UTC))  # the real APScheduler fires the stored job
    scheduler.resume()  # (paused while the service runs on the test's clock)
    await wait_until(lambda: len(side.posts(channel_of(side))) == 1, 15)
    await wait_for(side.posted, timeout_s=15)  # the job recorded it as posted (after the platform answered)
    await wait_until(lambda: scheduler.get_job(job.id).next_run_time > datetime.now(UTC), 10)  # type: ignore[union-attr]
    # The same slot fired again (a second process, a coalesced misfire) posts nothing more.
    await jobs.fire_drop(side.service.name, job.kwargs["channel_key"])
    [run] = await side.posted()
    assert run.run_key.endswith("@" + slot.replace(tzinfo=None).isoformat(timespec="minutes"))
    assert len(side.posts(channel_of(side))) == 1
    assert_no_pings(side, side.posts(channel_of(side))[0])


async def test_publishers_raise_publish_forbidden_that_the_service_recognises(side: Side) -> None:
    side.forbid_next_post()
    publisher = side.chorus.publisher
    assert publisher is not None
    from bots.reply import Reply

    with pytest.raises(PublishForbidden) as raised:
        await publisher.publish(side.conversation, Reply.text("hello"))
    assert _unavailable(raised.value)
    assert ("Missing Access" if side.name == "discord" else "not_in_channel") in str(raised.value)


async def test_a_channel_that_opted_in_learns_topics_from_its_messages(side: Side) -> None:
    # The adapters gave every channel message to the core without its text, so `/drops topics learn on` learned
    # nothing on Discord or Slack, though the docs promise it there.
    await side.command("drops", ENABLE, moderator=True)
    assert "Topic learning is on" in (await side.command("drops", "topics learn on", moderator=True))[0]
    fake = side.extra["fake"]
    for _ in range(3):
        if side.name == "discord":
            await fake.user_message("gardening tips please", user=("940000000000000003", "bob"))
        else:
            slack = side.extra["slack"]
            await slack.event(
                event_callback(message_event("gardening tips please", user="U0BOB", channel=SLACK_CHANNEL))
            )
    await wait_until(lambda: side.service._mined.get(side.conversation.key, {}).get("gardening", 0) >= 3)
    await side.service.flush_activity()
    listed, _ = await side.command("drops", "topics list", moderator=True)
    assert "Learned from the channel: gardening" in listed
