"""Core events: what adapters translate platform payloads into. Frozen, small, platform-neutral.

The raw payload rides along in `extras` for the rare handler that needs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Conversation:
    """Where something happened: a channel (and thread) in a workspace (Discord guild, Slack team)."""

    platform: str
    workspace: str
    channel: str
    thread: str | None = None

    @property
    def key(self) -> str:
        return "/".join(part for part in (self.platform, self.workspace, self.channel, self.thread) if part)


@dataclass(frozen=True)
class User:
    id: str
    name: str
    # Set by the adapter from platform permissions (Manage Channels, a workspace admin list...).
    is_moderator: bool = False


@dataclass(frozen=True)
class Command:
    """A slash command. `text` is everything after the name; `options` holds structured options when the
    platform has them (Discord). Parsing `text` is the command's business, so every platform parses alike."""

    conversation: Conversation
    user: User
    name: str
    text: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """A plain message addressed to Chorus (a reply, a mention, a thread message, a terminal line)."""

    conversation: Conversation
    user: User
    text: str
    reply_to: str | None = None
    # The platform id of this message itself, so reactions on it can be traced back (brainstorm ideas).
    message_ref: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


# Skin-tone modifiers and the emoji variation selector: 👍🏽 and ❤️ are 👍 and ❤ to Chorus.
_EMOJI_DECORATION = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")


def plain_emoji(emoji: str) -> str:
    """The one spelling of an emoji inside Chorus: Unicode without skin tones or variation selectors."""
    return _EMOJI_DECORATION.sub("", emoji.strip())


@dataclass(frozen=True)
class Reaction:
    """A reaction added to or removed from a message. `emoji` is the Unicode emoji (the adapter turns its platform's
    names, such as Slack's `+1::skin-tone-3`, into Unicode) or a custom emoji's own name; the core compares emoji
    in `plain_emoji` form, so skin tones and variation selectors never matter."""

    conversation: Conversation
    user: User
    message_ref: str
    emoji: str
    added: bool = True
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """A button, select or shortcut key.

    `target_id` is what the action is about, as the feature that owns `action_id` defines it: a result's generation
    id for create/refine actions, a session id for brainstorm actions. None means "the latest one here".
    """

    conversation: Conversation
    user: User
    action_id: str
    value: str = ""
    target_id: int | None = None
    message_ref: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageEdited:
    """A person changed the text of a message they had posted. `text` is the new text, read as the adapter reads a
    new Message (Chorus' mention removed, platform markup as shown). Edits of Chorus' own messages never arrive."""

    conversation: Conversation
    user: User
    message_ref: str
    text: str
    extras: Mapping[str, Any] = field(default_factory=dict)


# Who deleted a message, or whose it was, when the platform does not say (Discord never does).
UNKNOWN_USER = User(id="", name="someone")


@dataclass(frozen=True)
class MessageDeleted:
    """A message was deleted, by its author or a moderator. `user` is its author where the platform says so (Slack),
    else UNKNOWN_USER."""

    conversation: Conversation
    message_ref: str
    user: User = UNKNOWN_USER
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Activity:
    """A channel message that was not addressed to Chorus. Only counted (hour × weekday), never stored as text.

    `text` is the message's text where the platform delivers it (Slack; Discord with the Message Content intent).
    Only a channel that opted in (/drops topics learn on) keeps anything of it: word counts, never the text.
    """

    conversation: Conversation
    user: User
    at: datetime
    text: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)


Event = Command | Message | Reaction | Action | Activity | MessageEdited | MessageDeleted
