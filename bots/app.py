"""The Chorus application: settings, store and generator wired to the router. Platform-neutral."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bots import feedback
from bots.brainstorm.feature import Brainstorms
from bots.commands import COMMANDS
from bots.commands.forget import FORGET_ACTIONS, handle_confirm
from bots.drops import DropsControl
from bots.events import Action, Activity, Event, Message, Reaction
from bots.reply import Publisher, Responder
from bots.retention import Retention
from bots.router import Context, Quota, Router, error_boundary, input_moderation, permission_check, quota_check
from bots.store import Store
from bots.studio import Studio
from config import Settings
from generation.moderation import Blocklist
from generation.types import Embedder, Generator

_log = logging.getLogger(__name__)

PublisherHook = Callable[[Publisher], Awaitable[None]]
CloseHook = Callable[[], Awaitable[None]]
# A feature's first look at a message, action or reaction: True means "mine, handled", and the default is skipped.
EventHook = Callable[[Context], Awaitable[bool]]


async def _on_action(ctx: Context) -> None:
    assert isinstance(ctx.event, Action)
    if ctx.event.action_id in FORGET_ACTIONS:
        await handle_confirm(ctx)
    else:
        await feedback.handle_action(ctx)


async def _ignore(ctx: Context) -> None:
    """Channel activity means nothing to the core; features (drops) count it through a hook."""


_DEFAULT_HANDLERS: dict[type, Callable[[Context], Awaitable[None]]] = {
    Message: feedback.handle_message,
    Action: _on_action,
    Reaction: feedback.handle_reaction,
    Activity: _ignore,
}


class Chorus:
    """One Chorus instance. Adapters call `handle(event, responder)`; everything else is behind it."""

    def __init__(
        self, settings: Settings, store: Store, generator: Generator, *, embedder: Embedder | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.generator = generator
        # Sentence embeddings (brainstorm clustering, drop de-duplication); None where no embedding model is set up.
        self.embedder = embedder
        self.blocklist = Blocklist(settings.moderation.blocklist)
        self.quota = Quota(settings.limits.quota_per_minute)
        self.router = Router(
            COMMANDS,
            middleware=[error_boundary, permission_check, input_moderation(self.blocklist), quota_check(self.quota)],
        )
        self._event_hooks: dict[type, list[EventHook]] = {kind: [] for kind in _DEFAULT_HANDLERS}
        router = self.router
        router.message_handler = router.action_handler = self._on_event
        router.reaction_handler = router.activity_handler = self._on_event
        self.studio = Studio(self)
        self.publisher: Publisher | None = None
        # Scheduled drops (#7), attached by the composition root; None where no scheduler runs.
        self.drops: DropsControl | None = None
        self._publisher_hooks: list[PublisherHook] = []
        self._close_hooks: list[CloseHook] = []
        self.brainstorms = Brainstorms(self)
        self.retention = Retention(self)
        self.retention.attach()

    async def handle(self, event: Event, responder: Responder) -> None:
        await self.router.dispatch(event, responder, self)

    def intercept(
        self, event_type: type[Message] | type[Action] | type[Reaction] | type[Activity], hook: EventHook
    ) -> None:
        """Let a feature (a brainstorm thread, a drop's reactions) claim events before refinement and feedback."""
        self._event_hooks[event_type].append(hook)

    async def _on_event(self, ctx: Context) -> None:
        for hook in self._event_hooks[type(ctx.event)]:
            if await hook(ctx):
                return
        await _DEFAULT_HANDLERS[type(ctx.event)](ctx)

    def on_publisher(self, hook: PublisherHook) -> None:
        """Run `hook(publisher)` once the adapter can post unprompted; background services (drops) start there."""
        self._publisher_hooks.append(hook)

    def on_close(self, hook: CloseHook) -> None:
        """Run `hook()` at close, newest first, before the generator and the store shut down."""
        self._close_hooks.append(hook)

    async def attach_publisher(self, publisher: Publisher) -> None:
        """Called by each adapter once it is connected and able to post to channels."""
        self.publisher = publisher
        for hook in self._publisher_hooks:
            await hook(publisher)

    async def close(self) -> None:
        for hook in reversed(self._close_hooks):
            try:
                await hook()
            except Exception:
                _log.exception("a close hook failed")
        await self.generator.close()
        await self.store.close()
