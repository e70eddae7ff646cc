"""What the core answers with, and the protocols adapters implement to deliver it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from bots.events import Conversation


@dataclass(frozen=True)
class ReplyAction:
    """A button. `key` is the terminal shortcut; `value` and `target_id` are passed back in the Action (a tone, say,
    and the result or session the button belongs to)."""

    action_id: str
    label: str
    key: str = ""
    value: str = ""
    target_id: int | None = None
    # When set, the platform first asks for a line of text with this label (a Discord or Slack modal, the rest of
    # the line in the terminal: `idea <text>`); the text arrives as the Action's value.
    ask: str = ""
    # (label, value) pairs: the platform shows a select (placeholder `label`) and the picked value arrives as the
    # Action's value. The terminal has no selects; it shows `key` as a hint of what to type instead.
    choices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Attachment:
    filename: str
    path: Path
    description: str = ""


@dataclass(frozen=True)
class Reply:
    """A message from Chorus. `parts` are shown numbered when there are several (variants)."""

    parts: tuple[str, ...] = ()
    title: str = ""
    footer: str = ""
    actions: tuple[ReplyAction, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    # Shown only to the user who asked (Discord ephemeral, Slack postEphemeral); errors are ephemeral.
    ephemeral: bool = False
    generation_id: int | None = None

    @classmethod
    def text(cls, text: str, *, ephemeral: bool = False) -> Reply:
        return cls(parts=(text,), ephemeral=ephemeral)

    @classmethod
    def error(cls, text: str) -> Reply:
        return cls(parts=(text,), ephemeral=True)


class ReplyStream(Protocol):
    """A message being written as text arrives. Adapters decide how often to show progress."""

    async def begin_part(self, index: int, total: int) -> None:
        """Start variant `index` (1-based) of `total`."""
        ...

    async def write(self, delta: str) -> None: ...

    async def status(self, text: str) -> None:
        """A transient note such as a queue position; not part of the final text."""
        ...

    async def finish(self, reply: Reply) -> str:
        """Replace the stream with the final reply (text and actions); returns the platform message id."""
        ...


# Told the platform id of the message a stream is writing, once it exists (and again if it is replaced).
PostedHook = Callable[[str], None]


@runtime_checkable
class Traceable(Protocol):
    """A ReplyStream whose message outlives the process: a platform message a restarted Chorus can still edit.
    The studio records it while the generation runs (bots/inflight.py), so a kill never leaves it half-written."""

    def on_posted(self, hook: PostedHook) -> None:
        """Call `hook(message_ref)` once the message is on the platform, and again if another one replaces it."""
        ...


class Responder(Protocol):
    """Delivers replies to one event's conversation."""

    async def defer(self) -> None:
        """Acknowledge the event at once (platform deadlines are 3 s); later output follows."""
        ...

    async def send(self, reply: Reply) -> str:
        """Post a reply; returns the platform message id."""
        ...

    async def edit(self, message_ref: str, reply: Reply) -> None: ...

    def stream(self, title: str) -> ReplyStream: ...

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, Responder]:
        """Start a thread on a message this responder posted (brainstorm sessions, long refinements).

        Returns the thread id (what later events carry as `Conversation.thread`) and a responder that posts into
        the thread. Platforms without threads return a pseudo-thread id and a responder for the same channel.
        """
        ...


class PublishForbidden(Exception):
    """Raised by `Publisher.publish` when the platform refuses Chorus this conversation for good (no access, not a
    member, archived or deleted), so callers stop posting there instead of retrying."""


class Publisher(Protocol):
    """Posts unprompted content (scheduled drops) to a conversation: a channel, or a thread when one is set."""

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        """Post and return the platform message id (what Reaction.message_ref will carry).

        Raises PublishForbidden when Chorus may no longer post there; other errors are passing faults."""
        ...

    async def edit(self, conversation: Conversation, message_ref: str, reply: Reply) -> bool:
        """Replace a message Chorus posted earlier (possibly before a restart, without its interaction).

        Returns False when the message is gone (deleted) or cannot be edited any more; raises PublishForbidden when
        Chorus may no longer see the conversation; other errors are passing faults."""
        ...
