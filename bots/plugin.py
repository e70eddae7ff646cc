"""The one way a feature joins Chorus: a `Plugin` declares its commands, the events it claims, and its tables.

In the spirit of errbot's BotPlugin and nonebot2's matchers. The composition root (chorus/compose.py) builds the
list of plug-ins and `Chorus.install`s each; nothing else wires a feature in. A plug-in overrides only the hooks
it needs: an event hook returns True for "mine, handled" and the event goes no further.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from bots.router import CommandSpec, Context, Middleware

if TYPE_CHECKING:
    from sqlalchemy import Table

    from bots.app import Chorus
    from bots.reply import Publisher


class Plugin:
    """A feature of Chorus. Subclass it, set `name` and `commands`, override the hooks you need."""

    name: ClassVar[str] = ""
    # The slash commands this feature adds; adapters register what the installed plug-ins declare.
    commands: ClassVar[tuple[CommandSpec, ...]] = ()
    # Tables the feature keeps in the store's database (for migrations and `create_all`); empty if none.
    tables: Sequence[Table] = ()
    # Middleware run outside the core ones (error replies, permissions, quota, moderation), e.g. to count commands.
    middleware: Sequence[Middleware] = ()
    # True: the event hooks see only what no other plug-in claimed (create/refine treats any leftover reply as a
    # refinement, so it must come after brainstorm threads and replies to drops).
    catch_all: ClassVar[bool] = False

    def install(self, app: Chorus) -> None:
        """Called once, by `Chorus.install`, before any event arrives: build what the feature needs from `app`."""

    async def on_message(self, ctx: Context) -> bool:
        """A plain message in a channel or thread Chorus can see. True if this feature handled it."""
        return False

    async def on_action(self, ctx: Context) -> bool:
        """A button or select on a Chorus message. True if the action id is this feature's."""
        return False

    async def on_reaction(self, ctx: Context) -> bool:
        """An emoji added or removed on a message. True if this feature handled it."""
        return False

    async def on_message_edited(self, ctx: Context) -> bool:
        """A person changed the text of a message they posted earlier. True if this feature handled it."""
        return False

    async def on_message_deleted(self, ctx: Context) -> bool:
        """A message was deleted. True if this feature handled it."""
        return False

    async def on_activity(self, ctx: Context) -> bool:
        """Channel activity (any message, even ones not for Chorus), for features that count it."""
        return False

    async def start(self, app: Chorus, publisher: Publisher) -> None:
        """The adapter can now post unprompted (again, after a reconnect): start timers and background work."""

    async def stop(self) -> None:
        """Chorus is closing: stop background work. Runs newest plug-in first, before the generator and store."""

    def claims(self, hook: str) -> bool:
        """Does this plug-in override the event hook `hook` ("on_message", ...)? Only those are called."""
        return getattr(type(self), hook) is not getattr(Plugin, hook)
