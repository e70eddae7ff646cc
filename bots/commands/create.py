"""/create and /remix: the two commands that start a new result."""

from __future__ import annotations

from bots.events import Command
from bots.parsing import CREATE_USAGE, REMIX_USAGE, parse_create, parse_remix
from bots.router import CommandSpec, Context
from bots.studio import Draft
from generation.prompts import render_template


async def create(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    settings = ctx.app.settings
    args = parse_create(command.text, command.options, settings)
    await ctx.responder.defer()
    spec = settings.kinds[args.kind]
    draft = Draft(
        kind=args.kind,
        tone=args.tone,
        prompt=args.prompt,
        spec=spec,
        first_ask=render_template(spec, args.prompt, args.tone),
        n=args.n,
    )
    await ctx.app.studio.run(ctx, draft)


async def remix(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    settings = ctx.app.settings
    args = parse_remix(command.text, command.options, settings)
    await ctx.responder.defer()
    spec = settings.remix
    draft = Draft(
        kind="remix",
        tone=args.tone,
        prompt=args.text,
        spec=spec,
        first_ask=render_template(spec, args.text, args.tone),
        n=args.n,
    )
    await ctx.app.studio.run(ctx, draft)


CREATE = CommandSpec(
    name="create",
    summary="write something new: a slogan, tweet, story, poem, names…",
    usage=CREATE_USAGE,
    handler=create,
    generates=True,
    options=(
        ("kind", "what to write"),
        ("prompt", "what it is about"),
        ("tone", "the tone"),
        ("n", "how many variants"),
    ),
)

REMIX = CommandSpec(
    name="remix",
    summary="rewrite text in another tone or style",
    usage=REMIX_USAGE,
    handler=remix,
    generates=True,
    options=(("text", "the text to rewrite"), ("tone", "the new tone"), ("n", "how many variants")),
)
