"""Slack payload -> core event, on payloads recorded in Slack's documented shapes (tests/slack_payloads/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.translate import (
    asked_question,
    decode_value,
    encode_value,
    mentioned_users,
    message_ref,
    remix_metadata,
    split_ref,
    to_action,
    to_command,
    to_message,
    to_message_change,
    to_reaction,
    to_submission,
    unescape,
    unicode_emoji,
)
from bots.events import UNKNOWN_USER, Action, Activity, Command, Conversation, Message, MessageDeleted, MessageEdited

PAYLOADS = Path(__file__).with_name("slack_payloads")
BOT = "U0BOT"
ADMINS = frozenset({"U0ADMIN"})


def payload(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def test_a_slash_command_keeps_the_text_for_the_core_to_parse_unescaped() -> None:
    command = to_command(payload("slash_command"), ADMINS)
    assert command.name == "create"
    assert command.text == "slogan a cafe & bookstore <downtown> --tone playful --n 2"
    assert command.conversation == Conversation("slack", "T0001", "C2147483705")
    assert command.user.id == "U2147483697" and command.user.name == "Steve" and not command.user.is_moderator
    assert to_command(payload("slash_command"), {"U2147483697"}).user.is_moderator


def test_a_command_prefix_is_not_part_of_the_name() -> None:
    body = {**payload("slash_command"), "command": "/chorus-create"}
    assert to_command(body, ADMINS, prefix="chorus-").name == "create"


def test_a_button_click_is_an_action_on_its_generation_in_the_results_thread() -> None:
    action = to_action(payload("block_actions_button"), ADMINS)
    assert isinstance(action, Action)
    assert (action.action_id, action.target_id, action.value) == ("regenerate", 12, "")
    assert action.message_ref == "C2147483705:1700000100.000200"
    assert action.conversation == Conversation("slack", "T0001", "C2147483705", "1700000100.000200")


def test_a_select_inside_a_thread_carries_the_choice_and_stays_in_that_thread() -> None:
    action = to_action(payload("block_actions_select_in_thread"), ADMINS)
    assert action is not None and action.action_id == "tone" and action.value == "formal"
    assert action.target_id == 13 and action.user.is_moderator
    assert action.conversation.thread == "1700000100.000200"


def test_foreign_or_damaged_buttons() -> None:
    body = payload("block_actions_button")
    body["actions"][0]["action_id"] = "someone_elses_button"
    assert to_action(body, ADMINS) is None
    body["actions"][0].update(action_id="chorus:more", value="not json")
    action = to_action(body, ADMINS)
    assert action is not None and action.target_id is None  # the core then uses the latest result


def test_button_values_round_trip_and_asking_buttons_are_recognised() -> None:
    assert decode_value(encode_value(7, "+1")) == {"g": 7, "v": "+1", "q": ""}
    body = payload("block_actions_button")
    assert asked_question(body) == ""
    body["actions"][0]["value"] = encode_value(None, "s1", "Your idea?")
    assert asked_question(body) == "Your idea?"


def test_a_modal_answer_is_the_asking_actions_value() -> None:
    action = to_submission(payload("view_submission_ask"), ADMINS)
    assert isinstance(action, Action)
    assert (action.action_id, action.value, action.target_id) == ("idea", "a cat cafe with books", None)
    assert action.conversation == Conversation("slack", "T0001", "C2147483705", "1700000100.000200")
    assert action.message_ref == "C2147483705:1700000300.000400"
    other = payload("view_submission_ask")
    other["view"]["callback_id"] = "not_ours"
    assert to_submission(other, ADMINS) is None


def test_the_remix_shortcut_becomes_a_remix_command_with_structured_options() -> None:
    shortcut = payload("message_action")
    metadata = remix_metadata(shortcut, 1000)
    submitted = payload("view_submission_ask")
    submitted["view"].update(
        callback_id="chorus_remix_modal",
        private_metadata=metadata,
        state={
            "values": {
                "tone": {"tone": {"type": "static_select", "selected_option": {"value": "witty"}}},
                "n": {"n": {"type": "static_select", "selected_option": {"value": "3"}}},
            }
        },
    )
    command = to_submission(submitted, ADMINS)
    assert isinstance(command, Command) and command.name == "remix"
    assert dict(command.options) == {"text": "we open at nine & close late", "tone": "witty", "n": "3"}
    assert command.conversation.thread == "1700000550.000100"
    assert len(remix_metadata({**shortcut, "message": {"text": "x" * 9000}}, 5000)) <= 3000


@pytest.mark.parametrize(
    ("text", "max_chars"),
    [("Привет, мир! " * 80, 1000), ("今日は開店です。" * 125, 1000), ('"quoted" \\ lines\n' * 300, 5000)],
)
def test_the_remix_shortcut_keeps_where_it_came_from_for_a_long_message_in_any_script(
    text: str, max_chars: int
) -> None:
    # Slack keeps 3000 characters of private_metadata; JSON's \uXXXX escapes made 600 Cyrillic characters 3600, and
    # the cut JSON lost the channel and the text, so the remix went nowhere.
    shortcut = payload("message_action")
    metadata = remix_metadata({**shortcut, "message": {**shortcut["message"], "text": text}}, max_chars)
    assert len(metadata.encode()) <= 3000
    submitted = payload("view_submission_ask")
    submitted["view"].update(
        callback_id="chorus_remix_modal",
        private_metadata=metadata,
        state={"values": {"tone": {"tone": {"type": "static_select", "selected_option": {"value": "witty"}}}}},
    )
    command = to_submission(submitted, ADMINS)
    assert isinstance(command, Command)
    assert command.conversation == Conversation("slack", "T0001", "C2147483705", "1700000550.000100")
    kept = command.options["text"]
    assert len(kept) >= 1000 // 2 and text.startswith(kept)


def test_a_thread_reply_under_chorus_is_a_message_replying_to_the_thread_root() -> None:
    message = to_message(payload("message_thread_reply"), "T0001", BOT, ADMINS)
    assert isinstance(message, Message)
    assert message.text == "make the second one rhyme & shorter"
    assert message.reply_to == "C2147483705:1700000100.000200"
    assert message.message_ref == "C2147483705:1700000200.000300"
    assert message.conversation.thread == "1700000100.000200"


def test_slack_markup_in_a_message_reaches_the_core_as_the_text_people_saw() -> None:
    # Slack wraps every link, mention and channel in a message's text in <…>; a brainstorm idea or refinement with
    # a link would otherwise be stored, shown in Themes and sent to the model as `<https://…|…>`.
    text = (
        "try <https://example.com/a?b=1&amp;c=2|example.com> or <mailto:hi@example.com|hi@example.com>, "
        "<https://bare.example>, ask <@U0BOB> or <@U0CAROL|carol> in <#C0GEN|general> or <#C0RAND>, "
        "<!here> <!channel|channel> <!subteam^S0ENG|@eng> <!date^1392734382^{date}|Feb 18th> &lt;b&gt;"
    )
    message = to_message({**payload("message_thread_reply"), "text": text}, "T0001", BOT, ADMINS)
    assert isinstance(message, Message)
    assert message.text == (
        "try example.com or hi@example.com, https://bare.example, ask @someone or @carol in #general or #C0RAND, "
        "@here @channel @eng Feb 18th <b>"
    )
    shortcut = {"message": {"text": "visit <https://example.com|example.com> &amp; more"}, "channel": {"id": "C1"}}
    assert json.loads(remix_metadata(shortcut, 100))["x"] == "visit example.com & more"


def test_a_mention_without_a_label_reads_as_the_display_name_or_someone_never_the_id() -> None:
    # Slack sends most mentions as a bare <@U…>: the core (the model, ideas, history) should read a name.
    event = {**payload("message_thread_reply"), "text": "a toast for <@U0BOB> and <@U0DAVE> by <@U0CAROL|carol>"}
    message = to_message(event, "T0001", BOT, ADMINS, {"U0BOB": "bob"})
    assert isinstance(message, Message) and message.text == "a toast for @bob and @someone by @carol"
    assert mentioned_users(event["text"]) == ["U0BOB", "U0DAVE"]  # labelled ones need no look-up
    assert unescape("hi <@U0BOB> <@U0BOB>") == "hi @someone @someone"


def test_a_thread_under_someone_else_is_only_activity() -> None:
    event = {**payload("message_thread_reply"), "parent_user_id": "U0BOB"}
    assert isinstance(to_message(event, "T0001", BOT, ADMINS), Activity)


def test_a_mention_is_a_message_without_the_mention() -> None:
    message = to_message(payload("message_mention"), "T0001", BOT, ADMINS)
    assert isinstance(message, Message) and message.text == "write it warmer" and message.reply_to is None
    assert message.conversation.thread is None


def test_a_direct_message_is_addressed_to_chorus() -> None:
    message = to_message(payload("message_im"), "T0001", BOT, ADMINS)
    assert isinstance(message, Message) and message.conversation.channel == "D0DM"


def test_other_channel_messages_are_activity_whose_text_only_topic_learning_may_count() -> None:
    activity = to_message(payload("message_channel"), "T0001", BOT, ADMINS)
    assert isinstance(activity, Activity) and activity.text == "lunch anyone?"
    assert activity.at == datetime.fromtimestamp(1700000600.0007, UTC)
    assert activity.user.id == "U0BOB"


@pytest.mark.parametrize("name", ["message_changed", "bot_message"])
def test_edits_and_bot_posts_mean_nothing(name: str) -> None:
    assert to_message(payload(name), "T0001", BOT, ADMINS) is None


def test_an_edit_is_the_new_text_of_the_message_read_as_a_new_message_is() -> None:
    edited = to_message_change(payload("message_changed_in_thread"), "T0001", BOT, ADMINS, {})
    assert isinstance(edited, MessageEdited)
    assert edited.message_ref == "C2147483705:1700000800.000900"  # the message's own ts, not the edit's
    assert edited.text == "kayaking on the lake & a picnic"  # Chorus' mention out, Slack's escapes undone
    assert edited.conversation == Conversation("slack", "T0001", "C2147483705", "1700000500.000600")
    assert edited.user.id == "U0BOB"


def test_a_deletion_names_the_deleted_message_and_its_author() -> None:
    deleted = to_message_change(payload("message_deleted"), "T0001", BOT, ADMINS)
    assert isinstance(deleted, MessageDeleted)
    assert deleted.message_ref == "C2147483705:1700000800.000900" and deleted.user.id == "U0BOB"
    assert deleted.conversation.thread == "1700000500.000600"
    bare = {key: value for key, value in payload("message_deleted").items() if key != "previous_message"}
    unknown = to_message_change(bare, "T0001", BOT, ADMINS)
    assert isinstance(unknown, MessageDeleted) and unknown.user == UNKNOWN_USER


def test_edits_of_chorus_own_or_bot_messages_and_changes_that_keep_the_text_mean_nothing() -> None:
    event = payload("message_changed_in_thread")
    own = {**event, "message": {**event["message"], "user": BOT}}
    bot = {**event, "message": {**event["message"], "bot_id": "B0OTHER"}}
    unfurl = {**event, "previous_message": {**event["previous_message"], "text": event["message"]["text"]}}
    for change in (own, bot, unfurl):
        assert to_message_change(change, "T0001", BOT, ADMINS) is None
    chorus_deleted = {**payload("message_deleted"), "previous_message": {"user": BOT, "ts": "1.2"}}
    assert to_message_change(chorus_deleted, "T0001", BOT, ADMINS) is None
    assert to_message_change(payload("message_channel"), "T0001", BOT, ADMINS) is None  # not a change at all


def test_chorus_own_messages_mean_nothing() -> None:
    assert to_message({**payload("message_channel"), "user": BOT}, "T0001", BOT, ADMINS) is None


def test_reactions_on_messages_point_at_the_message() -> None:
    reaction = to_reaction(payload("reaction_added"), "T0001", ADMINS)
    assert reaction is not None and reaction.added and reaction.emoji == "👍"
    assert reaction.message_ref == "C2147483705:1700000100.000200"
    removed = to_reaction({**payload("reaction_added"), "type": "reaction_removed"}, "T0001", ADMINS)
    assert removed is not None and not removed.added
    assert to_reaction(payload("reaction_on_file"), "T0001", ADMINS) is None


def test_message_refs_name_the_channel_because_ts_is_unique_only_per_channel() -> None:
    assert message_ref("C1", "1.2") != message_ref("C2", "1.2")
    assert split_ref(message_ref("C1", "1700000000.000100")) == ("C1", "1700000000.000100")
    with pytest.raises(ValueError):
        split_ref("1700000000.000100")


def test_slack_emoji_names_become_the_unicode_emoji_people_see() -> None:
    names = ("+1", ":thumbsup:", "+1::skin-tone-3", "thumbsup::skin-tone-6")
    assert {unicode_emoji(name) for name in names} == {"👍"}
    assert [unicode_emoji(name) for name in ("-1", "thumbsdown", "heart", "fire", "tada", "eyes")] == [
        "👎", "👎", "❤", "🔥", "🎉", "👀"
    ]  # fmt: skip
    assert unicode_emoji("partyparrot") == "partyparrot"  # a workspace's own emoji keeps its name
