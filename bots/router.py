"""The command router: finds the handler for an event and runs it through middleware.

Middleware are `async def mw(ctx, call_next)` callables, outermost first, in the style of ASGI/aiohttp. The ones
here cover what every platform needs: error replies, permission checks, per-user quotas and input moderation.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bots.errors import UserError
from bots.events import Action, Activity, Command, Event, Message, MessageDeleted, MessageEdited, Reaction
from bots.parsing import did_you_mean
from bots.reply import Reply, Responder
from generation.moderation import Blocklist
from generation.text import short
from generation.types import GenerationError, GeneratorBusy

if TYPE_CHECKING:
    from bots.app import Chorus
    from bots.options import Option

_log = logging.getLogger(__name__)

Handler = Callable[["Context"], Awaitable[None]]
Middleware = Callable[["Context", Handler], Awaitable[None]]


@dataclass(frozen=True)
class CommandSpec:
    """A command every adapter exposes. Adapters build their slash-command lists from these."""

    name: str
    summary: str
    usage: str
    handler: Handler
    generates: bool = False
    moderator_only: bool = False
    # The reply opens a thread (a brainstorm session): platforms offer it only where threads can be opened.
    opens_thread: bool = False
    # Structured options for platforms that have them (Discord): typed Options, or (name, description) pairs.
    options: tuple[Option | tuple[str, str], ...] = ()
    # The command reads nothing after its name: words there ("/stats last week") are refused, not silently ignored.
    bare: bool = False


@dataclass
class Context:
    event: Event
    responder: Responder
    app: Chorus
    spec: CommandSpec | None = None
    # Set by the quota middleware for events that may generate; charged once, when generation really starts.
    quota: Quota | None = None
    charged: bool = False

    def charge_quota(self) -> None:
        """Charge one generation to the event's user, or refuse with the wait time. Once per event; a no-op for
        events no quota applies to (scheduled drops)."""
        if self.quota is None or self.charged:
            return
        take_quota(self.quota, self.event)
        self.charged = True

    async def fail(self, text: str) -> None:
        if isinstance(self.event, Activity):  # nobody asked anything: log, never post
            _log.warning("handling channel activity failed: %s", text)
            return
        await self.responder.send(Reply.error(text))


def event_generates(ctx: Context) -> bool:
    """Will handling this event start a generation? (Quota and moderation only apply then.)"""
    event = ctx.event
    if isinstance(event, Command):
        return ctx.spec is not None and ctx.spec.generates
    if isinstance(event, Action):
        from bots.feedback import GENERATING_ACTIONS

        return event.action_id in GENERATING_ACTIONS
    return isinstance(event, Message)


def event_text(event: Event) -> str:
    if isinstance(event, Command):
        return " ".join([event.text, *event.options.values()])
    if isinstance(event, Message):
        return event.text
    if isinstance(event, Action):
        return event.value
    return ""


async def error_boundary(ctx: Context, call_next: Handler) -> None:
    """Turn every failure into a short reply; nothing reaches the adapter as an exception."""
    try:
        await call_next(ctx)
    except UserError as exc:
        await ctx.fail(str(exc))
    except GeneratorBusy as exc:
        await ctx.fail(str(exc) or "Chorus is busy right now. Try again in a minute.")
    except GenerationError as exc:
        await ctx.fail(f"Generation failed: {exc}")
    except Exception:
        ref = uuid.uuid4().hex[:8]
        _log.exception("unhandled error handling %r (ref %s)", type(ctx.event).__name__, ref)
        await ctx.fail(f"Something went wrong on our side (ref {ref}). Please try again.")


async def permission_check(ctx: Context, call_next: Handler) -> None:
    if ctx.spec is not None and ctx.spec.moderator_only and not ctx.event.user.is_moderator:
        raise UserError(f"Only moderators can use /{ctx.spec.name}.")
    await call_next(ctx)


class Quota:
    """A per-user sliding one-minute window. Bounded: idle users are dropped as windows empty."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._starts: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._swept_at = clock()

    def __len__(self) -> int:
        """How many users the quota remembers right now."""
        return len(self._starts)

    def take(self, platform: str, user_id: str) -> float:
        """Record one use; return 0 if allowed, else the seconds until the next use is allowed."""
        wait = self.wait(platform, user_id)
        if wait == 0 and self.per_minute > 0:
            self._starts[(platform, user_id)].append(self._clock())
        return wait

    def wait(self, platform: str, user_id: str) -> float:
        """Seconds until this user may generate again (0: now), without recording a use."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        key = (platform, user_id)
        self._drop_idle(now)
        window = self._starts[key]
        while window and now - window[0] >= self.WINDOW_S:
            window.popleft()
        if not window:
            del self._starts[key]
            return 0.0
        if len(window) >= self.per_minute:
            return self.WINDOW_S - (now - window[0])
        return 0.0

    def forget(self, platform: str, user_id: str) -> None:
        self._starts.pop((platform, user_id), None)

    def _drop_idle(self, now: float) -> None:
        """Once a window's length, forget everyone whose last use is older than the window (O(users) a minute)."""
        if now - self._swept_at < self.WINDOW_S:
            return
        self._swept_at = now
        idle = [key for key, window in self._starts.items() if not window or now - window[-1] >= self.WINDOW_S]
        for key in idle:
            del self._starts[key]


