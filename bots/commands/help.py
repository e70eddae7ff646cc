"""/help: commands, content kinds, tones and the feedback actions; `/help create` for one command."""

from __future__ import annotations

from bots.errors import UserError
from bots.events import Command
from bots.parsing import did_you_mean
from bots.reply import Reply
from bots.router import CommandSpec, Context
from config import Settings

# A worked example per command, shown by `/help <command>`: the usage alone does not show how the parts fit.
EXAMPLES = {
    "create": "/create slogan my bakery --tone playful --n 3",
    "remix": "/remix we are open late on Fridays --tone formal",
    "brainstorm": "/brainstorm names for our tea shop --minutes 5",
}


def _lengths(settings: Settings) -> str:
    return ", ".join(
        f"{name} (default)" if name == settings.lengths.default else name for name in settings.lengths.names
    )


async def show_help(ctx: Context) -> None:
    event = ctx.event
    topic = event.text.strip().lstrip("/").lower() if isinstance(event, Command) else ""
    if topic:
        await _show_command_help(ctx, topic)
        return
    settings = ctx.app.settings
    lines = ["Commands:"]
    lines += [f"  {spec.usage}  — {spec.summary}" for spec in ctx.app.router.commands.values()]
    lines.append("")
    lines.append("Content kinds:")
    lines += [f"  {name:<12} {spec.description}" for name, spec in settings.kinds.items()]
    lines.append("")
    lines.append(f"Tones: {', '.join(settings.tones)}")
    lines.append(f"Lengths: {_lengths(settings)} — /create … --length short")
    lines.append(
        "After a result: regenerate, more like this, shorter, longer, change tone, rate it — "
        'or just say what to change ("make it rhyme"). `2 s` or "make the second one rhyme" changes only variant 2.'
    )
    lines.append("/help <command> shows one command with an example, e.g. /help create.")
    await ctx.responder.send(Reply(parts=("\n".join(lines),), title="Chorus help", ephemeral=True))


async def _show_command_help(ctx: Context, topic: str) -> None:
    """`/help create`: the command's usage, what it does, an example and the values its options take."""
    commands = ctx.app.router.commands
    name = topic.split()[0]
    spec = commands.get(name)
    if spec is None:
        hint = did_you_mean(name, commands, prefix="/")
        listed = ", ".join(f"/{command}" for command in commands)
        raise UserError(f"No command /{name}.{hint} Commands: {listed}. /help lists them all.")
    settings = ctx.app.settings
    lines = [spec.usage, spec.summary]
    if spec.name in EXAMPLES:
        lines.append(f"Example: {EXAMPLES[spec.name]}")
    if spec.name == "create":
        lines.append(f"Kinds: {', '.join(settings.kinds)}")
        lines.append(f"Lengths: {_lengths(settings)}")
    if spec.name in ("create", "remix"):
        lines.append(f"Tones: {', '.join(settings.tones)}")
    await ctx.responder.send(Reply(parts=("\n".join(lines),), title=f"Help: /{spec.name}", ephemeral=True))


HELP = CommandSpec(
    name="help",
    summary="this list, or one command with an example",
    usage="/help [command]",
    handler=show_help,
)
