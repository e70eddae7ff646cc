"""Create and refine, installed as a plug-in: /create and /remix, the buttons on a result, replies that refine it,
and reactions recorded as feedback. The work itself lives in bots/commands/create.py, bots/studio.py and
bots/feedback.py; this is only how the feature joins Chorus."""

from __future__ import annotations

from typing import ClassVar

from bots import feedback
from bots.actions import RATE_DOWN, RATE_UP, REFINEMENTS
from bots.commands.create import CREATE, REMIX, create_from_message
from bots.events import Action
from bots.plugin import Plugin
from bots.router import CommandSpec, Context

# The buttons feedback.handle_action answers: rating and every refinement.
_ACTIONS = frozenset({RATE_UP, RATE_DOWN, *REFINEMENTS})


class CreatePlugin(Plugin):
    """Generate on request, then refine by button, by reply or by reaction."""

    name = "create"
    commands: ClassVar[tuple[CommandSpec, ...]] = (CREATE, REMIX)
    # Any reply nobody else claimed refines the latest result, so brainstorm threads and drop replies go first.
    catch_all = True

    async def on_message(self, ctx: Context) -> bool:
        if not await create_from_message(ctx):
            await feedback.handle_message(ctx)
        return True

    async def on_action(self, ctx: Context) -> bool:
        if not isinstance(ctx.event, Action) or ctx.event.action_id not in _ACTIONS:
            return False
        await feedback.handle_action(ctx)
        return True

    async def on_reaction(self, ctx: Context) -> bool:
        await feedback.handle_reaction(ctx)
        return True
