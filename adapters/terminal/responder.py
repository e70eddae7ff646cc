"""Writes replies to a text stream. Streaming here is simply printing each delta as it arrives."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TextIO

from adapters.terminal.render import render_actions, render_reply, render_title
from bots.events import Conversation
from bots.reply import Reply, ReplyAction

ActionsListener = Callable[[Sequence[ReplyAction]], None]
ThreadListener = Callable[[str], None]


class TerminalResponder:
    def __init__(
        self, out: TextIO, on_actions: ActionsListener | None = None, on_thread: ThreadListener | None = None
    ) -> None:
        self.out = out
        self._on_actions = on_actions or (lambda actions: None)
        self._on_thread = on_thread or (lambda thread: None)
        self._ids = itertools.count(1)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _message_id(self, reply: Reply) -> str:
        if reply.actions:
            self._on_actions(reply.actions)
        return f"terminal-{next(self._ids)}"

    async def defer(self) -> None:
        """Nothing to acknowledge in a terminal."""

    async def send(self, reply: Reply) -> str:
        self._write(render_reply(reply) + "\n")
        return self._message_id(reply)

    async def edit(self, message_ref: str, reply: Reply) -> None:
        # A terminal cannot change what it printed; show the new state below.
        self._write(render_reply(reply) + "\n")

    def stream(self, title: str) -> TerminalStream:
        return TerminalStream(self, title)

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, TerminalResponder]:
        """The terminal has one channel; a thread is a mode of it that the session enters until /leave."""
        thread = f"thread-{message_ref}"
        self._write(f"── thread: {name} · you are in it now; /leave goes back to the channel ──\n")
        self._on_thread(thread)
        return thread, self


class TerminalStream:
    def __init__(self, responder: TerminalResponder, title: str) -> None:
        self._responder = responder
        self._title = title
        self._started = False
        self._streamed: list[str] = []

    async def begin_part(self, index: int, total: int) -> None:
        if not self._started:
            self._responder._write(render_title(self._title) + "\n")
            self._started = True
        elif index > 1:
            self._responder._write("\n")
        if total > 1:
            self._responder._write(f"{index}. ")
        self._streamed.append("")

    async def write(self, delta: str) -> None:
        if self._streamed:
            self._streamed[-1] += delta
        self._responder._write(delta)

    async def status(self, text: str) -> None:
        self._responder._write(f"({text})\n")

    async def finish(self, reply: Reply) -> str:
        out = self._responder
        if not self._started:
            out._write(render_reply(reply) + "\n")
            return out._message_id(reply)
        tail: list[str] = []
        if reply.generation_id is None:
            tail.extend(reply.parts)
        elif [part.strip() for part in self._streamed] != [part.strip() for part in reply.parts]:
            # The final text differs from what streamed (trimmed, tidied, one variant dropped): show what was kept.
            numbered = len(reply.parts) > 1
            tail.append("── final ──")
            tail.extend(f"{i}. {part}" if numbered else part for i, part in enumerate(reply.parts, 1))
        if reply.footer:
            tail.append(reply.footer)
        if reply.actions:
            tail.append(render_actions(reply.actions))
        out._write("\n" + "".join(line + "\n" for line in tail))
        return out._message_id(reply)


class TerminalPublisher:
    """Posts unprompted content (scheduled drops) into the terminal channel."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._ids = itertools.count(1)

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        where = conversation.channel + (f"/{conversation.thread}" if conversation.thread else "")
        self.out.write(f"[{where}] {render_reply(reply)}\n")
        self.out.flush()
        return f"terminal-drop-{next(self._ids)}"
