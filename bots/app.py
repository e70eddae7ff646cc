"""The Chorus application: settings, store and generator wired to the router. Platform-neutral."""

from __future__ import annotations

import logging

from bots import feedback
from bots.commands import COMMANDS
from bots.commands.forget import FORGET_ACTIONS, handle_confirm
from bots.events import Action, Event
from bots.reply import Responder
from bots.router import Context, Quota, Router, error_boundary, input_moderation, permission_check, quota_check
from bots.store import Store
from bots.studio import Studio
from config import Settings
from generation.moderation import Blocklist
from generation.types import Generator

_log = logging.getLogger(__name__)


async def _on_action(ctx: Context) -> None:
    assert isinstance(ctx.event, Action)
    if ctx.event.action_id in FORGET_ACTIONS:
        await handle_confirm(ctx)
    else:
        await feedback.handle_action(ctx)


class Chorus:
    """One Chorus instance. Adapters call `handle(event, responder)`; everything else is behind it."""

    def __init__(self, settings: Settings, store: Store, generator: Generator) -> None:
        self.settings = settings
        self.store = store
        self.generator = generator
        self.blocklist = Blocklist(settings.moderation.blocklist)
        self.quota = Quota(settings.limits.quota_per_minute)
        self.router = Router(
            COMMANDS,
            middleware=[error_boundary, permission_check, input_moderation(self.blocklist), quota_check(self.quota)],
        )
        self.router.message_handler = feedback.handle_message
        self.router.action_handler = _on_action
        self.router.reaction_handler = feedback.handle_reaction
        self.studio = Studio(self)

    async def handle(self, event: Event, responder: Responder) -> None:
        await self.router.dispatch(event, responder, self)

    async def close(self) -> None:
        await self.generator.close()
        await self.store.close()
