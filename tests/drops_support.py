"""Test support for drops: a recording Publisher (the platform side), a settable clock, and a running Chorus with
the drops service attached."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bots.events import Conversation, User
from bots.reply import PublishForbidden, Reply
from config import Settings
from scheduler.models import DropRun
from scheduler.service import DropsService
from support import TestBot, make_bot, settings_for

ALICE = User("alice", "alice", is_moderator=True)
BOB = User("bob", "bob")


class Clock:
    """A clock tests move by hand: `clock.advance(hours=25)`."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class Forbidden(PublishForbidden):
    """What a Publisher raises for a channel the bot may not post to (the adapters map 403 and friends to it)."""


@dataclass
class RecordingPublisher:
    """Records every publish; `failures` are raised in order before posts succeed; channels in `down` always fail
    with ConnectionError; `hang` blocks the send until set; `latency` moves `clock` on by that much per send (the
    time writing and sending a drop takes)."""

    posts: list[tuple[Conversation, Reply]] = field(default_factory=list)
    attempts: int = 0
    failures: list[BaseException] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    hang: asyncio.Event | None = None
    clock: Clock | None = None
    latency: timedelta = timedelta(0)

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        self.attempts += 1
        if self.clock is not None:
            self.clock.current += self.latency
        if self.hang is not None:
            await self.hang.wait()
        if conversation.channel in self.down:
            raise ConnectionError(f"{conversation.channel} is unreachable")
        if self.failures:
            raise self.failures.pop(0)
        self.posts.append((conversation, reply))
        return f"msg-{len(self.posts)}"

    def to(self, channel: str) -> list[Reply]:
        return [reply for conversation, reply in self.posts if conversation.channel == channel]


@dataclass
class Drops:
    bot: TestBot
    service: DropsService
    publisher: RecordingPublisher
    clock: Clock

    async def say(self, line: str) -> str:
        replies = await self.bot.say(line)
        return "\n".join(part for reply in replies for part in reply.parts)

    async def runs(self) -> list[DropRun]:
        async with self.bot.store.session() as session:
            return list(await session.scalars(select(DropRun).order_by(DropRun.id)))

    def jobs(self) -> list:
        assert self.service.scheduler is not None
        return [job for job in self.service.scheduler.get_jobs() if job.id.startswith("drop:")]


def drops_settings(home: Path, **env: str) -> Settings:
    """Settings for a drops test: the tick only runs when a test calls it; alerts go to the "mods" channel."""
    defaults = {"CHORUS_DROPS__TICK_S": "3600", "CHORUS_DROPS__ADMIN_CHANNEL": "mods"}
    return settings_for(home, **{**defaults, **env})


async def start_drops(settings: Settings, clock: Clock, publisher: RecordingPublisher | None = None) -> Drops:
    """A running Chorus with the drops service attached and `publisher` (a RecordingPublisher) as its platform."""
    bot = await make_bot(settings, clock=clock)
    service = DropsService(bot.chorus, clock=clock)
    service.attach()
    publisher = publisher or RecordingPublisher()
    await bot.chorus.attach_publisher(publisher)
    return Drops(bot, service, publisher, clock)
