"""What the /drops and /stats commands need from the scheduler, as a protocol (bots never import scheduler).

The drops plug-in (scheduler/plugin.py) sets its service as `Chorus.drops` when installed. The options are parsed
here, from the command text, so every platform parses them alike, and validated by the implementation (zones, cron,
quiet hours).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from bots.errors import UserError
from bots.events import Conversation, User
from bots.parsing import did_you_mean, split_options

DROPS_USAGE = (
    '/drops enable [--kinds a,b] [--cadence daily|weekdays|weekly|"<cron>"] [--time auto|HH:MM] [--tz <zone>] '
    "[--quiet 22:00-08:00] · /drops status · /drops pause|resume|disable · /drops now · "
    "/drops topics add|remove|list|learn on|off [topics]"
)
SUBCOMMANDS = ("enable", "status", "pause", "resume", "disable", "now", "topics")
# Sub-commands anyone may use; the others configure the channel and need a moderator.
OPEN_SUBCOMMANDS = frozenset({"status"})
TOPIC_ACTIONS = ("add", "remove", "list", "learn")
ENABLE_OPTIONS = ("kinds", "cadence", "time", "tz", "quiet")
StateChange = Literal["pause", "resume", "disable"]


@dataclass(frozen=True)
class DropsOptions:
    """`/drops enable` options as typed; None means "keep what is set" (or the default on first enable)."""

    kinds: tuple[str, ...] | None = None
    cadence: str | None = None
    time: str | None = None
    tz: str | None = None
    quiet: str | None = None


@dataclass(frozen=True)
class DropsRequest:
    subcommand: str
    options: DropsOptions = field(default_factory=DropsOptions)
    # topics: "add" | "remove" | "list" | "learn", then its arguments.
    topic_action: str = ""
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatsImage:
    """/stats: a short text summary and the rendered PNG."""

    summary: str
    path: Path


class DropsControl(Protocol):
    """The scheduled-drops service as commands see it. Every method returns the text to show the user."""

    async def enable(self, conversation: Conversation, user: User, options: DropsOptions) -> str: ...

    async def status(self, conversation: Conversation) -> str: ...

    async def change_state(self, conversation: Conversation, change: StateChange) -> str: ...

    async def post_now(self, conversation: Conversation, user: User) -> str: ...

    async def topics(self, conversation: Conversation, action: str, topics: tuple[str, ...]) -> str: ...

    async def stats(self, conversation: Conversation) -> StatsImage: ...


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise UserError(f'Could not read that: {exc}. Quote a cron like --cadence "0 9 * * 1-5".') from None


def parse_drops(text: str) -> DropsRequest:
    """Parse `/drops <subcommand> ...` text; `--cadence "0 9 * * 1-5"` keeps its quoted spaces."""
    words = _words(text)
    if not words:
        return DropsRequest("status")
    sub = words[0].lower()
    if sub not in SUBCOMMANDS:
        raise UserError(f"Unknown /drops sub-command {words[0]!r}.{did_you_mean(sub, SUBCOMMANDS)} {DROPS_USAGE}")
    rest = words[1:]
    if sub == "topics":
        action = rest[0].lower() if rest else "list"
        if action not in TOPIC_ACTIONS:
            hint = did_you_mean(action, TOPIC_ACTIONS)
            raise UserError(f"Unknown topics action {rest[0]!r}.{hint} Use /drops topics add|remove|list|learn.")
        # Topics are comma-separated so they can have spaces: /drops topics add cities at night, tea
        topics = tuple(t.strip() for t in " ".join(rest[1:]).split(",") if t.strip())
        if action in ("add", "remove") and not topics:
            raise UserError(f"Say which topics, e.g. /drops topics {action} cities at night, tea")
        if action == "learn" and (len(topics) != 1 or topics[0].lower() not in ("on", "off")):
            raise UserError("Use /drops topics learn on (or off) to let drops learn themes from this channel.")
        return DropsRequest("topics", topic_action=action, topics=topics)
    if sub != "enable":
        if rest:
            raise UserError(f"/drops {sub} takes no options. {DROPS_USAGE}")
        return DropsRequest(sub)
    _, found = split_options(rest, ENABLE_OPTIONS, strict=True, usage=DROPS_USAGE)
    kinds = None
    if "kinds" in found:
        kinds = tuple(k.strip().lower() for k in found["kinds"].split(",") if k.strip())
        if not kinds:
            raise UserError("--kinds needs at least one kind, e.g. --kinds prompt,question")
    options = DropsOptions(
        kinds=kinds, cadence=found.get("cadence"), time=found.get("time"), tz=found.get("tz"), quiet=found.get("quiet")
    )
    return DropsRequest("enable", options=options)
