"""Scheduled drops, installed as a plug-in: /drops and /stats, activity counting, replies and ratings on drops, and
the scheduler that starts once the adapter can post."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from bots.commands.drops import DROPS, STATS
from bots.plugin import Plugin
from bots.router import CommandSpec, Context, Handler
from scheduler.models import DROP_TABLES
from scheduler.service import DropsService, sync_url

if TYPE_CHECKING:
    from bots.app import Chorus
    from bots.reply import Publisher

_log = logging.getLogger(__name__)


class DropsPlugin(Plugin):
    """Wraps a `DropsService` (built at install unless one is given, as tests do to inject a clock)."""

    name = "drops"
    commands: ClassVar[tuple[CommandSpec, ...]] = (DROPS, STATS)
    tables = tuple(DROP_TABLES)

    def __init__(self, service: DropsService | None = None, *, clock: Callable[[], datetime] | None = None) -> None:
        self.service = service
        self._clock = clock
        self.middleware = (self._count_command,)

    def install(self, app: Chorus) -> None:
        """Attach the service as `app.drops`. Without a given service, build one unless the store cannot host the
        job store (an in-memory SQLite): then /drops and /stats say that drops are not running."""
        if self.service is None:
            try:
                sync_url(app.store.url)
            except ValueError as exc:
                _log.warning("scheduled drops are off: %s", exc)
                return
            self.service = DropsService(app, clock=self._clock)
        app.drops = self.service

    async def _count_command(self, ctx: Context, call_next: Handler) -> None:
        if self.service is None:
            await call_next(ctx)
        else:
            await self.service._count_command(ctx, call_next)

    async def on_message(self, ctx: Context) -> bool:
        return self.service is not None and await self.service._on_message(ctx)

    async def on_action(self, ctx: Context) -> bool:
        return self.service is not None and await self.service._on_action(ctx)

    async def on_activity(self, ctx: Context) -> bool:
        return self.service is not None and await self.service._on_activity(ctx)

    async def start(self, app: Chorus, publisher: Publisher) -> None:
        """Take part in leader election; the leader runs the APScheduler job store and the tick loop."""
        if self.service is not None:
            await self.service.start(publisher)

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
