"""Writes replies to a text stream. Streaming here is simply printing each delta as it arrives.

Everything goes through one `TerminalOutput`, which prints only safe text and keeps unprompted posts (drops) out of
a line that is still streaming: they wait until the stream ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TextIO

from adapters.terminal.render import render_actions, render_reply, render_title, safe_text
from bots.events import Conversation
from bots.reply import Reply, ReplyAction

ActionsListener = Callable[[Sequence[ReplyAction]], None]
ThreadListener = Callable[[str], None]


class TerminalOutput:
    """The terminal's one output: filters control characters, knows whether the cursor is at the start of a line
    or after the prompt, and holds posts back while a reply streams."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.at_line_start = True
        self.prompt_text = ""  # the prompt on screen while waiting for a line ("" when none)
        self._streams = 0
        self._held: list[tuple[str, Callable[[], None] | None]] = []

    def write(self, text: str) -> None:
        text = safe_text(text)
        if not text:
            return
        self.out.write(text)
        self.out.flush()
        self.at_line_start = text.endswith("\n")

    def prompt(self, text: str) -> None:
        """Show the prompt for the next line."""
        self.write(text)
        self.prompt_text = text

    def line_taken(self) -> None:
        """The user ended the line (the terminal echoed its newline)."""
        self.prompt_text = ""
        self.at_line_start = True

    def post(self, text: str, on_shown: Callable[[], None] | None = None) -> None:
        """Print an unprompted post on lines of its own: after the current stream, and above a fresh prompt.
        `on_shown` runs once it is on screen (its shortcut keys become the current ones then)."""
        if self._streams:
            self._held.append((text, on_shown))
            return
        prompt = self.prompt_text
        if not self.at_line_start:
            self.write("\n")
        self.write(text if text.endswith("\n") else text + "\n")
        if on_shown is not None:
            on_shown()
        if prompt:
            self.prompt(prompt)

    def stream_started(self) -> None:
        self._streams += 1

    def stream_ended(self) -> None:
        self._streams = max(0, self._streams - 1)
        if not self._streams:
            held, self._held = self._held, []
            for text, on_shown in held:
                self.post(text, on_shown)

    def streams_abandoned(self) -> None:
        """A generation was stopped (Ctrl-C): its stream will not finish; end the line and release held posts."""
        if not self.at_line_start:
            self.write("\n")
        self._streams = 1
        self.stream_ended()


def _output(out: TextIO | TerminalOutput) -> TerminalOutput:
    return out if isinstance(out, TerminalOutput) else TerminalOutput(out)


class TerminalResponder:
    def __init__(
        self,
        out: TextIO | TerminalOutput,
        on_actions: ActionsListener | None = None,
        on_thread: ThreadListener | None = None,
    ) -> None:
        self.output = _output(out)
        self._on_actions = on_actions or (lambda actions: None)
        self._on_thread = on_thread or (lambda thread: None)
        self._ids = itertools.count(1)

    def _write(self, text: str) -> None:
        self.output.write(text)

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
        self._open = False

    def _start(self) -> None:
        if not self._open:
            self._open = True
            self._responder.output.stream_started()

    async def begin_part(self, index: int, total: int) -> None:
        self._start()
        if not self._started:
            self._responder._write(render_title(self._title) + "\n")
            self._started = True
        elif index > 1:
            self._responder._write("\n")
        if total > 1:
            self._responder._write(f"{index}. ")
        self._streamed.append("")

    async def write(self, delta: str) -> None:
        self._start()
        if self._streamed:
            self._streamed[-1] += delta
        self._responder._write(delta)

    async def status(self, text: str) -> None:
        self._start()
        self._responder._write(f"({text})\n")

    async def finish(self, reply: Reply) -> str:
        out = self._responder
        try:
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
        finally:
            if self._open:
                self._open = False
                out.output.stream_ended()


class TerminalPublisher:
    """Posts unprompted content (scheduled drops) into the terminal channel. Its actions (rate it) become the
    shortcut keys, so `+`/`-` rate what was shown last."""

    def __init__(self, out: TextIO | TerminalOutput, on_actions: ActionsListener | None = None) -> None:
        self.output = _output(out)
        self._on_actions = on_actions or (lambda actions: None)
        self._ids = itertools.count(1)

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        where = conversation.channel + (f"/{conversation.thread}" if conversation.thread else "")
        actions = reply.actions
        self.output.post(f"[{where}] {render_reply(reply)}\n", (lambda: self._on_actions(actions)) if actions else None)
        return f"terminal-drop-{next(self._ids)}"
