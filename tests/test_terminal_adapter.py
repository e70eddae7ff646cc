"""The terminal adapter's pure parts: line -> event and reply -> text."""

from __future__ import annotations

import io
from dataclasses import replace

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
    assert to_event("s", ALICE, keys) == Action(CONVERSATION, ALICE, "shorter", generation_id=42)
    assert to_event("t formal", ALICE, keys) == Action(CONVERSATION, ALICE, "tone", value="formal", generation_id=42)
    assert to_event("+", ALICE, keys) == Action(CONVERSATION, ALICE, "rate_up", value="+1", generation_id=42)


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