def take_quota(quota: Quota, event: Event) -> None:
    """Charge one generation to the event's user, or refuse with the wait time."""
    _refuse_if_waiting(quota, quota.take(event.conversation.platform, event.user.id))


def quota_refusal(quota: Quota, wait: float) -> str:
    """What a user at the per-minute limit is told, with the wait in whole seconds (at least 1)."""
    return f"You've reached the limit of {quota.per_minute} requests a minute. Try again in {max(1, round(wait))} s."


def _refuse_if_waiting(quota: Quota, wait: float) -> None:
    if wait > 0:
        raise UserError(quota_refusal(quota, wait))


def quota_check(quota: Quota) -> Middleware:
    """Quota is charged when something is generated, not when a command arrives: the studio charges it once the
    command parsed and checked out, so typos and chatter cost nothing. A user already at the limit is refused up
    front for commands and buttons; a plain message (a brainstorm idea, a reply to a drop) is never refused here.
    A generating command that finished without the studio (a brainstorm) is charged after it succeeded."""

    async def middleware(ctx: Context, call_next: Handler) -> None:
        if not event_generates(ctx):
            await call_next(ctx)
            return
        event = ctx.event
        if not isinstance(event, Message):
            _refuse_if_waiting(quota, quota.wait(event.conversation.platform, event.user.id))
        ctx.quota = quota
        await call_next(ctx)
        if not ctx.charged and not isinstance(event, Message):
            quota.take(event.conversation.platform, event.user.id)
            ctx.charged = True

    return middleware


def input_moderation(blocklist: Blocklist) -> Middleware:
    async def middleware(ctx: Context, call_next: Handler) -> None:
        if event_generates(ctx):
            found = blocklist.find(event_text(ctx.event))
            if found:
                raise UserError(f"Your request contains a blocked word ({found!r}). Rephrase it and try again.")
        await call_next(ctx)

    return middleware


class Router:
    def __init__(self, commands: Sequence[CommandSpec], middleware: Sequence[Middleware] = ()) -> None:
        self.commands = {spec.name: spec for spec in commands}
        self.middleware = list(middleware)
        self.message_handler: Handler | None = None
        self.action_handler: Handler | None = None
        self.reaction_handler: Handler | None = None
        self.activity_handler: Handler | None = None
        self.edit_handler: Handler | None = None
        self.delete_handler: Handler | None = None

    async def dispatch(self, event: Event, responder: Responder, app: Any) -> None:
        ctx = Context(event=event, responder=responder, app=app)
        if isinstance(event, Command):
            ctx.spec = self.commands.get(event.name.lower())
        handler: Handler = self._endpoint
        for middleware in reversed(self.middleware):
            handler = _bind(middleware, handler)
        await handler(ctx)

    async def _endpoint(self, ctx: Context) -> None:
        event = ctx.event
        if isinstance(event, Command):
            if ctx.spec is None:
                hint = did_you_mean(event.name, self.commands, prefix="/") or self._prefix_hint(event.name)
                raise UserError(f"Unknown command /{event.name}.{hint} Type /help for the list.")
            if ctx.spec.bare and event.text.strip():
                name, usage, extra = ctx.spec.name, ctx.spec.usage, short(event.text, 40)
                raise UserError(f"/{name} takes nothing after it (got “{extra}”). Type {usage} alone.")
            await ctx.spec.handler(ctx)
            return
        handler = {
            Message: self.message_handler,
            Action: self.action_handler,
            Reaction: self.reaction_handler,
            Activity: self.activity_handler,
            MessageEdited: self.edit_handler,
            MessageDeleted: self.delete_handler,
        }.get(type(event))
        if handler is not None:
            await handler(ctx)

    def _prefix_hint(self, name: str) -> str:
        """' Did you mean /help or /history?' for the start of a command name (`/h`, `/hist`), and /help for a bare
        `/` or `/?`."""
        name = name.lower()
        if name in ("", "?") and "help" in self.commands:
            return " Did you mean /help?"
        starting = sorted(f"/{command}" for command in self.commands if command.startswith(name))
        if not starting or len(starting) > 3:
            return ""
        return f" Did you mean {' or '.join(starting)}?"


def _bind(middleware: Middleware, call_next: Handler) -> Handler:
    async def handler(ctx: Context) -> None:
        await middleware(ctx, call_next)

    return handler
