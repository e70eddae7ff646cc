"""The terminal channel's read-eval loop.

Interactive (a TTY), like a shell: Ctrl-C stops the current generation, or at the prompt discards the line and shows
a new prompt; Ctrl-D on an empty line and /quit exit; the up and down arrows walk the lines typed before
(lineedit.LineEditor, fed from the TTY whenever it is readable, so reading never blocks the loop). Piped: lines are
echoed and handled strictly in order, and the loop returns at EOF after the last reply is flushed. On SIGTERM (and
SIGINT when piped) generations in flight end with their text so far and a restart note, and the loop returns 0.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import os
import signal
import sys
import termios
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from adapters.terminal.lineedit import BRACKETED_PASTE_OFF, BRACKETED_PASTE_ON, LineEditor
from adapters.terminal.responder import TerminalOutput, TerminalPublisher, TerminalResponder
from adapters.terminal.translate import (
    CONVERSATION,
    TERMINAL_HELP,
    LeaveThread,
    Notice,
    Quit,
    SwitchUser,
    answers_question,
    terminal_user,
    to_event,
)
from bots.app import Chorus
from bots.events import Command
from bots.reply import ReplyAction
from bots.shutdown import Draining

BANNER = (
    "Chorus — terminal channel. Try: /create slogan a bookstore that is also a cafe --tone playful --n 3\n"
    "/help lists commands and kinds · /as <name> switches who is typing · Ctrl-C stops a generation or clears the "
    "line · Ctrl-D or /quit quits"
)
STOPPED = "(stopped — ↑ then Enter runs that line again)"
GOODBYE = "Bye."
# How long generations in flight get, on SIGTERM, to end with their text so far before Chorus exits anyway.
SHUTDOWN_GRACE_S = 8.0


class TerminalSession:
    """Holds who is typing and which shortcut keys the last reply offered."""

    def __init__(self, chorus: Chorus, user_name: str, out: TextIO | TerminalOutput) -> None:
        self.chorus = chorus
        self.user = terminal_user(user_name)
        self.keys: dict[str, ReplyAction] = {}
        self.output = out if isinstance(out, TerminalOutput) else TerminalOutput(out)
        # Where typed lines go: the channel, or a thread that a reply opened (a brainstorm session).
        self.conversation = CONVERSATION
        self.responder = TerminalResponder(self.output, on_actions=self._remember_keys, on_thread=self._enter_thread)
        self.publisher = TerminalPublisher(self.output, on_actions=self._remember_keys)

    def _enter_thread(self, thread: str) -> None:
        self.conversation = dataclasses.replace(CONVERSATION, thread=thread)

    def _remember_keys(self, actions: Sequence[ReplyAction]) -> None:
        self.keys = {action.key.split()[0]: action for action in actions if action.key}

    def say(self, text: str) -> None:
        self.output.write(text + "\n")

    @property
    def prompt(self) -> str:
        return f"{self.user.name}> "

    async def handle_line(self, line: str) -> bool:
        """Handle one line; False means quit."""
        event = to_event(line, self.user, self.keys, self.conversation)
        if event is None:
            return True
        if isinstance(event, Quit):
            return False
        if isinstance(event, LeaveThread):
            if self.conversation.thread is None:
                self.say("You are not in a thread.")
            else:
                self.conversation = CONVERSATION
                self.say("Back in the channel.")
            return True
        if isinstance(event, SwitchUser):
            if not event.name or " " in event.name:
                self.say("Usage: /as <name>  (one word), e.g. /as alice")
            else:
                self.user = terminal_user(event.name)
                self.say(f"Now typing as {event.name}.")
            return True
        if isinstance(event, Notice):
            self.say(event.text)
            return True
        if answers_question(event, self.keys):
            self.keys = {}
        await self.chorus.handle(event, self.responder)
        if isinstance(event, Command) and event.name == "help" and not event.text:
            self.say(TERMINAL_HELP)
        return True


class _TypedAhead(str):
    """A line finished while no prompt was on screen (typed during a reply): it is printed when its prompt is."""


class _Lines:
    """Typed lines as they arrive, None at end of input. Interactive: the terminal's own line editing is off and a
    LineEditor (history on the up arrow) reads the TTY when it is readable, never blocking the loop; the terminal
    still turns Ctrl-C into SIGINT. Piped: read by a daemon thread, so a stop never waits for the next line."""

    def __init__(self, stdin: TextIO, interactive: bool, output: TerminalOutput) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.editor = LineEditor()
        self.output = output
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        self._saved_mode: list[Any] | None = None
        if interactive:
            self._fd = stdin.fileno()
            self._keys_mode()
            self._loop.add_reader(self._fd, self._readable)
        else:
            threading.Thread(target=self._read_piped, args=(stdin,), daemon=True, name="chorus-stdin").start()

    def _keys_mode(self) -> None:
        """Keys arrive one by one, unechoed (the editor draws the line); Ctrl-C still raises SIGINT."""
        assert self._fd is not None
        try:
            self._saved_mode = termios.tcgetattr(self._fd)
        except termios.error:
            return
        mode = termios.tcgetattr(self._fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.IEXTEN)
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        termios.tcsetattr(self._fd, termios.TCSANOW, mode)
        self.output.control(BRACKETED_PASTE_ON)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the terminal went away
            self._end()
            return
        for line in self.editor.feed(self._decoder.decode(data)):
            if line is None:  # Ctrl-D on an empty line
                self._end()
                return
            if self.output.prompt_text:
                self.output.edit(line, len(line))
                self.output.line_taken()
                self.queue.put_nowait(line)
            else:
                self.queue.put_nowait(_TypedAhead(line))
        self.output.edit(self.editor.text, self.editor.cursor)

    def _end(self) -> None:
        self.close()
        self.queue.put_nowait(None)

    def _read_piped(self, stdin: TextIO) -> None:
        # Bytes that are not UTF-8 (a script saved as Latin-1) become U+FFFD: decoded strictly they ended the reading
        # thread, and Chorus waited forever; through surrogateescape they crashed the model.
        binary = getattr(stdin, "buffer", None)
        try:
            for raw in iter(binary.readline, b"") if binary is not None else iter(stdin.readline, ""):
                line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                self._loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\r\n"))
        finally:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, None)

    def discard(self) -> None:
        """Ctrl-C at the prompt: forget what was typed so far."""
        self.editor.clear()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
            if self._saved_mode is not None:
                self.output.control(BRACKETED_PASTE_OFF)
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_mode)
            self._fd = None


async def run_terminal(chorus: Chorus, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    session = TerminalSession(chorus, chorus.settings.terminal.user, stdout)
    await chorus.attach_publisher(session.publisher)
    # A reply a killed Chorus left half-printed is finished below, with its result or a note, once seen as dead.
    chorus.in_flight.start(session.publisher, CONVERSATION.platform)
    draining = Draining.install(chorus)
    interactive = _isatty(stdin) and _isatty(stdout)
    loop = asyncio.get_running_loop()
    lines = _Lines(stdin, interactive, session.output)
    running: list[asyncio.Task[bool]] = []  # the line being handled, if any
    stopping = asyncio.Event()
    drains: list[asyncio.Task[None]] = []

    def interrupt() -> None:
        if not interactive:
            stop()  # piped: Ctrl-C ends the run, as SIGTERM does, rather than going on to the next line
        elif running and not running[0].done():
            running[0].cancel()  # stop the generation, back to the prompt
        else:
            lines.discard()
            session.output.line_taken()
            session.output.prompt(session.prompt)

    def stop() -> None:
        if not stopping.is_set():
            stopping.set()
            drains.append(loop.create_task(draining.drain()))

    session.output.on_closed = stop  # whoever read the output went away: stop as on SIGTERM
    handlers = {signal.SIGINT: interrupt, signal.SIGTERM: stop}
    for signum, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, handler)
    if interactive:
        session.say(BANNER)
    try:
        while not stopping.is_set():
            if interactive:
                session.output.prompt(session.prompt)
            line = await _next_line(lines, stopping)
            if line is None:
                if interactive and not stopping.is_set():
                    session.say("\n" + GOODBYE)  # below the prompt that Ctrl-D left
                return 0
            if isinstance(line, _TypedAhead):
                session.output.line_taken(typed_ahead=line)
            elif not interactive and line.strip():
                session.say(f"{session.prompt}{line}")
            task = asyncio.ensure_future(session.handle_line(line))
            running[:] = [task]
            try:
                if not await _until_done(task, stopping):
                    if interactive and not stopping.is_set():
                        session.say(GOODBYE)  # /quit
                    return 0
            except asyncio.CancelledError:
                if task.cancelled() and not stopping.is_set():
                    session.output.streams_abandoned()
                    session.say(STOPPED)
                    continue
                raise
            finally:
                running.clear()
        return 0
    finally:
        lines.close()
        for signum in handlers:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)


async def _next_line(lines: _Lines, stopping: asyncio.Event) -> str | None:
    """The next line, or None at end of input or once a stop was asked for."""
    getting = asyncio.ensure_future(lines.queue.get())
    stopped = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({getting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not getting.done():
        getting.cancel()
        return None
    return getting.result()


async def _until_done(task: asyncio.Task[bool], stopping: asyncio.Event) -> bool:
    """The line's result; on a stop, its generation gets SHUTDOWN_GRACE_S to end with its text so far."""
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
    return task.result() and not stopping.is_set()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
