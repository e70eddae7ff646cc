"""A process killed mid-generation (SIGKILL, out of memory) leaves no stale "thinking…" or half-written message.

The kill is simulated by abandoning a running Chorus: its generator blocks for good and its heartbeat stops, nothing
of it is closed; then a second Chorus starts on the same database and finishes what the first left, through the
real client libraries against the fake platforms. What the user sees there is asserted: the old message edited into
the result or a short note, nothing posted twice, and a live process' message left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import queue
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fake_discord import CHANNEL_ID, GUILD_ID
from fake_slack import TEAM, FakeSlack, slash_body
from slack_support import (
    SlackChorus,
    block_texts,
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    start_slack,
)

import bots.inflight as inflight
from bots.events import Conversation
from bots.redelivery import NOTE
from generation.fake import FakeGenerator
from generation.types import Chunk, GenerationRequest
from support import wait_for

GENERAL = Conversation("slack", TEAM, "C0GENERAL")


class Stuck(FakeGenerator):
    """Streams `first`, then never another word: a generation in flight when the process dies."""

    def __init__(self, first: str = "Once upon a ") -> None:
        super().__init__(lambda request: first)
        self.first = first
        self.started = asyncio.Event()

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        yield Chunk(request_id=request.request_id, text=self.first, tokens=1)
        self.started.set()
        await asyncio.Event().wait()
        yield Chunk(request_id=request.request_id, finish_reason="stop", tokens=1)  # pragma: no cover


@pytest.fixture(autouse=True)
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat every 50 ms; a process is taken for dead after 0.5 s without one."""
    monkeypatch.setattr(inflight, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(inflight, "STALE_S", 0.5)


async def _kill(slack: SlackChorus) -> None:
    """What SIGKILL leaves: the records in the database, no heartbeat, no clean stop. (The HTTP listener stays up,
    but nothing reaches it any more.)"""
    await wait_for(lambda: slack.bot.chorus.in_flight.running)  # else a heartbeat started later outlives the kill
    await slack.bot.chorus.in_flight.stop()


async def _bury(slack: SlackChorus) -> None:
    """Tear down a "killed" Chorus after the test has looked at the platform."""
    for task in list(slack.adapter.tasks):
        task.cancel()
    await slack.close()


def _slack_message(fake: FakeSlack, ts: str) -> dict[str, Any]:
    return fake.messages[("C0GENERAL", ts)]


async def _placeholder(fake: FakeSlack, text: str) -> str:
    """The ts of the message showing `text` while it is being written."""
    await wait_for(
        lambda: [m for m in fake.messages.values() if text in block_texts(m.get("blocks") or [])],
        describe=lambda: list(fake.messages.values()),
    )
    (call,) = fake.answered("chat.postMessage")
    return str(call.response["ts"])


async def test_slack_a_message_left_half_written_by_a_killed_chorus_says_so_after_the_restart(
    tmp_path: Path, fake: FakeSlack
) -> None:
    dead = await start_slack(tmp_path, fake, generator=Stuck())
    try:
        await dead.slash(slash_body("/create", "story a night bakery"))
        ts = await _placeholder(fake, "Once upon a")
        await wait_for(lambda: _records(dead))  # recorded once posted
        await _kill(dead)
        posts = len(fake.answered("chat.postMessage"))
        alive = await start_slack(tmp_path, fake)
        try:
            await wait_for(
                lambda: "restarted" in block_texts(_slack_message(fake, ts)["blocks"]),
                describe=lambda: _slack_message(fake, ts),
            )
            text = block_texts(_slack_message(fake, ts)["blocks"])
            assert "Chorus restarted before this finished — run /create again." in text
            assert "▍" not in text and "Once upon a" not in text
            assert len(fake.answered("chat.postMessage")) == posts, "the old message is edited, nothing new is posted"
            await wait_for(lambda: _no_records(alive))
        finally:
            await alive.close()
    finally:
        await _bury(dead)


def _killed_once_stored(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, Any]:
    """The process "dies" right after a result is stored, before its final edit: the event is set at that moment.
    Also returns the real `Watch.stored`, for the process started after the kill."""
    stored = asyncio.Event()
    original = inflight.Watch.stored

    async def stored_then_killed(self: inflight.Watch, generation_id: int) -> None:
        await original(self, generation_id)
        stored.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(inflight.Watch, "stored", stored_then_killed)
    return stored, original


async def test_slack_a_result_stored_just_before_the_kill_replaces_its_half_written_message(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored, original_stored = _killed_once_stored(monkeypatch)
    slow = FakeGenerator(lambda request: "Steep dreams, bold cups.", delay_s=0.3)
    dead = await start_slack(tmp_path, fake, generator=slow)
    try:
        await dead.slash(slash_body("/create", "slogan tea"))
        await asyncio.wait_for(stored.wait(), 20)
        ts = await _placeholder(fake, "Steep")
        await _kill(dead)
        monkeypatch.setattr(inflight.Watch, "stored", original_stored)
        posts = len(fake.answered("chat.postMessage"))
        alive = await start_slack(tmp_path, fake)
        try:
            record = await wait_for(lambda: _delivered(alive), describe=lambda: _slack_message(fake, ts))
            shown = _slack_message(fake, ts)
            text = block_texts(shown["blocks"])
            assert "Steep dreams, bold cups." in text and NOTE in text and "▍" not in text
            assert any(block["type"] == "actions" for block in shown["blocks"]), "with its buttons"
            assert record.message_ref == f"C0GENERAL:{ts}"
            await wait_for(lambda: _no_records(alive))
            assert len(fake.answered("chat.postMessage")) == posts, "not posted again under the old message"
        finally:
            await alive.close()
    finally:
        await _bury(dead)


async def test_slack_a_live_chorus_message_in_flight_is_left_alone_by_another_starting(
    tmp_path: Path, fake: FakeSlack
) -> None:
    busy = await start_slack(tmp_path, fake, generator=Stuck())
    try:
        await busy.slash(slash_body("/create", "story a night bakery"))
        ts = await _placeholder(fake, "Once upon a")
        await wait_for(lambda: _records(busy))
        other = await start_slack(tmp_path, fake)
        try:
            # Past the staleness period since the busy one posted, its heartbeat still keeps its record alive: the
            # other's sweeps (at start, every heartbeat, and this one) never touch its message.
            (record,) = await _records(busy)
            await wait_for(lambda: _older_than(record.started_at, inflight.STALE_S * 2))
            assert await other.bot.chorus.in_flight.sweep() == 0
            assert fake.calls_to("chat.update") == []
            assert "Once upon a" in block_texts(_slack_message(fake, ts)["blocks"])
            assert await _records(busy)
        finally:
            await other.close()
    finally:
        await _bury(busy)


async def test_slack_a_message_deleted_meanwhile_is_skipped_quietly(tmp_path: Path, fake: FakeSlack) -> None:
    dead = await start_slack(tmp_path, fake, generator=Stuck())
    try:
        await dead.slash(slash_body("/create", "story a night bakery"))
        ts = await _placeholder(fake, "Once upon a")
        await wait_for(lambda: _records(dead))
        await _kill(dead)
        del fake.messages[("C0GENERAL", ts)]  # someone deleted it
        posts = len(fake.answered("chat.postMessage"))
        alive = await start_slack(tmp_path, fake)
        try:
            await wait_for(lambda: _no_records(alive))
            assert [call.response.get("error") for call in fake.calls_to("chat.update")][-1:] == ["message_not_found"]
            assert len(fake.answered("chat.postMessage")) == posts
            assert fake.calls_to("chat.postEphemeral") == []
        finally:
            await alive.close()
    finally:
        await _bury(dead)


def _older_than(when: datetime, seconds: float) -> bool:
    return datetime.now(UTC) - when > timedelta(seconds=seconds)


async def _records(slack: SlackChorus) -> list[Any]:
    return await _stored_records(slack.bot.store)


async def _no_records(slack: SlackChorus) -> bool:
    return not await _records(slack)


async def _delivered(slack: SlackChorus) -> Any:
    record = await slack.bot.store.latest_generation(GENERAL)
    return record if record is not None and record.message_ref else None


class _Keyboard:
    """Piped input that stays open until closed: lines are typed by the test."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()

    def type(self, line: str) -> None:
        self.lines.put(line + "\n")

    def close(self) -> None:
        self.lines.put("")

    def readline(self) -> str:
        return self.lines.get()

    def isatty(self) -> bool:
        return False


async def test_terminal_a_reply_left_half_printed_by_a_killed_chorus_is_finished_with_a_note(tmp_path: Path) -> None:
    from adapters.terminal.app import run_terminal
    from bots.store import Store
    from chorus.compose import build_chorus
    from support import settings_for

    async def chorus_on(generator: FakeGenerator) -> Any:
        settings = settings_for(tmp_path)
        store = Store(settings.store_url)
        await store.start()
        return build_chorus(settings, store, generator, drops=False)

    dead_chorus = await chorus_on(Stuck())
    dead_keys, dead_out = _Keyboard(), io.StringIO()
    dead = asyncio.create_task(run_terminal(dead_chorus, stdin=dead_keys, stdout=dead_out))  # type: ignore[arg-type]
    alive_chorus = alive = alive_keys = None
    try:
        dead_keys.type("/create story a tide that forgot to turn")
        await wait_for(lambda: "Once upon a" in dead_out.getvalue())
        await wait_for(lambda: _stored_records(dead_chorus.store))
        await wait_for(lambda: dead_chorus.in_flight.running)
        await dead_chorus.in_flight.stop()  # killed: no heartbeat, nothing finished
        alive_chorus = await chorus_on(FakeGenerator())
        alive_keys, alive_out = _Keyboard(), io.StringIO()
        alive = asyncio.create_task(run_terminal(alive_chorus, stdin=alive_keys, stdout=alive_out))  # type: ignore[arg-type]
        await wait_for(lambda: "restarted" in alive_out.getvalue(), describe=alive_out.getvalue)
        assert "story · v1 of 1" in alive_out.getvalue()
        assert "Chorus restarted before this finished — run /create again." in alive_out.getvalue()
        await wait_for(lambda: _no_stored_records(alive_chorus.store))
    finally:
        if alive is not None and alive_keys is not None and alive_chorus is not None:
            alive_keys.close()
            await asyncio.wait_for(alive, 20)
            await alive_chorus.close()
        dead.cancel()
        dead_keys.close()
        with contextlib.suppress(asyncio.CancelledError):
            await dead
        await dead_chorus.close()


async def _stored_records(store: Any) -> list[Any]:
    from sqlalchemy import select

    from bots.store import InFlightGeneration

    async with store.session() as session:
        return list(await session.scalars(select(InFlightGeneration)))


async def _two_records(store: Any) -> list[Any]:
    records = await _stored_records(store)
    return records if len(records) == 2 else []


async def _no_stored_records(store: Any) -> bool:
    return not await _stored_records(store)


class _Recorder:
    """A Publisher that records edits, slowly enough for two sweeping processes to overlap."""

    def __init__(self) -> None:
        self.edits: list[tuple[str, str]] = []

    async def publish(self, conversation: Conversation, reply: Any) -> str:
        raise AssertionError("nothing is posted anew")

    async def edit(self, conversation: Conversation, message_ref: str, reply: Any) -> bool:
        await asyncio.sleep(0.05)  # a platform round trip, so that the two sweeps overlap
        self.edits.append((message_ref, " ".join(reply.parts)))
        return True


@pytest.mark.postgres
async def test_processes_sharing_postgres_finish_a_dead_ones_message_once_and_leave_a_live_ones_alone(
    postgres_url: str,
) -> None:
    from bots.store import Store

    stores = [Store(postgres_url) for _ in range(4)]
    for store in stores:
        await store.start()
    dead, live, first, second = (inflight.InFlight(store) for store in stores)
    try:
        live.start(_Recorder(), "discord")  # its heartbeat runs (it sweeps Discord's records, none here)
        left = inflight.Watch(dead, GENERAL, "U0BOB", "run /create", "story · v1 of 1")
        left.posted("C0GENERAL:1.000001")
        mine = inflight.Watch(live, GENERAL, "U0AMY", "run /create", "poem · v1 of 1")
        mine.posted("C0GENERAL:2.000002")
        records = await wait_for(lambda: _two_records(stores[0]))
        await wait_for(lambda: all(_older_than(r.started_at, inflight.STALE_S * 2) for r in records))
        publishers = [_Recorder(), _Recorder()]
        first.publisher, first.platform = publishers[0], "slack"
        second.publisher, second.platform = publishers[1], "slack"
        finished = await asyncio.gather(first.sweep(), second.sweep())
        edits = publishers[0].edits + publishers[1].edits
        assert sorted(finished) == [0, 1]
        assert edits == [("C0GENERAL:1.000001", "⚠ Chorus restarted before this finished — run /create again.")]
        (remaining,) = await _stored_records(stores[0])
        assert remaining.message_ref == "C0GENERAL:2.000002" and remaining.owner == live.instance
    finally:
        await live.stop()
        for store in stores:
            await store.close()


# -- Discord ---------------------------------------------------------------------------------------------------------


class Silent(FakeGenerator):
    """Never says a word: killed while the message still says "thinking…"."""

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        await asyncio.Event().wait()
        yield Chunk(request_id=request.request_id, finish_reason="stop", tokens=1)  # pragma: no cover


async def _discord_kill(harness: Any) -> None:
    # The adapter starts the heartbeat in on_ready, which can run after the first command was answered. Stopped
    # before it started, the heartbeat would start afterwards and keep the "dead" process' records fresh for good,
    # so the restarted Chorus never took them over (1 run in 5 failed).
    await wait_for(lambda: harness.chorus.in_flight.running)
    await harness.chorus.in_flight.stop()


async def _discord_bury(harness: Any) -> None:
    from test_discord_adapter import stop_harness

    for task in list(harness.adapter.tasks):
        task.cancel()
    await stop_harness(harness, stop_fake=False)


def _shown(message: dict[str, Any]) -> str:
    return json.dumps({key: message.get(key) for key in ("content", "embeds")}, ensure_ascii=False)


@pytest.mark.parametrize("generator", [Stuck, Silent], ids=["half-written", "thinking"])
async def test_discord_a_message_left_by_a_killed_chorus_says_so_after_the_restart(
    tmp_path: Path, generator: type[FakeGenerator]
) -> None:
    from fake_discord import CHANNEL_ID, FakeDiscord
    from test_discord_adapter import start_harness, stop_harness

    fake = FakeDiscord()
    await fake.start()
    dead = await start_harness(tmp_path, generator(), fake=fake)
    try:
        payload = await fake.slash("create", {"kind": "story", "prompt": "a tide that forgot to turn"})
        token = payload["token"]
        await wait_for(lambda: _stored_records(dead.chorus.store))  # recorded once Discord has the message
        original = fake.originals[token]
        if generator is Stuck:
            await wait_for(lambda: "Once upon a" in _shown(fake.messages[original]))
        await _discord_kill(dead)
        posts = len(fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$"))
        alive = await start_harness(tmp_path, fake=fake)
        try:
            await wait_for(lambda: "restarted" in _shown(fake.messages[original]), describe=lambda: fake.messages)
            shown = fake.messages[original]
            assert "Chorus restarted before this finished — run /create again." in _shown(shown)
            assert "Once upon a" not in _shown(shown) and "✍️" not in _shown(shown)
            assert not int(shown.get("flags") or 0) & 128, "no longer thinking"
            assert [message_id for message_id, _ in fake.channel_edits] == [original]
            assert len(fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")) == posts, "nothing posted anew"
            await wait_for(lambda: _no_stored_records(alive.chorus.store))
        finally:
            await stop_harness(alive, stop_fake=False)
    finally:
        await _discord_bury(dead)
        await fake.stop()


async def test_discord_a_result_stored_just_before_the_kill_replaces_its_half_written_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_discord import CHANNEL_ID, FakeDiscord
    from test_discord_adapter import custom_ids, start_harness, stop_harness

    stored, original_stored = _killed_once_stored(monkeypatch)
    fake = FakeDiscord()
    await fake.start()
    slow = FakeGenerator(lambda request: "Steep dreams, bold cups.", delay_s=0.3)
    dead = await start_harness(tmp_path, slow, fake=fake)
    try:
        payload = await fake.slash("create", {"kind": "slogan", "prompt": "tea"})
        await asyncio.wait_for(stored.wait(), 20)
        original = fake.originals[payload["token"]]
        await wait_for(lambda: "Steep" in _shown(fake.messages[original]))
        await _discord_kill(dead)
        monkeypatch.setattr(inflight.Watch, "stored", original_stored)
        posts = len(fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$"))
        alive = await start_harness(tmp_path, fake=fake)
        try:
            await wait_for(lambda: NOTE in _shown(fake.messages[original]), describe=lambda: fake.messages[original])
            shown = fake.messages[original]
            assert "Steep dreams, bold cups." in _shown(shown) and "✍️" not in _shown(shown)
            record = await wait_for(lambda: _delivered_on(alive.chorus.store))
            assert record.message_ref == original
            assert any(f":regenerate:{record.id}:" in cid for cid in custom_ids(shown)), "with its buttons"
            assert len(fake.find("POST", rf"/channels/{CHANNEL_ID}/messages$")) == posts, "not posted again"
            await wait_for(lambda: _no_stored_records(alive.chorus.store))
        finally:
            await stop_harness(alive, stop_fake=False)
    finally:
        await _discord_bury(dead)
        await fake.stop()


async def _delivered_on(store: Any) -> Any:
    record = await store.latest_generation(Conversation("discord", GUILD_ID, CHANNEL_ID))
    return record if record is not None and record.message_ref else None


# -- a real SIGKILL --------------------------------------------------------------------------------------------------


class _StuckModelServer:
    """An OpenAI-compatible server on 127.0.0.1 that streams "Once upon a " and then nothing, ever."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.hold = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._complete)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "stuck"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = {"choices": [{"index": 0, "delta": {"content": "Once upon a "}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(delta)}\n\n".encode())
        await self.hold.wait()
        return response

    async def close(self) -> None:
        self.hold.set()
        if self.runner is not None:
            await self.runner.cleanup()


async def test_slack_chorus_run_killed_with_sigkill_has_its_message_finished_as_the_next_one_starts(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys

    from slack_support import SECRETS, slack_env

    from bots.store import Store
    from support import settings_for

    # Only the dead process id can tell: its records would not go stale within this test.
    monkeypatch.setattr(inflight, "STALE_S", 3600.0)
    model = _StuckModelServer()
    await model.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= slack_env(fake, "socket") | SECRETS
    env |= {
        "CHORUS_HOME": str(tmp_path),
        "CHORUS_CHORUS__PLATFORM": "slack",
        "CHORUS_GENERATION__URL": f"http://127.0.0.1:{model.port}/v1",
        "CHORUS_GENERATION__BEST_OF": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus", "run", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await fake.wait_connected(120)
        await fake.push("slash_commands", slash_body("/create", "story a night bakery"))
        ts = await _placeholder(fake, "Once upon a")
        store = Store(settings_for(tmp_path).store_url)
        await store.start()
        try:
            await wait_for(lambda: _stored_records(store))  # recorded by the process about to be killed
        finally:
            await store.close()
        process.kill()  # SIGKILL: no handler runs, nothing is finished
        await process.wait()
        posts = len(fake.answered("chat.postMessage"))
        alive = await start_slack(tmp_path, fake)
        try:
            await wait_for(
                lambda: "restarted" in block_texts(_slack_message(fake, ts)["blocks"]),
                describe=lambda: _slack_message(fake, ts),
            )
            assert "run /create again" in block_texts(_slack_message(fake, ts)["blocks"])
            assert len(fake.answered("chat.postMessage")) == posts
            await wait_for(lambda: _no_records(alive))
        finally:
            await alive.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await model.close()


async def test_slack_a_record_the_database_failed_to_clear_never_outlives_its_finished_message(
    tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    real_delete = inflight.delete
    failures = [OperationalError("DELETE", {}, Exception("database is locked"))]

    def flaky_delete(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_delete(*args)

    monkeypatch.setattr(inflight, "delete", flaky_delete)
    slack = await start_slack(
        tmp_path, fake, generator=FakeGenerator(lambda r: "Steep dreams, bold cups.", delay_s=0.1)
    )
    try:
        await slack.slash(slash_body("/create", "slogan tea"))
        record = await wait_for(lambda: _delivered(slack))
        assert not failures, "clearing its record failed once"
        # The heartbeat clears it, so a later process never takes the finished result for a message cut short.
        await wait_for(lambda: _no_records(slack))
        await _kill(slack)
        later = await start_slack(tmp_path, fake)
        try:
            await wait_for(lambda: _older_than(record.created_at, inflight.STALE_S * 2))
            assert await later.bot.chorus.in_flight.sweep() == 0
        finally:
            await later.close()
        shown = _slack_message(fake, record.message_ref.split(":")[1])
        assert "Steep dreams, bold cups." in block_texts(shown["blocks"]) and "restarted" not in str(shown)
    finally:
        await _bury(slack)
