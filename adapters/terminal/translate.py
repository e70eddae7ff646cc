"""Terminal line -> core event. Pure: the runner owns the state and passes it in."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bots import actions
from bots.events import Action, Command, Conversation, Event, Message, User
from bots.reply import ReplyAction

CONVERSATION = Conversation(platform="terminal", workspace="local", channel="terminal")

# Commands the terminal handles itself; /help ends with them.
TERMINAL_COMMANDS = ("as", "leave", "quit", "exit")
TERMINAL_HELP = (
    "In this terminal: /as <name> types as someone else · /leave goes back from a thread to the channel · "
    "Ctrl-C stops a generation · /quit or Ctrl-D quits."
)

# Shortcut keys that always mean a refinement of the latest result, even before any result was shown.
STANDARD_KEYS = {
    "r": actions.REGENERATE,
    "m": actions.MORE,
    "s": actions.SHORTER,
    "l": actions.LONGER,
    "t": actions.TONE,
    "+": actions.RATE_UP,
    "-": actions.RATE_DOWN,
}

# An asking shortcut key with its number written on (`v3`), read so only when the latest reply offers that key.
_NUMBERED_KEY = re.compile(r"([a-z])(\d+)")


@dataclass(frozen=True)
class SwitchUser:
    """`/as <name>`: who is typing from now on."""

    name: str


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class LeaveThread:
    """`/leave`: back from a thread to the channel."""


@dataclass(frozen=True)
class Notice:
    """A line the terminal answers itself, without the core: what to type to answer the question on screen."""

    text: str


# Typed to leave, as in a shell or an editor: the terminal says how instead of sending them on as a refinement.
_QUIT_WORDS = frozenset({"exit", "quit", "q", ":q", "exit()", "quit()", "logout"})

# How a yes/no question (the latest reply offers `y` and `n`, as /forget does) may be answered.
_ANSWERS = {"y": "y", "yes": "y", "n": "n", "no": "n"}


def terminal_user(name: str) -> User:
    # Whoever sits at the terminal owns it, so they may also use moderator commands.
    return User(id=name, name=name, is_moderator=True)


def to_event(
    line: str, user: User, keys: Mapping[str, ReplyAction], conversation: Conversation = CONVERSATION
) -> Event | SwitchUser | Quit | LeaveThread | Notice | None:
    """Translate one typed line. `keys` maps shortcut keys to the actions of the most recent reply. While that reply
    asks a yes/no question, a line that is not a command answers it or is told how to."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("/"):
        name, _, rest = text[1:].partition(" ")
        name = name.lower()
        if name == "as":
            return SwitchUser(rest.strip())
        if name in ("quit", "exit"):
            return Quit()
        if name == "leave":
            return LeaveThread()
        close = difflib.get_close_matches(name, TERMINAL_COMMANDS, n=1, cutoff=0.75) if len(name) > 2 else []
        if close:  # the core does not know the terminal's own commands, so it could not suggest them
            return Notice(f"Unknown command /{name}. Did you mean /{close[0]}? Type /help for the list.")
        if name == "help" and rest.strip().lstrip("/").lower() in TERMINAL_COMMANDS:
            return Notice(TERMINAL_HELP)  # `/help as`: the core does not know the terminal's own commands
        return Command(conversation=conversation, user=user, name=name, text=rest.strip())
    if "y" in keys and "n" in keys:
        answer = _ANSWERS.get(text.lower().rstrip(".!"))
        if answer is None:
            yes, no = keys["y"], keys["n"]
            return Notice(f"Answer y ({yes.label.lower()}) or n ({no.label.lower()}) first.")
        answered = keys[answer]
        return Action(conversation, user, answered.action_id, value=answered.value, target_id=answered.target_id)
    if text.lower() in _QUIT_WORDS:  # as in a shell; as an instruction it made a new version "· exit"
        leave = "/leave goes back to the channel; " if conversation.thread else ""
        return Notice(f"{leave}/quit or Ctrl-D quits.")
    head, _, rest = text.partition(" ")
    head = head.lower()
    if head == "t" and rest.strip():
        known = keys.get("t")
        return Action(conversation, user, "tone", value=rest.strip(), target_id=known.target_id if known else None)
    asking = keys.get(head)
    if asking is not None and asking.ask and rest.strip():
        # An action that asks for text (`idea <text>`): the rest of the line is the answer.
        return Action(conversation, user, asking.action_id, value=rest.strip(), target_id=asking.target_id)
    numbered = _NUMBERED_KEY.fullmatch(head)
    if not rest and head not in keys and numbered and (asking := keys.get(numbered[1])) and asking.ask:
        # `v1`: the key an earlier message showed (`[v1] vote #1`) is its asking key with the number written on.
        return Action(conversation, user, asking.action_id, value=numbered[2], target_id=asking.target_id)
    if not rest:
        if head in keys:
            known = keys[head]
            return Action(conversation, user, known.action_id, value=known.value, target_id=known.target_id)
        if head in STANDARD_KEYS:
            return Action(conversation, user, STANDARD_KEYS[head])
    return Message(conversation=conversation, user=user, text=text)


def answers_question(event: object, keys: Mapping[str, ReplyAction]) -> bool:
    """Whether `event` answers the yes/no question that `keys` belong to: after it, `y` and `n` mean nothing."""
    asked = {keys[key].action_id for key in ("y", "n") if key in keys}
    return isinstance(event, Action) and event.action_id in asked
