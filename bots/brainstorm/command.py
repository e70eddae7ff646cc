"""/brainstorm <topic> [--minutes N] [--rounds R], /brainstorm summary and /brainstorm end, parsed alike on every
platform."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bots.errors import UserError
from bots.events import Command
from bots.parsing import parse_bounded, split_options
from bots.router import CommandSpec, Context

if TYPE_CHECKING:
    from bots.brainstorm.feature import Brainstorms

USAGE = "/brainstorm <topic> [--minutes N] [--rounds R] · /brainstorm summary · /brainstorm end"
MAX_MINUTES = 1440.0
MAX_ROUNDS = 10
SUMMARY, END = "summary", "end"
# A first word that names a subcommand, and the words people add to one without meaning a topic: "summary please",
# "end it now", "stop the brainstorm". Anything else after it ("summary writing workshops") makes it a topic.
_SUBCOMMANDS = {"summary": SUMMARY, "end": END, "stop": END, "finish": END, "wrap": END}
_FILLER = frozenset({
    "please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ty", "it", "this", "that", "the", "a", "our",
    "of", "last", "latest", "brainstorm", "brainstorming", "session", "one", "up", "again", "here", "already",
})  # fmt: skip
_WORD = re.compile(r"[\w']+")


def subcommand(topic: str) -> str | None:
    """SUMMARY or END when the text is a subcommand word with at most filler and punctuation around it; else None
    (a topic)."""
    words = _WORD.findall(topic.lower())
    if not words or words[0] not in _SUBCOMMANDS or _WORD.sub("", topic).strip(" .,!?;:-–—…"):
        return None
    return _SUBCOMMANDS[words[0]] if all(word in _FILLER for word in words[1:]) else None


def parse_minutes(value: str | None, default: float) -> float:
    return parse_bounded(value, "minutes", low=0, high=MAX_MINUTES, default=default, whole=False, unit="minutes")


def parse_rounds(value: str | None, default: int) -> int:
    return int(parse_bounded(value, "rounds", low=1, high=MAX_ROUNDS, default=default))


async def brainstorm(ctx: Context) -> None:
    command = ctx.event
    assert isinstance(command, Command)
    settings = ctx.app.settings
    text = command.options.get("text", command.text) if command.options else command.text
    free, found = split_options(text, ("minutes", "rounds"))
    topic = free.strip()
    action = subcommand(topic)
    if action == SUMMARY:
        await summary(ctx)
        return
    if action == END:
        await _sessions(ctx).end_requested(ctx)
        return
    if not topic:
        raise UserError(f"Say what to brainstorm about: {USAGE}")
    limit = settings.limits.max_prompt_chars
    if len(topic) > limit:
        raise UserError(f"That topic is {len(topic)} characters; the limit is {limit}. Shorten it and try again.")
    minutes = parse_minutes(found.get("minutes"), settings.brainstorm.minutes)
    rounds = parse_rounds(found.get("rounds"), settings.brainstorm.rounds)
    await _sessions(ctx).start(ctx, topic, minutes, rounds)


async def summary(ctx: Context) -> None:
    """The summary of this thread's brainstorm, or of the latest one that wrapped up in this channel."""
    store = ctx.app.store
    conversation = ctx.event.conversation
    session = await store.brainstorm_for_thread(conversation)
    if session is None or session.is_open:
        closed = await store.latest_closed_brainstorm(conversation)
        if closed is not None and (session is None or closed.id > session.id):
            session = closed
    if session is None:
        raise UserError("No brainstorm has wrapped up in this channel yet. Start one with /brainstorm <topic>.")
    if session.is_open:
        raise UserError(
            f"The brainstorm on “{session.topic}” is still running (round {session.round} of {session.rounds}). "
            "✅ Wrap up ends it and writes the summary."
        )
    await ctx.responder.send(await _sessions(ctx).summary_reply(session))


def _sessions(ctx: Context) -> Brainstorms:
    sessions = ctx.app.brainstorms
    if sessions is None:  # the command is routed only where the brainstorm plug-in is installed
        raise RuntimeError("brainstorm plug-in not installed")
    return sessions


BRAINSTORM = CommandSpec(
    name="brainstorm",
    summary="think together in a thread; Chorus sorts the ideas into themes and sums up",
    usage=USAGE,
    handler=brainstorm,
    generates=True,
    opens_thread=True,
)
