"""The checks that cost nothing, run before an adapter shows any public acknowledgement.

An adapter that would otherwise answer a generating command with a public "thinking…" asks `refusal()` first: if
the router would refuse the event anyway (permissions, input moderation, the per-user quota, the command's own
arguments), the adapter answers privately at once instead. Nothing is charged here; the router still runs the same
checks, and charges, when the event is handled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bots.clicks import ALREADY_ON_IT
from bots.errors import UserError
from bots.events import Action, Command, Event, Message
from bots.parsing import parse_create, parse_remix
from bots.reply import Responder
from bots.router import CommandSpec, Context, event_generates, input_moderation, permission_check, quota_refusal

if TYPE_CHECKING:
    from bots.app import Chorus

# Commands whose arguments can be checked up front: name -> parser (raises UserError on bad arguments).
ARGUMENT_PARSERS: Mapping[str, Callable[[str, Mapping[str, str], Any], object]] = {
    "create": parse_create,
    "remix": parse_remix,
}
_NO_RESPONDER: Responder = None  # type: ignore[assignment]  # a dry run never answers


async def _go_ahead(ctx: Context) -> None:
    """The end of a dry run through the router's checks: nothing is handled."""


async def refusal(app: Chorus, event: Event, spec: CommandSpec | None = None) -> str | None:
    """The private error the router would answer `event` with, as far as cheap checks can tell; None if it may go
    ahead. Runs the router's own permission and moderation checks (no I/O), the command's argument parser, a look
    at the quota that charges nothing, and whether the same click is still being worked on."""
    ctx = Context(event=event, responder=_NO_RESPONDER, app=app, spec=spec)
    if not event_generates(ctx):
        return None
    if isinstance(event, Action) and app.clicks.busy(event):
        return ALREADY_ON_IT
    try:
        await permission_check(ctx, _go_ahead)
        if isinstance(event, Command) and spec is not None and spec.name in ARGUMENT_PARSERS:
            ARGUMENT_PARSERS[spec.name](event.text, event.options, app.settings)
        await input_moderation(app.blocklist)(ctx, _go_ahead)
    except UserError as exc:
        return str(exc)
    if not isinstance(event, Message):  # a message is charged only once it turns out to be a refinement
        wait = app.quota.wait(event.conversation.platform, event.user.id)
        if wait > 0:
            return quota_refusal(app.quota, wait)
    return None
