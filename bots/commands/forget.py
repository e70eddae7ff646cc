"""/forget: delete everything Chorus stored about the user, after they confirm.

Each /forget gets its own confirmation: only its "yes" deletes, once, within CONFIRM_TTL. A "yes" from an older
/forget, one already answered, or one that has expired asks again instead of deleting.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

from bots.actions import FORGET_CANCEL, FORGET_CONFIRM
from bots.brainstorm import render
from bots.brainstorm.prompts import keyword_label
from bots.commands.mydata import describe_counts, export_path
from bots.errors import UserError
from bots.events import Action
from bots.reply import Reply, ReplyAction
from bots.router import CommandSpec, Context
from bots.store import Store

_log = logging.getLogger(__name__)

CONFIRM, CANCEL = FORGET_CONFIRM, FORGET_CANCEL
FORGET_ACTIONS = frozenset({CONFIRM, CANCEL})
CONFIRM_TTL = timedelta(minutes=10)
EXPORT = "export file"
STALE = "That confirmation belongs to an earlier /forget that was answered or has expired, so nothing was deleted."


async def forget(ctx: Context) -> None:
    await _ask(ctx)


async def _ask(ctx: Context, preface: str = "") -> None:
    user = ctx.event.user
    platform = ctx.event.conversation.platform
    counts = await ctx.app.store.user_data_counts(platform, user.id, names=(user.name,))
    if export_path(ctx.app.settings.home_dir, platform, user.id).exists():
        counts[EXPORT] = 1  # a /mydata copy: it names the person even when nothing else is stored
    if sum(counts.values()) == 0:
        await ctx.responder.send(Reply.text(f"{preface} Chorus has nothing stored about you.".strip(), ephemeral=True))
        return
    token = secrets.token_urlsafe(24)
    await ctx.app.store.ask_to_forget(platform, user.id, token, datetime.now(UTC) + CONFIRM_TTL)
    summary = describe_counts(counts)
    minutes = int(CONFIRM_TTL.total_seconds() // 60)
    question = (
        f"This deletes everything Chorus stored about you ({summary}). It cannot be undone. Delete it? "
        f"(This question expires in {minutes} minutes.)"
    )
    await ctx.responder.send(
        Reply(
            parts=(f"{preface} {question}".strip(),),
            actions=(
                ReplyAction(CONFIRM, "Yes, delete", "y", value=f"{token}:{user.id}"),
                ReplyAction(CANCEL, "Cancel", "n", value=f"{token}:{user.id}"),
            ),
            ephemeral=True,
        )
    )


async def handle_confirm(ctx: Context) -> None:
    action = ctx.event
    assert isinstance(action, Action)
    store = ctx.app.store
    platform = action.conversation.platform
    # The value is "<token>:<user id>"; the token alone decides, the id only says whose question it was.
    token, _, asker = action.value.partition(":")
    if asker and asker != action.user.id:
        raise UserError("Only the person who asked to /forget can answer it.")
    owner = await store.forget_request_owner(platform, token) if token else None
    if owner is not None and owner != action.user.id:
        raise UserError("Only the person who asked to /forget can answer it.")
    if action.action_id == CANCEL:
        if owner is not None:
            await store.answer_forget(platform, token)
        await ctx.responder.send(Reply.text("Cancelled. Nothing was deleted.", ephemeral=True))
        return
    if owner is None or await store.answer_forget(platform, token) != action.user.id:
        await _ask(ctx, STALE)
        return
    brainstorms = await forget_brainstorm_derivatives(store, platform, action.user.id)
    deleted = await store.forget_user(platform, action.user.id, names=(action.user.name,))
    ctx.app.quota.forget(platform, action.user.id)
    export = export_path(ctx.app.settings.home_dir, platform, action.user.id)
    if export.exists():
        export.unlink(missing_ok=True)
        deleted[EXPORT] = 1
    refresh = brainstorms or any(deleted.get(what) for what in ("brainstorm ideas", "brainstorm votes"))
    if refresh and ctx.app.brainstorms is not None:
        await ctx.app.brainstorms.refresh_summaries()
    summary = describe_counts(deleted) or "nothing"
    await ctx.responder.send(Reply.text(f"Done. Deleted {summary}.", ephemeral=True))


async def forget_brainstorm_derivatives(store: Store, platform: str, user_id: str) -> int:
    """Before a person's ideas are deleted, drop what Chorus derived from them in each session: the next step
    written for each of their top ideas, and theme names built from their words. Returns the sessions changed."""
    changed = 0
    for session_id in await store.brainstorms_with_ideas_by(platform, user_id):
        session = await store.get_brainstorm(session_id)
        if session is None:
            continue
        ideas = await store.ideas(session_id)
        theirs = {idea.id for idea in ideas if idea.user.id == user_id and idea.source == "person"}
        views = render.idea_views(ideas, await store.voters(session_id))
        # Each next step was written for one top idea; sessions from before that was recorded fall back to today's
        # ranking, which is the one the steps were written from unless votes were forgotten since.
        sources = session.next_step_idea_ids or [
            view.idea.id for view in render.ranked(views)[: len(session.next_steps)]
        ]
        steps = [
            step
            for index, step in enumerate(session.next_steps)
            if index >= len(sources) or sources[index] not in theirs
        ]
        kept_sources = [idea_id for idea_id in sources[: len(session.next_steps)] if idea_id not in theirs]
        text_of = {idea.id: idea.text for idea in ideas}
        themes = []
        for theme in session.themes:
            ids = [idea_id for idea_id in theme["idea_ids"] if idea_id not in theirs]
            if not ids:
                continue
            label = theme["label"]
            if len(ids) < len(theme["idea_ids"]):
                label = keyword_label([text_of[i] for i in ids if i in text_of])
            themes.append({"label": label, "idea_ids": ids})
        if steps != list(session.next_steps) or themes != [dict(theme) for theme in session.themes]:
            await store.update_brainstorm(session_id, next_steps=steps, next_step_idea_ids=kept_sources, themes=themes)
            changed += 1
    return changed


FORGET = CommandSpec(name="forget", summary="delete what Chorus stored about you", usage="/forget", handler=forget)
