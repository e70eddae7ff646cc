"""/help: commands, content kinds, tones and the feedback actions."""

from __future__ import annotations

from bots.reply import Reply
from bots.router import CommandSpec, Context


async def show_help(ctx: Context) -> None:
    settings = ctx.app.settings
    lines = ["Commands:"]
    lines += [f"  {spec.usage}  — {spec.summary}" for spec in ctx.app.router.commands.values()]
    lines.append("")
    lines.append("Content kinds:")
    lines += [f"  {name:<12} {spec.description}" for name, spec in settings.kinds.items()]
    lines.append("")
    lines.append(f"Tones: {', '.join(settings.tones)}")
    lengths = ", ".join(
        f"{name} (default)" if name == settings.lengths.default else name for name in settings.lengths.names
    )
    lines.append(f"Lengths: {lengths} — /create … --length short")
    lines.append(
        "After a result: regenerate, more like this, shorter, longer, change tone, rate it — "
        'or just say what to change ("make it rhyme"). `2 s` or "make the second one rhyme" changes only variant 2.'
    )
    await ctx.responder.send(Reply(parts=("\n".join(lines),), title="Chorus help", ephemeral=True))


HELP = CommandSpec(name="help", summary="this list", usage="/help", handler=show_help)
