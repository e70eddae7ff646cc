"""/drops (scheduled content drops per channel) and /stats (the channel's activity and engagement as a chart)."""

from __future__ import annotations

from bots.drops import DROPS_USAGE, OPEN_SUBCOMMANDS, DropsControl, parse_drops
from bots.errors import UserError
from bots.events import Command
from bots.reply import Attachment, Reply
from bots.router import CommandSpec, Context

MODERATORS = {"discord": "Manage Channels", "slack": "the workspace's slack.admins list"}
NOT_RUNNING = "Scheduled drops are not running in this Chorus (no scheduler is attached)."


def _control(ctx: Context) -> DropsControl:
    control = getattr(ctx.app, "drops", None)
    if control is None:
        raise UserError(NOT_RUNNING)
    return control


async def drops(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    request = parse_drops(command.text)
    configures = request.subcommand not in OPEN_SUBCOMMANDS and not (
        request.subcommand == "topics" and request.topic_action == "list"
    )
    if configures and not command.user.is_moderator:
        who = MODERATORS.get(command.conversation.platform, "")
        raise UserError(f"Only moderators can use /drops {request.subcommand}{f' ({who})' if who else ''}.")
    control = _control(ctx)
    where = command.conversation
    if request.subcommand == "enable":
        text = await control.enable(where, command.user, request.options)
    elif request.subcommand == "status":
        text = await control.status(where)
    elif request.subcommand in ("pause", "resume", "disable"):
        text = await control.change_state(where, request.subcommand)  # type: ignore[arg-type]
    elif request.subcommand == "now":
        await ctx.responder.defer()
        text = await control.post_now(where, command.user)
    else:
        text = await control.topics(where, request.topic_action, request.topics)
    await ctx.responder.send(Reply(parts=(text,), title="Drops", ephemeral=request.subcommand != "status"))


async def stats(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    await ctx.responder.defer()
    image = await _control(ctx).stats(command.conversation)
    attachment = Attachment(image.path.name, image.path, "activity and engagement")
    await ctx.responder.send(Reply(parts=(image.summary,), title="Channel stats", attachments=(attachment,)))


DROPS = CommandSpec(
    name="drops",
    summary="scheduled drops (prompts, ideas, stories, questions) that learn what this channel likes",
    usage=DROPS_USAGE,
    handler=drops,
)

STATS = CommandSpec(
    name="stats",
    summary="this channel's activity and drop engagement, as a chart",
    usage="/stats",
    handler=stats,
    bare=True,
)
