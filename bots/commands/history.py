"""/history: the versions of the latest result in this conversation; /history N shows version N in full."""

from __future__ import annotations

from bots.errors import UserError
from bots.events import Command
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
    wanted = ctx.event.text.strip().lstrip("v#") if isinstance(ctx.event, Command) else ""
    if wanted:
        await _show_version(ctx, versions, wanted)
        return
    lines = [
        f"v{r.version}  {_how(r)} · {r.user.name}{' · ' + r.status if r.status != 'ok' else ''} · {_preview(r)}"
        for r in versions
    ]
    title = f"History: {root.kind} “{root.prompt[:50]}” — {len(versions)} version{'s' if len(versions) != 1 else ''}"
    await ctx.responder.send(Reply(parts=("\n".join(lines),), title=title))


async def _show_version(ctx: Context, versions: list[GenerationRecord], wanted: str) -> None:
    """One earlier version whole, every variant numbered: nothing a refinement replaced is out of reach."""
    span = f"v1–v{len(versions)}" if len(versions) > 1 else "only v1"
    if not wanted.isdigit():
        raise UserError(f"/history lists the versions; /history 2 shows version 2 in full (this result has {span}).")
    number = int(wanted)
    record = next((r for r in versions if r.version == number), None)
    if record is None:
        raise UserError(f"No version {number}: this result has {span}. /history lists them.")
    numbered = len(record.variants) > 1
    parts = tuple(f"{i}. {text}" if numbered else text for i, text in enumerate(record.variants, start=1))
    title = f"{record.kind} · v{record.version} of {len(versions)} · {_how(record)} · {record.user.name}"
    await ctx.responder.send(Reply(parts=parts or ("(no text)",), title=title))


HISTORY = CommandSpec(
    name="history",
    summary="list the versions of the latest result, or show one in full",
    usage="/history [version]",
    handler=history,
)
