"""Test support: a FakeResponder that records everything, and TestBot, Chorus on the FakeGenerator.

`testbot.say("/create slogan a cafe")` runs one terminal line through the real router, commands, studio and
SQLite store and returns the replies it produced (after errbot's testbot).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from adapters.terminal.translate import Notice, Quit, SwitchUser, answers_question, terminal_user, to_event
from bots.app import Chorus
from bots.events import Conversation, User
from bots.reply import Reply, ReplyAction
from bots.store import Store
from chorus.compose import build_chorus
from config import Settings, load_settings
from generation.fake import FakeGenerator
from generation.types import Chunk

T = TypeVar("T")

POSTGRES_URL = os.environ.get("CHORUS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@dataclass
class FakeStream:
    title: str
    responder: FakeResponder
    parts: list[str] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    final: Reply | None = None

    async def begin_part(self, index: int, total: int) -> None:
        self.parts.append("")

    async def write(self, delta: str) -> None:
        self.deltas.append(delta)
        self.parts[-1] += delta

    async def status(self, text: str) -> None:
        self.statuses.append(text)

    async def finish(self, reply: Reply) -> str:
        self.final = reply
        return await self.responder.send(reply)


class FakeResponder:
    """Records every call; replies are what the user would have seen, in order."""

    def __init__(self) -> None:
        self.deferred = 0
        self.replies: list[Reply] = []
        self.streams: list[FakeStream] = []
        self.edits: list[tuple[str, Reply]] = []
        self.threads: list[tuple[str, str]] = []

    async def defer(self) -> None:
        self.deferred += 1

    async def send(self, reply: Reply) -> str:
        self.replies.append(reply)
        return f"fake-{len(self.replies)}"

    async def edit(self, message_ref: str, reply: Reply) -> None:
        self.edits.append((message_ref, reply))

    def stream(self, title: str) -> FakeStream:
        stream = FakeStream(title, self)
        self.streams.append(stream)
        return stream

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, FakeResponder]:
        """Records (message_ref, name); the thread's replies land in this same responder."""
        self.threads.append((message_ref, name))
        return f"thread-{message_ref}", self


def reply_text(reply: Reply) -> str:
    return "\n".join([reply.title, *reply.parts, reply.footer]).strip()


class TestBot:
    """Drives Chorus the way the terminal does, with structured replies to assert on."""

    __test__ = False

    def __init__(self, chorus: Chorus, user: str = "alice") -> None:
        self.chorus = chorus
        self.user = terminal_user(user)
        self.keys: dict[str, ReplyAction] = {}
        self.responder = FakeResponder()

    @property
    def generator(self) -> FakeGenerator:
        return self.chorus.generator  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        return self.chorus.store

    async def say(self, line: str, *, as_user: str | None = None) -> list[Reply]:
        if as_user is not None:
            self.user = terminal_user(as_user)
        event = to_event(line, self.user, self.keys)
        assert not isinstance(event, SwitchUser | Quit), "use as_user= to switch users in tests"
        if event is None:
            return []
        if isinstance(event, Notice):  # the terminal answers it itself
            return [Reply.text(event.text, ephemeral=True)]
        if answers_question(event, self.keys):
            self.keys = {}
        before = len(self.responder.replies)
        await self.chorus.handle(event, self.responder)
        new = self.responder.replies[before:]
        for reply in new:
            if reply.actions:
                self.keys = {a.key.split()[0]: a for a in reply.actions if a.key}
        return new

    async def one(self, line: str, **kwargs: str) -> Reply:
        replies = await self.say(line, **kwargs)
        assert len(replies) == 1, [reply_text(r) for r in replies]
        return replies[0]


def settings_for(home: Path, **env: str) -> Settings:
    # One candidate per variant unless a test asks for more, so request counts and live streaming stay simple.
    return load_settings(
        env={"CHORUS_HOME": str(home), "CHORUS_MODEL__SOURCE": "fake", "CHORUS_GENERATION__BEST_OF": "1", **env}
    )


async def make_bot(
    settings: Settings,
    generator: FakeGenerator | None = None,
    *,
    drops: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> TestBot:
    """Chorus with every feature installed as `chorus run` does; drops only on request (their tests attach their
    own service, with a clock they control, which then also stamps engagement)."""
    store = Store(settings.store_url, clock=clock)
    await store.start()
    return TestBot(build_chorus(settings, store, generator or FakeGenerator(), drops=drops))


def texts(replies: Sequence[Reply]) -> list[str]:
    return [reply_text(reply) for reply in replies]


async def collect(chunks: AsyncIterator[Chunk]) -> tuple[str, list[Chunk]]:
    """Drain a stream: the joined text and every chunk."""
    received = [chunk async for chunk in chunks]
    return "".join(chunk.text for chunk in received), received


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]], *, timeout_s: float = 20.0, describe: Callable[[], object] | None = None
) -> T:
    """Poll `predicate` (plain or async) until it returns something truthy, and return that. The deadline only
    bounds the wait: past it the test fails, saying `describe()` (what was seen) if given. Never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            seen = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"condition not met within {timeout_s} s{seen}")
        await asyncio.sleep(0.005)


def wait_for_sync(
    predicate: Callable[[], T], *, timeout_s: float = 20.0, describe: Callable[[], object] | None = None
) -> T:
    """`wait_for` for plain (non-async) tests: a subprocess coming up, a file appearing."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            seen = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"condition not met within {timeout_s} s{seen}")
        time.sleep(0.02)
    return result


async def wait_until(condition: Callable[[], object], timeout_s: float = 20.0) -> None:
    """`wait_for` under the name most tests already call it by."""
    await wait_for(condition, timeout_s=timeout_s)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def store_undelivered(home: Path, conversation: Conversation, author: User) -> tuple[int, int]:
    """What a process killed mid-delivery leaves in the store under `home`: a result by `author` with no message ref
    (the platform never had it) and a scheduled drop not posted yet (the drops scheduler's). Returns their ids."""
    store = Store(settings_for(home).store_url)
    await store.start()
    try:
        lost = await store.add_generation(
            conversation, author, kind="slogan", tone="witty", prompt="tea", params={},
            variants=("Steep dreams, bold cups.",),
        )  # fmt: skip
        drop = await store.add_generation(
            conversation, User("chorus-drops", "Chorus drops"), kind="slogan", tone="", prompt="doors", params={},
            variants=("A door that opens inward.",),
        )  # fmt: skip
    finally:
        await store.close()
    return lost.id, drop.id
