"""The terminal channel's read-eval loop.

Interactive (a TTY): a prompt with line editing; Ctrl-C stops the current generation, Ctrl-D quits. Piped: lines
are echoed and handled strictly in order, and the loop returns at EOF after the last reply is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from adapters.terminal.responder import TerminalPublisher, TerminalResponder
from adapters.terminal.translate import CONVERSATION, LeaveThread, Quit, SwitchUser, terminal_user, to_event
from bots.app import Chorus
from bots.reply import ReplyAction

BANNER = (
    "Chorus — terminal channel. Try: /create slogan a bookstore that is also a cafe --tone playful --n 3\n"
    "/help lists commands and kinds · /as <name> switches who is typing · Ctrl-C stops a generation · Ctrl-D quits"
)


class TerminalSession:
    """Holds who is typing and which shortcut keys the last reply offered."""

    def __init__(self, chorus: Chorus, user_name: str, out: TextIO) -> None:
        self.chorus = chorus
        self.user = terminal_user(user_name)
        self.keys: dict[str, ReplyAction] = {}
        self.out = out
        # Where typed lines go: the channel, or a thread that a reply opened (a brainstorm session).
        self.conversation = CONVERSATION
        self.responder = TerminalResponder(out, on_actions=self._remember_keys, on_thread=self._enter_thread)

    def _enter_thread(self, thread: str) -> None:
        self.conversation = dataclasses.replace(CONVERSATION, thread=thread)

    def _remember_keys(self, actions: Sequence[ReplyAction]) -> None:
        self.keys = {action.key.split()[0]: action for action in actions if action.key}

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

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
        await self.chorus.handle(event, self.responder)
        return True


async def run_terminal(chorus: Chorus, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    session = TerminalSession(chorus, chorus.settings.terminal.user, stdout)
    await chorus.attach_publisher(TerminalPublisher(stdout))
    interactive = stdin.isatty() and stdout.isatty()
    loop = asyncio.get_running_loop()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        session.say(BANNER)
    while True:
        if interactive:
            try:
                line = await loop.run_in_executor(None, input, f"{session.user.name}> ")
            except EOFError:
                session.say("")
                return 0
            if not await _interruptible(session, line):
                return 0
        else:
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                return 0
            line = line.rstrip("\n")
            if line.strip():
                session.say(f"{session.user.name}> {line}")
            if not await session.handle_line(line):
                return 0


async def _interruptible(session: TerminalSession, line: str) -> bool:
    """Run one line; Ctrl-C cancels it (and its generation) instead of killing Chorus."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(session.handle_line(line))
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        session.say("\n(stopped)")
        return True
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
