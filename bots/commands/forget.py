"""/forget: delete everything Chorus stored about the user, after they confirm."""

from __future__ import annotations

from bots.errors import UserError
from bots.events import Action
from bots.reply import Reply, ReplyAction
from bots.router import CommandSpec, Context

CONFIRM, CANCEL = "forget_confirm", "forget_cancel"
FORGET_ACTIONS = frozenset({CONFIRM, CANCEL})


async def forget(ctx: Context) -> None:
    user = ctx.event.user
    counts = await ctx.app.store.user_data_counts(ctx.event.conversation.platform, user.id)
    total = sum(counts.values())
    if total == 0:
        await ctx.responder.send(Reply.text("Chorus has nothing stored about you.", ephemeral=True))
        return
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    await ctx.responder.send(
        Reply(
            parts=(f"This deletes everything Chorus stored about you ({summary}). It cannot be undone. Delete it?",),
            actions=(
                ReplyAction(CONFIRM, "Yes, delete", "y", value=user.id),
                ReplyAction(CANCEL, "Cancel", "n", value=user.id),
            ),
            ephemeral=True,
        )
    )


async def handle_confirm(ctx: Context) -> None:
    action = ctx.event
    assert isinstance(action, Action)
    if action.value and action.value != action.user.id:
        raise UserError("Only the person who asked to /forget can confirm it.")
    if action.action_id == CANCEL:
        await ctx.responder.send(Reply.text("Cancelled. Nothing was deleted.", ephemeral=True))
        return
    deleted = await ctx.app.store.forget_user(action.conversation.platform, action.user.id)
    brainstorms = ctx.app.brainstorms
    if brainstorms is not None and any(deleted.get(what) for what in ("brainstorm ideas", "brainstorm votes")):
        await brainstorms.refresh_summaries()
    summary = ", ".join(f"{n} {what}" for what, n in deleted.items() if n) or "nothing"
    await ctx.responder.send(Reply.text(f"Done. Deleted {summary}.", ephemeral=True))


FORGET = CommandSpec(name="forget", summary="delete what Chorus stored about you", usage="/forget", handler=forget)
