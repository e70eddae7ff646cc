"""Brainstorm, installed as a plug-in: /brainstorm, and the messages, votes and buttons of its threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from bots.brainstorm.command import BRAINSTORM
from bots.brainstorm.feature import Brainstorms
from bots.plugin import Plugin
from bots.router import CommandSpec, Context

if TYPE_CHECKING:
    from bots.app import Chorus
    from bots.reply import Publisher


class BrainstormPlugin(Plugin):
    """Claims the events of brainstorm threads; the sessions themselves live in `Brainstorms` and the store."""

    name = "brainstorm"
    commands: ClassVar[tuple[CommandSpec, ...]] = (BRAINSTORM,)

    def __init__(self) -> None:
        self.sessions: Brainstorms | None = None

    def install(self, app: Chorus) -> None:
        self.sessions = app.brainstorms = Brainstorms(app)

    def _feature(self) -> Brainstorms:
        if self.sessions is None:
            raise RuntimeError("BrainstormPlugin is used before Chorus.install")
        return self.sessions

    async def on_message(self, ctx: Context) -> bool:
        return await self._feature()._on_message(ctx)

    async def on_action(self, ctx: Context) -> bool:
        return await self._feature()._on_action(ctx)

    async def on_reaction(self, ctx: Context) -> bool:
        return await self._feature()._on_reaction(ctx)

    async def on_message_edited(self, ctx: Context) -> bool:
        return await self._feature()._on_message_edited(ctx)

    async def on_message_deleted(self, ctx: Context) -> bool:
        return await self._feature()._on_message_deleted(ctx)

    async def start(self, app: Chorus, publisher: Publisher) -> None:
        """Re-arm the round timers of sessions that were running when Chorus last stopped."""
        await self._feature()._on_publisher(publisher)

    async def stop(self) -> None:
        if self.sessions is not None:
            await self.sessions.close()
