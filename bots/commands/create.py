"""/create and /remix: the two commands that start a new result."""

from __future__ import annotations

from bots.events import Command
from bots.options import Option
from bots.parsing import CREATE_USAGE, REMIX_USAGE, parse_create, parse_remix
from bots.router import CommandSpec, Context
from bots.studio import Draft, at_length
from config import KindSpec
from generation.prompts import render_template


async def _start(ctx: Context, kind: str, spec: KindSpec, prompt: str, tone: str, n: int, length: str = "") -> None:
    """Stream version 1 of a new result (at a --length, when one was given)."""
    spec, first_ask = at_length(spec, render_template(spec, prompt, tone), length, ctx.app.settings)
    draft = Draft(kind=kind, tone=tone, prompt=prompt, spec=spec, first_ask=first_ask, n=n, length=length)
    await ctx.app.studio.run(ctx, draft)


async def create(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    args = parse_create(command.text, command.options, ctx.app.settings)
    await _start(ctx, args.kind, ctx.app.settings.kinds[args.kind], args.prompt, args.tone, args.n, args.length)


async def remix(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    args = parse_remix(command.text, command.options, ctx.app.settings)
    await _start(ctx, "remix", ctx.app.settings.remix, args.text, args.tone, args.n)


CREATE = CommandSpec(
    name="create",
    summary="write something new: a slogan, tweet, story, poem, names…",
    usage=CREATE_USAGE,
    handler=create,
    generates=True,
    options=(
        Option("kind", "what to write", required=True, choices="kinds"),
        Option("prompt", "what it is about", required=True, bound="prompt_chars"),
        Option("tone", "the tone", choices="tones"),
        Option("length", "how long: short, medium (default) or long", choices="lengths"),
        Option("n", "how many variants", type="integer", bound="variants"),
    ),
)

REMIX = CommandSpec(
    name="remix",
    summary="rewrite text in another tone or style",
    usage=REMIX_USAGE,
    handler=remix,
    generates=True,
    options=(
        Option("text", "the text to rewrite", required=True, bound="prompt_chars"),
        Option("tone", "the new tone", required=True, choices="tones"),
        Option("n", "how many variants", type="integer", bound="variants"),
    ),
)
