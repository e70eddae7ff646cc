"""/create and /remix: the two commands that start a new result."""

from __future__ import annotations

from bots.events import Command, Message
from bots.options import Option
from bots.parsing import CREATE_USAGE, REMIX_USAGE, create_request, parse_create, parse_remix
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


async def create_from_message(ctx: Context) -> bool:
    """A mention, DM or thread message that asks in words for something new ("@Chorus write a slogan for our bake
    sale") runs as /create. A reply to a result is a change to it, never a new request; without a verb ("a poem
    about the sea") the message counts only where there is no result yet to change. False: not a request."""
    message = ctx.event
    if not isinstance(message, Message):
        return False
    store = ctx.app.store
    if message.reply_to is not None and await store.find_by_message_ref(
        message.conversation.platform, message.reply_to
    ):
        return False
    settings = ctx.app.settings
    bare = await store.latest_generation(message.conversation) is None
    asked = create_request(message.text, settings, bare=bare)
    if asked is None:
        return False
    args = parse_create(asked.text, {"n": asked.n} if asked.n else {}, settings)
    await _start(ctx, args.kind, settings.kinds[args.kind], args.prompt, args.tone, args.n, args.length)
    return True


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
