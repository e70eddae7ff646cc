"""/history: the versions of the latest result in this conversation."""

from __future__ import annotations

from bots.reply import Reply
from bots.router import CommandSpec, Context
from bots.store import GenerationRecord

PREVIEW_CHARS = 70


def _preview(record: GenerationRecord) -> str:
    text = record.variants[0] if record.variants else ""
    text = " ".join(text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    more = f" (+{len(record.variants) - 1} more)" if len(record.variants) > 1 else ""
    return f"“{text}”{more}"


def _how(record: GenerationRecord) -> str:
    if record.version == 1:
        length = record.params.get("length")
        sized = f" --length {length}" if length in ("short", "long") else ""
        return f"/{'remix' if record.kind == 'remix' else 'create ' + record.kind}{sized}"
    return record.instruction if len(record.instruction) <= 40 else record.instruction[:39] + "…"


async def history(ctx: Context) -> None:
    store = ctx.app.store
    latest = await store.latest_generation(ctx.event.conversation)
    if latest is None:
        await ctx.responder.send(Reply.text("No results here yet. Start with /create (see /help).", ephemeral=True))
        return
    versions = await store.versions(latest.root_id)
    root = versions[0]
    lines = [
        f"v{r.version}  {_how(r)} · {r.user.name}{' · ' + r.status if r.status != 'ok' else ''} · {_preview(r)}"
        for r in versions
    ]
    title = f"History: {root.kind} “{root.prompt[:50]}” — {len(versions)} version{'s' if len(versions) != 1 else ''}"
    await ctx.responder.send(Reply(parts=("\n".join(lines),), title=title))


HISTORY = CommandSpec(
    name="history", summary="list the versions of the latest result", usage="/history", handler=history
)
