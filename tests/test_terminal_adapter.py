"""The terminal adapter's pure parts: line -> event and reply -> text."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.terminal.render import render_actions, render_reply
from adapters.terminal.responder import TerminalPublisher, TerminalResponder
from adapters.terminal.translate import CONVERSATION, Quit, SwitchUser, terminal_user, to_event
from bots.events import Action, Command, Conversation, Message
from bots.feedback import result_actions
from bots.reply import Reply, ReplyAction

ALICE = terminal_user("alice")


def test_slash_line_is_a_command_with_its_text() -> None:
    event = to_event("/create slogan a cafe --n 2", ALICE, {})
    assert event == Command(CONVERSATION, ALICE, "create", "slogan a cafe --n 2")


def test_shortcut_keys_become_actions_on_the_last_result() -> None:
    keys = {a.key.split()[0]: a for a in result_actions(42)}
    assert to_event("s", ALICE, keys) == Action(CONVERSATION, ALICE, "shorter", target_id=42)
    assert to_event("t formal", ALICE, keys) == Action(CONVERSATION, ALICE, "tone", value="formal", target_id=42)
    assert to_event("+", ALICE, keys) == Action(CONVERSATION, ALICE, "rate_up", value="+1", target_id=42)


def test_shortcut_keys_without_a_shown_result_still_mean_the_latest() -> None:
    assert to_event(" r ", ALICE, {}) == Action(CONVERSATION, ALICE, "regenerate")


def test_a_sentence_is_a_message_and_meta_commands_are_the_terminals() -> None:
    assert to_event("make the second one rhyme", ALICE, {}) == Message(CONVERSATION, ALICE, "make the second one rhyme")
    assert to_event("s and also t", ALICE, {}) == Message(CONVERSATION, ALICE, "s and also t")
    assert to_event("/as bob", ALICE, {}) == SwitchUser("bob")
    assert isinstance(to_event("/quit", ALICE, {}), Quit)
    assert to_event("   ", ALICE, {}) is None


def test_actions_line_matches_the_documented_shortcuts() -> None:
    line = render_actions(result_actions(1))
    expected = "[r] regenerate  [m] more like this  [s] shorter  [l] longer  [t <tone>] change tone  [+]/[-] rate"
    assert line == expected


def test_variants_are_numbered() -> None:
    text = render_reply(Reply(parts=("one", "two"), title="slogan · v1"))
    assert text == "── slogan · v1 ──\n1. one\n2. two"


async def test_terminal_responder_streams_then_prints_the_actions_line() -> None:
    out = io.StringIO()
    shown: list[str] = []
    responder = TerminalResponder(out, on_actions=lambda actions: shown.extend(a.key for a in actions))
    stream = responder.stream("slogan · v1")
    await stream.begin_part(1, 2)
    await stream.write("Sip, ")
    await stream.write("read.")
    await stream.begin_part(2, 2)
    await stream.write("Books & brews.")
    ref = await stream.finish(Reply(parts=("Sip, read.", "Books & brews."), actions=result_actions(7), generation_id=7))
    assert out.getvalue() == (
        "── slogan · v1 ──\n1. Sip, read.\n2. Books & brews.\n"
        "[r] regenerate  [m] more like this  [s] shorter  [l] longer  [t <tone>] change tone  [+]/[-] rate\n"
    )
    assert ref.startswith("terminal-") and shown[0] == "r"


async def test_terminal_publisher_labels_the_channel() -> None:
    out = io.StringIO()
    publisher = TerminalPublisher(out)
    await publisher.publish(CONVERSATION, Reply.text("Prompt of the day: a door that opens inward."))
    await publisher.publish(replace(CONVERSATION, thread="t1"), Reply.text("Idea: a lighthouse café."))
    assert out.getvalue() == (
        "[terminal] Prompt of the day: a door that opens inward.\n[terminal/t1] Idea: a lighthouse café.\n"
    )


async def test_a_thread_opened_by_a_reply_takes_the_following_lines_until_leave() -> None:
    from adapters.terminal.app import TerminalSession

    out = io.StringIO()
    seen: list[Conversation] = []

    class Recorder:
        settings = None

        async def handle(self, event, responder) -> None:
            seen.append(event.conversation)

    session = TerminalSession(Recorder(), "alice", out)  # type: ignore[arg-type]
    await session.handle_line("an idea before")
    thread, responder = await session.responder.open_thread("terminal-3", "Brainstorm: tea names")
    await session.handle_line("an idea inside")
    await session.handle_line("/leave")
    await session.handle_line("an idea after")
    assert responder is session.responder and thread == "thread-terminal-3"
    assert [c.thread for c in seen] == [None, thread, None]
    assert "Brainstorm: tea names" in out.getvalue() and "Back in the channel." in out.getvalue()


def test_an_action_that_asks_for_text_takes_the_rest_of_the_line() -> None:
    keys = {"idea": ReplyAction("brainstorm_idea", "Add idea", "idea <text>", ask="Your idea")}
    assert to_event("idea a tea bar in a library", ALICE, keys) == Action(
        CONVERSATION, ALICE, "brainstorm_idea", value="a tea bar in a library"
    )


HOSTILE = "Sip\x1b]52;c;cm0gLXJmIH4=\x07 and \x1b]0;owned\x1b\\read\x1b[2J\x9b31m\x08\r\x00."


def _unsafe(text: str) -> list[str]:
    return [ch for ch in text if not (ch.isprintable() or ch in "\n\t\u200d")]


async def test_only_safe_text_reaches_the_terminal(tmp_path) -> None:
    from adapters.terminal.app import run_terminal
    from bots.store import Store
    from chorus.compose import build_chorus
    from generation.fake import FakeGenerator
    from support import settings_for

    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(lambda request: HOSTILE), drops=False)
    script = (
        "/create slogan a cafe \x1b]0;title\x07 --n 2\n"  # the prompt becomes the version title
        "make it \x1b[31mred\x1b[0m\n"  # a refinement: its instruction is in the next title
        "/as \x1b]52;c;eA==\x07bob\n"
        "/nosuch\x1b[2J\x08\n"
        "/history\n"
    )
    out = io.StringIO()
    try:
        assert await run_terminal(chorus, stdin=io.StringIO(script), stdout=out) == 0
    finally:
        await chorus.close()
    text = out.getvalue()
    assert "Sip" in text and "read" in text and "/nosuch" in text and "bob" in text
    assert _unsafe(text) == []


class ClosingPipe(io.StringIO):
    """stdout piped into `head -2`: after a few writes the reader is gone and every write fails."""

    def __init__(self, writes: int) -> None:
        super().__init__()
        self.left = writes

    def write(self, text: str) -> int:
        if self.left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.left -= 1
        return super().write(text)


async def test_output_piped_into_a_reader_that_quits_stops_chorus_quietly(tmp_path, caplog) -> None:
    from adapters.terminal.app import run_terminal
    from bots.store import Store
    from chorus.compose import build_chorus
    from generation.fake import FakeGenerator
    from support import settings_for

    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    await store.start()
    generator = FakeGenerator()
    chorus = build_chorus(settings, store, generator, drops=False)
    script = "".join(f"/create slogan cafe number {n}\n" for n in range(20))
    try:
        # Before: a traceback for every line ("Something went wrong" could not be written either), and all 20 ran.
        assert await run_terminal(chorus, stdin=io.StringIO(script), stdout=ClosingPipe(writes=3)) == 0
    finally:
        await chorus.close()
    assert len(generator.requests) < 20, "Chorus kept generating for nobody"
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


async def test_a_drop_never_lands_inside_a_streaming_line_and_plus_rates_what_was_shown_last() -> None:
    from adapters.terminal.app import TerminalSession

    out = io.StringIO()
    handled: list[object] = []

    class Recorder:
        settings = None

        async def handle(self, event, responder) -> None:
            handled.append(event)

    session = TerminalSession(Recorder(), "alice", out)  # type: ignore[arg-type]
    stream = session.responder.stream("slogan · v1")
    await stream.begin_part(1, 1)
    await stream.write("Books and")
    drop = Reply(
        parts=("A door that opens inward.",),
        title="Prompt of the day",
        actions=(
            ReplyAction("rate_up", "👍", "+", value="+1", target_id=99),
            ReplyAction("rate_down", "👎", "-", value="-1", target_id=99),
        ),
        generation_id=99,
    )
    await session.publisher.publish(CONVERSATION, drop)
    await stream.write(" brews.")
    await stream.finish(Reply(parts=("Books and brews.",), actions=result_actions(7), generation_id=7))
    lines = out.getvalue().splitlines()
    assert "Books and brews." in lines, lines  # the streamed line is whole
    assert any(line.startswith("[terminal] ── Prompt of the day ──") for line in lines)
    await session.handle_line("+")
    assert handled[-1] == Action(CONVERSATION, ALICE, "rate_up", value="+1", target_id=99)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_sigterm_mid_stream_ends_the_result_with_its_text_so_far_and_a_note(tmp_path, signum) -> None:
    # Piped, Ctrl-C (SIGINT) stops like SIGTERM: it used to stop only the generation and go on to the next line.
    import asyncio
    import os

    from adapters.terminal.app import run_terminal
    from bots.shutdown import RESTART_NOTE
    from bots.store import Store
    from chorus.compose import build_chorus
    from generation.fake import FakeGenerator
    from support import settings_for, wait_until

    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    await store.start()
    # A story far longer than the test: still streaming when the signal comes, however slow the machine.
    endless = FakeGenerator(lambda request: "Once upon a time " + "the tide waited for the moon, " * 400, delay_s=0.05)
    chorus = build_chorus(settings, store, endless, drops=False)
    out = io.StringIO()

    def no_handler(*_: object) -> None:
        raise RuntimeError("the signal reached Python's default handling: the terminal did not take it")

    previous = signal.signal(signum, no_handler)
    try:
        run = asyncio.create_task(
            run_terminal(chorus, stdin=io.StringIO("/create story a tide that forgot to turn\n/help\n"), stdout=out)
        )
        # The story is streaming.
        await wait_until(lambda: "Once upon a" in out.getvalue().partition("v1 of 1 ──")[2])
        os.kill(os.getpid(), signum)
        assert await asyncio.wait_for(run, 20) == 0
        text = out.getvalue()
        assert RESTART_NOTE in text and "/help" not in text.split(RESTART_NOTE)[1], "no new work after the stop"
        record = await store.latest_generation(CONVERSATION)
        assert record is not None and record.status == "partial" and record.variants[0] in text
    finally:
        signal.signal(signum, previous)
        await chorus.close()


async def _read_until(master: int, needle: str, seen: list[str], timeout_s: float = 60.0) -> None:
    """Read the pty until `needle` appears in the output not yet consumed (polling, with a deadline).
    `seen`: [everything shown, what is not consumed yet]."""
    import asyncio
    import os
    import select
    import time

    deadline = time.monotonic() + timeout_s
    while needle not in seen[-1]:
        assert time.monotonic() < deadline, f"{needle!r} not shown; got {seen[-1]!r}"
        if select.select([master], [], [], 0)[0]:
            try:
                data = os.read(master, 4096).decode(errors="replace")
            except OSError:
                break
            seen[0] += data
            seen[-1] += data
        else:
            await asyncio.sleep(0.02)
    seen[-1] = seen[-1].split(needle, 1)[1]


@contextlib.asynccontextmanager
async def _chorus_on_a_pty(home: Path) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """`chorus run` on a pseudo-terminal (its controlling terminal, as in a shell): yields (master fd, process)."""
    import fcntl
    import os
    import pty
    import sys
    import termios

    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= {"CHORUS_HOME": str(home), "CHORUS_MODEL__SOURCE": "fake", "CHORUS_TERMINAL__USER": "alice"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chorus",
        "run",
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    try:
        yield master, process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)


async def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_exits(tmp_path: Path) -> None:
    import os

    async with _chorus_on_a_pty(tmp_path) as (master, process):
        seen = ["", ""]
        await _read_until(master, "alice> ", seen)
        os.write(master, b"/as mallory")
        os.write(master, b"\x03")  # Ctrl-C: the terminal sends SIGINT; the line is dropped
        await _read_until(master, "alice> ", seen)
        os.write(master, b"/as bob\n")
        await _read_until(master, "Now typing as bob.", seen)
        assert "Now typing as mallory" not in seen[0] and "Traceback" not in seen[0]
        await _read_until(master, "bob> ", seen)
        os.write(master, b"\x04")  # Ctrl-D on an empty line
        await _read_until(master, "Bye.", seen)  # it used to end with an empty line
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_the_up_arrow_brings_back_earlier_lines_and_ctrl_c_still_clears(tmp_path: Path) -> None:
    import os

    up, down = b"\x1b[A", b"\x1b[B"
    async with _chorus_on_a_pty(tmp_path) as (master, process):
        seen = ["", ""]
        await _read_until(master, "alice> ", seen)
        os.write(master, b"/as bob\n")
        await _read_until(master, "bob> ", seen)
        os.write(master, b"/as carol\n")
        await _read_until(master, "carol> ", seen)
        os.write(master, up + up + b"\n")  # two lines back: /as bob
        await _read_until(master, "Now typing as bob.", seen)
        await _read_until(master, "bob> ", seen)
        os.write(master, b"/as dave" + up + down + b"\x7f\x7f\x7f\x7fmallory" + b"\x03")  # edited, then cancelled
        await _read_until(master, "bob> ", seen)
        os.write(master, up + b"\x01" + b"\x1b[C" * 4 + b"\x0berin\n")  # the last line, edited: Home, 4 right, Ctrl-K
        await _read_until(master, "Now typing as erin.", seen)
        assert "mallory" not in seen[0].split("Now typing as")[-1] and "Traceback" not in seen[0]
        await _read_until(master, "erin> ", seen)
        os.write(master, b"/quit\n")
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_best_of_note_sits_on_its_own_line_and_each_variant_starts_its_numbered_line(tmp_path) -> None:
    from adapters.terminal.app import run_terminal
    from bots.store import Store
    from chorus.compose import build_chorus
    from generation.fake import FakeGenerator
    from support import settings_for

    settings = settings_for(tmp_path, CHORUS_GENERATION__BEST_OF="2")
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(lambda request: "Fresh pages, fresh coffee."), drops=False)
    out = io.StringIO()
    try:
        assert await run_terminal(chorus, stdin=io.StringIO("/create slogan a bookstore cafe --n 2\n"), stdout=out) == 0
    finally:
        await chorus.close()
    lines = out.getvalue().splitlines()
    note = next(i for i, line in enumerate(lines) if "drafts of each variant" in line)
    assert lines[note].startswith("("), lines
    assert [line for line in lines if line.startswith(("1. ", "2. "))] == [
        "1. Fresh pages, fresh coffee.",
        "2. Fresh pages, fresh coffee.",
    ], lines


def test_the_line_editor_keeps_history_and_edits_like_readline() -> None:
    from adapters.terminal.lineedit import END_OF_INPUT, LineEditor

    editor = LineEditor()
    assert editor.feed("/create slogan tea\r\n/help\n") == ["/create slogan tea", "/help"]
    assert editor.feed("draft\x1b[A") == [] and editor.text == "/help"
    assert editor.feed("\x1b") == [] and editor.feed("[A") == [] and editor.text == "/create slogan tea"  # split read
    assert editor.feed("\x1b[A\x1b[B\x1b[B") == [] and editor.text == "draft", "down past the newest: the draft"
    assert editor.feed("\x1b[D\x1b[D\x7fX\x1b[3~\n") == ["drXt"]  # left, backspace, insert, Delete
    assert editor.feed("a\x1b]0;title\x07b\tc\n") == ["a0;titleb c"], "no control character enters a line"
    assert editor.feed("one two\x17\x17three\n") == ["three"]  # Ctrl-W: a word back
    editor.feed("half a line")
    editor.clear()  # Ctrl-C
    assert editor.text == "" and editor.history[:3] == ["/create slogan tea", "/help", "drXt"]
    assert editor.feed("xy\x01\x04") == [] and editor.text == "y", "Ctrl-D deletes while there is text"
    assert editor.feed("\x05\x15\x04ignored\n") == [END_OF_INPUT]


def test_a_pasted_paragraph_is_one_line() -> None:
    # Each pasted line break was an Enter: `/remix` got the first line, and the next became a refinement.
    from adapters.terminal.lineedit import LineEditor

    editor = LineEditor()
    pasted = "\x1b[200~Our cafe opens at 7.\r\nCome early,\nstay late.\x1b[201~"
    assert editor.feed("/remix " + pasted[:20]) == [] and editor.feed(pasted[20:] + " --tone witty\r") == [
        "/remix Our cafe opens at 7. Come early, stay late. --tone witty"
    ]
    assert editor.feed("next\r") == ["next"], "after the paste, Enter ends the line again"


def test_a_drop_while_someone_is_typing_goes_above_the_prompt_and_the_typed_line_is_shown_again() -> None:
    from adapters.terminal.responder import TerminalOutput

    screen = io.StringIO()
    output = TerminalOutput(screen)
    output.prompt("alice> ")
    for typed in ("/cre", "/create slo"):
        output.edit(typed, len(typed))
    output.post("── #general · drop ──\nTea, but braver.")
    shown = screen.getvalue()
    assert shown.endswith("alice> /create slo")
    before, _ = shown.split("Tea, but braver.\n")
    assert before.endswith("\n── #general · drop ──\n") and "alice> /create slo" in before
    output.line_taken()
    assert screen.getvalue().endswith("\n") and output.at_line_start


def test_a_line_longer_than_the_terminal_is_redrawn_from_its_first_row() -> None:
    from adapters.terminal.responder import TerminalOutput

    screen = io.StringIO()  # not a terminal: 80 columns
    output = TerminalOutput(screen)
    output.prompt("alice> ")
    output.edit("x" * 73, 73)  # prompt and text fill the row exactly: the cursor moves to the next one
    assert screen.getvalue() == "alice> " + "x" * 73 + "\r\n"
    mark = len(screen.getvalue())
    output.edit("x" * 72, 72)  # Backspace: up one row, rewrite from the prompt, clear the rest
    assert screen.getvalue()[mark:] == "\x1b[1A\r\x1b[Jalice> " + "x" * 72
    mark = len(screen.getvalue())
    output.edit("x" * 72, 0)  # Home: to the column after the prompt
    assert screen.getvalue()[mark:].endswith("\r\x1b[7C")


def test_a_terminal_that_reports_no_width_is_drawn_as_80_columns() -> None:
    # A pty nobody sized reports 0 columns: read as 2, every redraw moved the cursor up over earlier output.
    import os
    import pty
    import re
    import select

    from adapters.terminal.responder import TerminalOutput

    master, slave = pty.openpty()  # a new pty is 0 × 0
    try:
        with open(slave, "w", closefd=False) as screen:
            output = TerminalOutput(screen)
            output.prompt("alice> ")
            output.edit("/create slogan tea", 18)
            output.edit("/create slogan te", 17)  # Backspace
        # The kernel hands a pty's output over in pieces (a busy machine read only the first write): read until
        # the redraw has arrived, or nothing more comes for a while.
        shown = ""
        while not shown.endswith("slogan te") and select.select([master], [], [], 5.0)[0]:
            shown += os.read(master, 4096).decode()
        assert not re.search(r"\x1b\[\d+A", shown), shown  # never up a row: the line fits on one
        assert shown.endswith("\r\x1b[Jalice> /create slogan te"), shown
    finally:
        os.close(master)
        os.close(slave)


async def _scripted(tmp_path: Path, script: str | bytes, **env: str) -> tuple[str, int]:
    """`script` piped into the terminal channel over the fake model: (what was shown, results stored)."""
    from adapters.terminal.app import run_terminal
    from bots.store import Store
    from chorus.compose import build_chorus
    from generation.fake import FakeGenerator
    from support import settings_for

    settings = settings_for(tmp_path, **env)
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(lambda request: "Tea, but braver."), drops=False)
    out = io.StringIO()
    try:
        stdin = io.StringIO(script) if isinstance(script, str) else io.TextIOWrapper(io.BytesIO(script), "utf-8")
        assert await asyncio.wait_for(run_terminal(chorus, stdin=stdin, stdout=out), 20) == 0
        return out.getvalue(), await store.count_generations()
    finally:
        await chorus.close()


async def test_the_forget_question_waits_for_y_or_n(tmp_path: Path) -> None:
    # Anything but y or n used to go on as a refinement of the latest result ("maybe" made v2 of the slogan).
    shown, results = await _scripted(tmp_path, "/create slogan tea\n/forget\nmaybe\ns\nno\nn\n")
    assert results == 1, shown
    assert shown.count("Answer y (yes, delete) or n (cancel) first.") == 2, shown
    assert "Cancelled. Nothing was deleted." in shown
    assert "👋" in shown.split("Cancelled.")[1], "after the answer, `n` is no longer an answer"
    shown, results = await _scripted(tmp_path, "/forget\nyes\n")
    assert "Done. Deleted 1 result" in shown and results == 0


async def test_ctrl_c_mid_generation_says_how_to_run_it_again_and_quit_says_goodbye(tmp_path: Path) -> None:
    import os
    import pty

    from adapters.terminal.app import GOODBYE, STOPPED, run_terminal
    from adapters.terminal.lineedit import BRACKETED_PASTE_OFF, BRACKETED_PASTE_ON
    from bots.store import Store
    from chorus.compose import build_chorus
    from generation.fake import FakeGenerator
    from support import settings_for

    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    await store.start()
    # A story far longer than the test: still streaming when the signal comes, however slow the machine.
    endless = FakeGenerator(lambda request: "Once upon a time " + "the tide waited for the moon, " * 400, delay_s=0.05)
    chorus = build_chorus(settings, store, endless, drops=False)
    master, slave = pty.openpty()  # this process's own terminal, so SIGINT below is the one Ctrl-C would send
    screen_in, screen_out = os.fdopen(os.dup(slave)), os.fdopen(os.dup(slave), "w")
    try:
        run = asyncio.create_task(run_terminal(chorus, stdin=screen_in, stdout=screen_out))
        seen = ["", ""]
        await _read_until(master, "you> ", seen)
        os.write(master, b"/create story a tide that forgot to turn\r")
        await _read_until(master, "v1 of 1 ──", seen)
        await _read_until(master, " ", seen)  # the story is streaming
        os.kill(os.getpid(), signal.SIGINT)
        await _read_until(master, STOPPED, seen)  # it said only "(stopped)"
        await _read_until(master, "you> ", seen)
        os.write(master, b"/quit\r")
        await _read_until(master, GOODBYE, seen)
        assert await asyncio.wait_for(run, 20) == 0
        assert "Traceback" not in seen[0]
        assert seen[0].startswith(BRACKETED_PASTE_ON), "pastes are marked while Chorus reads the terminal"
        await _read_until(master, BRACKETED_PASTE_OFF, seen)  # and no longer once it has quit
    finally:
        screen_in.close()
        screen_out.close()
        os.close(master)
        os.close(slave)
        await chorus.close()


def test_the_brainstorm_keys_show_what_to_type_after_them() -> None:
    # `[i] 💡 add idea  [v] 👍 vote`: people typed `v` alone, or `vote 2` (taken as an idea).
    from bots.brainstorm.render import controls

    line = render_actions(controls(7))
    assert line.startswith("[i <idea>] 💡 add idea  [v <number>] 👍 vote  [n] ⏭ next round"), line
    keys = {action.key.split()[0]: action for action in controls(7)}
    assert to_event("v 3", ALICE, keys) == Action(CONVERSATION, ALICE, "brainstorm_vote", value="3", target_id=7)
    assert to_event("i a book swap", ALICE, keys) == Action(
        CONVERSATION, ALICE, "brainstorm_idea", value="a book swap", target_id=7
    )


async def test_help_ends_with_the_terminals_own_commands_and_their_typos_are_caught(tmp_path: Path) -> None:
    # Piped there is no banner, and /help never named /as, /leave or /quit; `/qiut` got "Did you mean /quit"-less
    # suggestions from the core, which does not know them.
    from adapters.terminal.translate import TERMINAL_HELP

    shown, _ = await _scripted(tmp_path, "/help\n/qiut\n/leav\n/help create\n/help /as\n")
    assert shown.count(TERMINAL_HELP) == 2 and "/as <name>" in TERMINAL_HELP and "No command /as" not in shown
    assert "Unknown command /qiut. Did you mean /quit?" in shown
    assert "Unknown command /leav. Did you mean /leave?" in shown


async def test_piped_bytes_that_are_not_utf8_are_replaced_not_fatal(tmp_path: Path) -> None:
    # A script saved as Latin-1: the reading thread died on the strict decode and Chorus waited forever.
    shown, results = await _scripted(tmp_path, b"/create slogan caf\xe9 cr\xe8me\r\n/history\n")
    assert "you> /create slogan caf\ufffd cr\ufffdme\n" in shown and results == 1
    assert "caf\ufffd cr\ufffdme" in shown.split("History")[1]


async def test_exit_typed_without_a_slash_says_how_to_quit(tmp_path: Path) -> None:
    # `exit` and `quit` went on as refinements: a new version "· exit" of the latest result.
    shown, results = await _scripted(tmp_path, "/create slogan tea\nexit\nquit\n/brainstorm tea names\nexit\n")
    assert results == 1 and "· exit" not in shown
    assert shown.count("\n/quit or Ctrl-D quits.") == 2
    assert "/leave goes back to the channel; /quit or Ctrl-D quits." in shown
