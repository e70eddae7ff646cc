"""Test support for drops: a recording Publisher (the platform side) and a settable clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bots.events import Conversation
from bots.reply import PublishForbidden, Reply


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
    with ConnectionError; `hang` blocks the send until set."""

    posts: list[tuple[Conversation, Reply]] = field(default_factory=list)
    attempts: int = 0
    failures: list[BaseException] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    hang: asyncio.Event | None = None

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        self.attempts += 1
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
