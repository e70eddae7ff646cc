"""The Chorus application: settings, store and generator wired to the router, plus the plug-ins installed on it.

Platform-neutral, and feature-neutral: the core answers /history, /forget and /help itself; every other feature
(create/refine, brainstorm, drops) is a `Plugin` that the composition root (chorus/compose.py) installs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from bots.clicks import Clicks
from bots.commands import COMMANDS, CORE_COMMANDS
from bots.commands.forget import FORGET_ACTIONS, handle_confirm
from bots.drops import DropsControl
from bots.errors import UserError
from bots.events import Action, Activity, Event, Message, MessageDeleted, MessageEdited, Reaction
from bots.inflight import InFlight
from bots.plugin import Plugin
from bots.reply import Publisher, Responder
from bots.retention import Retention
from bots.router import Context, Quota, Router, error_boundary, input_moderation, permission_check, quota_check
from bots.store import Store
from bots.studio import Studio
from config import Settings
from generation.moderation import Blocklist
from generation.types import Embedder, Generator

if TYPE_CHECKING:
    from bots.brainstorm.feature import Brainstorms

_log = logging.getLogger(__name__)

PublisherHook = Callable[[Publisher], Awaitable[None]]
CloseHook = Callable[[], Awaitable[None]]
# A feature's look at a message, action or reaction: True means "mine, handled", and the event goes no further.
EventHook = Callable[[Context], Awaitable[bool]]
EventType = type[Message] | type[Action] | type[Reaction] | type[Activity] | type[MessageEdited] | type[MessageDeleted]
_HOOK_NAMES: dict[type, str] = {
    Message: "on_message",
    Action: "on_action",
    Reaction: "on_reaction",
    Activity: "on_activity",
    MessageEdited: "on_message_edited",
    MessageDeleted: "on_message_deleted",
}
# Where commands appear in /help and on the platforms: the order of the catalogue, whoever declares them.
_CATALOGUE_ORDER = {spec.name: index for index, spec in enumerate(COMMANDS)}


class Chorus:
    """One Chorus instance. Adapters call `handle(event, responder)`; everything else is behind it."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        generator: Generator,
        *,
        embedder: Embedder | None = None,
        plugins: Iterable[Plugin] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.generator = generator
        # Sentence embeddings (brainstorm clustering, drop de-duplication); None where no embedding model is set up.
        self.embedder = embedder
        self.blocklist = Blocklist(settings.moderation.blocklist)
        self.quota = Quota(settings.limits.quota_per_minute)
        self.router = Router(
            CORE_COMMANDS,
            middleware=[error_boundary, permission_check, input_moderation(self.blocklist), quota_check(self.quota)],
        )
        self._event_hooks: dict[type, list[EventHook]] = {kind: [] for kind in _HOOK_NAMES}
        self._leftover_hooks: dict[type, list[EventHook]] = {kind: [] for kind in _HOOK_NAMES}
        router = self.router
        router.message_handler = router.action_handler = self._on_event
        router.reaction_handler = router.activity_handler = self._on_event
        router.edit_handler = router.delete_handler = self._on_event
        # Runs a Draft through the generator with streaming, queue notes and the result's buttons (create, refine
        # and drops all generate through it).
        self.studio = Studio(self)
        self.publisher: Publisher | None = None
        self._publisher_hooks: list[PublisherHook] = []
        self._close_hooks: list[CloseHook] = []
        self.plugins: dict[str, Plugin] = {}
        # Set by their plug-ins when installed; commands reach the features through these.
        self.brainstorms: Brainstorms | None = None
        self.drops: DropsControl | None = None
        # Deletes stored data past its retention period (docs/data.md): core, whatever features are installed.
        self.retention = Retention(self)
        self.retention.attach()
        # Refinement clicks being worked on, so a double click makes one version, not two.
        self.clicks = Clicks()
        # Generations whose message is posted but not final, so a restart after a kill finishes those messages.
        self.in_flight = InFlight.attach(self)
        for plugin in plugins:
            self.install(plugin)

    def install(self, plugin: Plugin) -> None:
        """Add a feature: its commands to the router, its middleware, its event hooks, its start and stop."""
        if plugin.name in self.plugins:
            raise ValueError(f"a plug-in named {plugin.name!r} is already installed")
        plugin.install(self)
        self.plugins[plugin.name] = plugin
        commands = self.router.commands
        for spec in plugin.commands:
            if spec.name in commands:
                raise ValueError(f"/{spec.name} is declared twice (plug-in {plugin.name!r})")
            commands[spec.name] = spec
        self.router.commands = dict(
            sorted(commands.items(), key=lambda item: _CATALOGUE_ORDER.get(item[0], len(_CATALOGUE_ORDER)))
        )
        self.router.middleware[:0] = plugin.middleware
        hooks = self._leftover_hooks if plugin.catch_all else self._event_hooks
        for event_type, hook_name in _HOOK_NAMES.items():
            if plugin.claims(hook_name):
                hooks[event_type].append(getattr(plugin, hook_name))

        async def start(publisher: Publisher) -> None:
            await plugin.start(self, publisher)

        self.on_publisher(start)
        self.on_close(plugin.stop)
        _log.debug("installed plug-in %s", plugin.name)

    async def handle(self, event: Event, responder: Responder) -> None:
        await self.router.dispatch(event, responder, self)

    def intercept(self, event_type: EventType, hook: EventHook) -> None:
        """Let `hook` see events of `event_type` before the catch-all plug-ins (tests and small extensions)."""
        self._event_hooks[event_type].append(hook)

    async def _on_event(self, ctx: Context) -> None:
        event = ctx.event
        if isinstance(event, Action) and event.action_id in FORGET_ACTIONS:
            await handle_confirm(ctx)
            return
        for hook in (*self._event_hooks[type(event)], *self._leftover_hooks[type(event)]):
            if await hook(ctx):
                return
        if isinstance(event, Action):
            raise UserError("That button is no longer supported. Start again with /create.")

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
