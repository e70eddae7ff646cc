"""What the /drops and /stats commands need from the scheduler, as a protocol (bots never import scheduler).

The drops plug-in (scheduler/plugin.py) sets its service as `Chorus.drops` when installed. The options are parsed
here, from the command text, so every platform parses them alike, and validated by the implementation (zones, cron,
quiet hours).
"""

from __future__ import annotations

import itertools
import re
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
# Drop topics go into the prompt of every drop: each is a few words, and a channel keeps a short list.
MAX_TOPIC_CHARS = 100
MAX_TOPICS = 25


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


# Phones and word processors type “curly” quotes for straight ones; the options' quoting means the straight ones.
_STRAIGHT_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‟": '"', "‘": "'", "’": "'", "‚": "'", "‛": "'"})
_QUOTES = "\"'“”„‟‘’‚‛"


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text.translate(_STRAIGHT_QUOTES))
    except ValueError as exc:  # an unclosed quote
        raise UserError(f'Could not read that: {exc}. Quote a cron like --cadence "0 9 * * 1-5".') from None


def _first_word(text: str) -> tuple[str, str]:
    """(the first word, the rest) of text, split at any run of spaces."""
    parts = text.strip().split(maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else ((parts[0], "") if parts else ("", ""))


def _comma_lists(words: list[str]) -> list[str]:
    """`prompt, idea` written with spaces after the commas, as one value (`prompt,idea`)."""
    joined: list[str] = []
    for word in words:
        near_option = word.startswith("-") or (joined and joined[-1].startswith("-"))
        if joined and (joined[-1].endswith(",") or word.startswith(",")) and not near_option:
            joined[-1] += word
        else:
            joined.append(word)
    return joined


def _topic(text: str) -> str:
    """One listed topic as meant: without quotes around it ("cities at night", “tea”), apostrophes kept."""
    text = text.strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


_CRON_FIELD = re.compile(r"^[0-9a-z*?,/-]+$", re.IGNORECASE)


def _unquoted_cron(words: list[str]) -> None:
    """`--cadence 0 18 * * 1` (a cron without its quotes) gets the quoted form to type, not "Unexpected '18'"."""
    for i, word in enumerate(words[:-1]):
        if word.lstrip("-—–").lower() != "cadence" or not word.startswith(("-", "—", "–")):
            continue
        fields = list(itertools.takewhile(lambda w: not w.startswith("-") and _CRON_FIELD.match(w), words[i + 1 :]))
        if len(fields) >= 2 and any(c.isdigit() or c == "*" for c in fields[0]):
            cron = " ".join(fields[:5])
            raise UserError(f'Quote a cron cadence: --cadence "{cron}" (minute hour day month weekday).')


def parse_drops(text: str) -> DropsRequest:
    """Parse `/drops <subcommand> ...` text; `--cadence "0 9 * * 1-5"` keeps its quoted spaces. Topics are taken as
    written, so "children's books" keeps its apostrophe."""
    first, tail = _first_word(text)
    if not first:
        return DropsRequest("status")
    sub = first.lower()
    if sub in ("help", "?", "usage") and not tail.strip():
        raise UserError(f"How to use /drops: {DROPS_USAGE}")
    if sub not in SUBCOMMANDS:
        raise UserError(f"Unknown /drops sub-command {first!r}.{did_you_mean(sub, SUBCOMMANDS)} {DROPS_USAGE}")
    if sub == "topics":
        named, listed = _first_word(tail)
        action = named.lower() or "list"
        if action not in TOPIC_ACTIONS:
            hint = did_you_mean(action, TOPIC_ACTIONS)
            raise UserError(f"Unknown topics action {named!r}.{hint} Use /drops topics add|remove|list|learn.")
        # Topics are comma-separated so they can have spaces: /drops topics add cities at night, tea
        topics = tuple(topic for topic in map(_topic, listed.split(",")) if topic)
        if action in ("add", "remove") and not topics:
            raise UserError(f"Say which topics, e.g. /drops topics {action} cities at night, tea")
        long = [topic for topic in topics if len(topic) > MAX_TOPIC_CHARS]
        if action == "add" and long:
            raise UserError(
                f"A topic can be at most {MAX_TOPIC_CHARS} characters; “{long[0][:40]}…” has {len(long[0])}. "
                "Separate topics with commas, e.g. /drops topics add cities at night, tea"
            )
        if action == "learn" and (len(topics) != 1 or topics[0].lower() not in ("on", "off")):
            raise UserError("Use /drops topics learn on (or off) to let drops learn themes from this channel.")
        return DropsRequest("topics", topic_action=action, topics=topics)
    rest = _words(tail)
    if sub != "enable":
        if rest:
            raise UserError(f"/drops {sub} takes no options. {DROPS_USAGE}")
        return DropsRequest(sub)
    _unquoted_cron(rest)
    _, found = split_options(_comma_lists(rest), ENABLE_OPTIONS, strict=True, usage=DROPS_USAGE)
    kinds = None
    if "kinds" in found:
        kinds = tuple(k.strip().lower() for k in found["kinds"].split(",") if k.strip())
        if not kinds:
            raise UserError("--kinds needs at least one kind, e.g. --kinds prompt,question")
    options = DropsOptions(
        kinds=kinds, cadence=found.get("cadence"), time=found.get("time"), tz=found.get("tz"), quiet=found.get("quiet")
    )
    return DropsRequest("enable", options=options)
