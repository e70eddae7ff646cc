"""Writes replies to a text stream. Streaming here is simply printing each delta as it arrives.

Everything goes through one `TerminalOutput`, which prints only safe text and keeps unprompted posts (drops) out of
a line that is still streaming: they wait until the stream ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Callable, Sequence
from typing import TextIO

from adapters.terminal.render import render_actions, render_reply, render_title, safe_text
from bots.events import Conversation
from bots.reply import PostedHook, Reply, ReplyAction

ActionsListener = Callable[[Sequence[ReplyAction]], None]
ThreadListener = Callable[[str], None]


class TerminalOutput:
    """The terminal's one output: filters control characters, knows whether the cursor is at the start of a line
    or after the prompt, shows the line being typed there, and holds posts back while a reply streams."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.at_line_start = True
        self.prompt_text = ""  # the prompt on screen while waiting for a line ("" when none)
        self.typed = ""  # the line being typed after the prompt (from the line editor; printable text only)
        self.typed_cursor = 0  # where the cursor is in `typed`
        self._streams = 0
        self._held: list[tuple[str, Callable[[], None] | None]] = []
        # Set when the reader went away (`chorus run < script | head`); later output is dropped.
        self.closed = False
        self.on_closed: Callable[[], None] = lambda: None

    def write(self, text: str) -> None:
        text = safe_text(text)
        if not text or self.closed:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            self._reader_gone()
            return
        self.at_line_start = text.endswith("\n")

    def _reader_gone(self) -> None:
        """Stop writing, and point the descriptor at /dev/null so the interpreter's last flush does not fail too."""
        self.closed = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
        self.on_closed()

    def prompt(self, text: str) -> None:
        """Show the prompt for the next line, and whatever was typed ahead of it."""
        self.write(text)
        self.prompt_text = text
        typed, cursor = self.typed, self.typed_cursor
        self.typed = ""
        self.typed_cursor = 0
        if typed:
            self._draw(typed, 0, cursor)

    def line_taken(self, typed_ahead: str | None = None) -> None:
        """The user ended the line shown after the prompt: the cursor goes below it. `typed_ahead`: a line ended
        before its prompt was shown, printed now after the prompt (what is typed after it stays pending)."""
        if typed_ahead is not None and self.prompt_text:
            rest = self.typed, self.typed_cursor
            self._draw(safe_text(typed_ahead), self.typed_cursor)
            self.write("\n")
            self.prompt_text = ""
            self.typed, self.typed_cursor = rest[0], len(rest[0])
            return
        if self.prompt_text:
            if self.typed:
                self.control(self._move(self.typed_cursor, len(self.typed)))
            self.write("\n")
        self.prompt_text = self.typed = ""
        self.typed_cursor = 0
        self.at_line_start = True

    def edit(self, typed: str, cursor: int) -> None:
        """The line being typed is now `typed`, with the cursor at `cursor`: redraw what changed after the prompt.
        Before a prompt is shown (typing ahead while a reply streams) nothing is drawn; the prompt shows it."""
        typed = safe_text(typed).replace("\n", " ").replace("\t", " ")
        if not self.prompt_text:
            self.typed, self.typed_cursor = typed, min(cursor, len(typed))
            return
        before, shown = self.typed, self.typed_cursor
        if typed.startswith(before) and shown == len(before) and cursor == len(typed):
            self._type(typed[len(before) :])  # typing at the end: just print it
        else:
            self._draw(typed, shown, cursor)

    # -- drawing the typed line (a prompt is on screen; its text may wrap over several rows) ------------------

    def _width(self) -> int:
        """The terminal's columns; 80 when it does not say (0 columns: a serial console, a pty nobody sized)."""
        try:
            columns = os.get_terminal_size(self.out.fileno()).columns
        except (AttributeError, ValueError, OSError):
            return 80
        return max(2, columns) if columns else 80

    def _move(self, src: int, dst: int) -> str:
        """The cursor movement from offset `src` to offset `dst` of the typed line."""
        if src == dst:
            return ""
        width, start = self._width(), len(self.prompt_text)
        src_row, _ = divmod(start + src, width)
        dst_row, dst_col = divmod(start + dst, width)
        vertical = f"\x1b[{src_row - dst_row}A" if src_row > dst_row else "\n" * (dst_row - src_row)
        return vertical + "\r" + (f"\x1b[{dst_col}C" if dst_col else "")

    def _type(self, text: str) -> None:
        self.out.write(text)
        self.typed += text
        self.typed_cursor = len(self.typed)
        if (len(self.prompt_text) + len(self.typed)) % self._width() == 0:
            self.out.write("\r\n")  # leave the last column: the cursor is on the next row, as _move counts
        self.out.flush()

    def _draw(self, typed: str, shown: int, cursor: int | None = None) -> None:
        """Rewrite the prompt and `typed` from the prompt's first row (the cursor is at `shown` now)."""
        cursor = len(typed) if cursor is None else cursor
        self.control(self._move(shown, -len(self.prompt_text)) + "\x1b[J")
        self.out.write(self.prompt_text)
        self.typed, self.typed_cursor = "", 0
        self._type(typed)
        self.control(self._move(len(typed), cursor))
        self.typed_cursor = cursor

    def control(self, sequence: str) -> None:
        """Cursor movement, erasing and terminal modes, made by Chorus and never taken from text: the one way escape
        sequences reach the terminal."""
        if self.closed:
            return
        try:
            self.out.write(sequence)
            self.out.flush()
        except BrokenPipeError:
            self._reader_gone()

    def post(self, text: str, on_shown: Callable[[], None] | None = None) -> None:
        """Print an unprompted post on lines of its own: after the current stream, and above a fresh prompt.
        `on_shown` runs once it is on screen (its shortcut keys become the current ones then)."""
        if self._streams:
            self._held.append((text, on_shown))
            return
        prompt = self.prompt_text
        if prompt and self.typed:
            self.control(self._move(self.typed_cursor, len(self.typed)))  # below the line being typed
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
        self._on_posted: PostedHook | None = None
        # What a restarted Chorus calls this reply when it finishes it (the terminal has no message ids of its own).
        self.ref = ""

    def on_posted(self, hook: PostedHook) -> None:
        self._on_posted = hook
        if self.ref:
            hook(self.ref)

    def _start(self) -> None:
        if not self._open:
            self._open = True
            self._responder.output.stream_started()
            if not self.ref:
                self.ref = f"terminal-stream-{uuid.uuid4().hex[:12]}"
                if self._on_posted is not None:
                    self._on_posted(self.ref)

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

    async def edit(self, conversation: Conversation, message_ref: str, reply: Reply) -> bool:
        """A terminal cannot change what it printed: the new state is posted below, like any unprompted post."""
        await self.publish(conversation, reply)
        return True
