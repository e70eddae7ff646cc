"""Core Reply -> Block Kit: limits, buttons, modals, and escaping that never lets a mention through."""

from __future__ import annotations

import json

import pytest
from fake_slack import block_actions, block_problems

from adapters.slack.render import (
    BLOCK_LIMIT,
    SECTION_LIMIT,
    ask_modal,
    escape,
    fallback_text,
    home_view,
    remix_modal,
    render_blocks,
    render_message,
    render_progress,
    split_text,
)
from adapters.slack.translate import decode_value, to_action
from bots.brainstorm.render import controls, vote_button
from bots.feedback import result_actions
from bots.reply import Reply, ReplyAction

TONES = ("neutral", "playful", "formal")
PINGS = "<!channel> <!here> <!everyone> <@U0BOSS> <!subteam^S0ALL|@team> <#C0GENERAL> <https://evil.example|click>"


def test_escaping_makes_every_mention_and_link_inert() -> None:
    escaped = escape(PINGS + " & @channel @Here ＠everyone")
    assert "<" not in escaped and ">" not in escaped
    assert "&lt;!channel&gt;" in escaped.replace("\u200b", "") and "&amp;" in escaped
    for word in ("@channel", "@Here", "＠everyone", "@everyone"):
        assert word not in escaped  # a zero-width space follows the @
    assert escape("me@example.com, see you @ noon") == "me@example.com, see you @ noon"


def test_no_rendered_field_carries_a_mention() -> None:
    reply = Reply(parts=(PINGS, "two"), title=f"slogan · v2 · {PINGS}", footer=PINGS, actions=result_actions(3))
    dumped = json.dumps([render_message(reply, TONES), render_progress(PINGS, [PINGS], PINGS)], ensure_ascii=False)
    for key in ("<!channel>", "<!here>", "<!everyone>", "<@U", "<!subteam^", "<#C", "<https"):
        assert key not in dumped


def test_slack_parses_no_bare_name_in_what_chorus_renders() -> None:
    # A mrkdwn text object without `verbatim` lets Slack "automatically parse certain mentions" in its plain text
    # (a bare `@design` handle); verbatim keeps the formatting and parses nothing.
    reply = Reply(
        parts=("ask @design and #general",), title="slogan · v1", footer="tone: witty", actions=result_actions(3)
    )
    rendered = [render_message(reply, TONES), render_progress("t", ["ask @design"], ""), home_view([], {}, {"a": "b"})]
    texts = [obj for found in rendered for obj in _mrkdwn_objects(found)]
    assert texts and all(obj.get("verbatim") is True for obj in texts)


def _mrkdwn_objects(value: object) -> list[dict]:
    if isinstance(value, dict):
        found = [value] if value.get("type") == "mrkdwn" else []
        return found + [obj for item in value.values() for obj in _mrkdwn_objects(item)]
    if isinstance(value, list):
        return [obj for item in value for obj in _mrkdwn_objects(item)]
    return []


def test_long_text_is_split_at_the_section_limit_at_a_space() -> None:
    words = " ".join(f"word{i}" for i in range(2000))
    pieces = split_text(escape(words))
    assert len(pieces) > 1 and all(len(p) <= SECTION_LIMIT for p in pieces)
    assert " ".join(pieces) == words


def test_a_split_never_cuts_an_escaped_character_in_half() -> None:
    pieces = split_text(escape("&" * 4000))
    assert all(len(p) <= SECTION_LIMIT and p.endswith("&amp;") for p in pieces)
    assert "".join(pieces) == "&amp;" * 4000


def test_a_huge_reply_still_fits_in_fifty_blocks_with_its_buttons() -> None:
    reply = Reply(parts=("x " * 200_000,), title="story · v1", actions=result_actions(1))
    blocks = render_blocks(reply, TONES)
    assert len(blocks) == BLOCK_LIMIT
    assert blocks[-1]["type"] == "actions" and "did not fit" in blocks[-2]["elements"][0]["text"]
    assert len(fallback_text(reply)) <= 3000


def test_result_buttons_carry_their_generation_and_the_tone_is_a_select() -> None:
    blocks = render_blocks(Reply(parts=("a", "b"), title="slogan · v1", actions=result_actions(42)), TONES)
    assert blocks[1]["text"]["text"] == "1. a\n\n2. b"
    elements = blocks[-1]["elements"]
    buttons = [e for e in elements if e["type"] == "button"]
    assert [b["text"]["text"] for b in buttons] == ["Regenerate", "More like this", "Shorter", "Longer", "👍", "👎"]
    assert [b["action_id"] for b in buttons][:2] == ["chorus:regenerate", "chorus:more"]
    assert all(decode_value(b["value"])["g"] == 42 for b in buttons)
    assert decode_value(buttons[-1]["value"])["v"] == "-1"
    select = next(e for e in elements if e["type"] == "static_select")
    assert select["action_id"] == "chorus:tone"
    assert [decode_value(o["value"])["v"] for o in select["options"]] == list(TONES)


def test_action_ids_are_unique_in_every_message_as_slack_requires() -> None:
    button = {"type": "button", "action_id": "chorus:more", "text": {"type": "plain_text", "text": "More"}}
    assert block_problems([{"type": "actions", "elements": [button, button]}], BLOCK_LIMIT)  # the fake refuses it
    for actions in (result_actions(7, variants=3), (vote_button(1, 3), *controls(1))):
        assert block_problems(render_blocks(Reply(parts=("a",), actions=actions), TONES), BLOCK_LIMIT) == []


def test_more_than_100_tones_are_all_offered_in_selects_within_slacks_limits() -> None:
    # A static_select holds 100 options: tones 101 and on were silently missing from the result's tone menu.
    tones = tuple(f"tone {i:03d}" for i in range(130))
    blocks = render_blocks(Reply(parts=("a", "b"), actions=result_actions(5, variants=2)), tones)
    selects = [e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "static_select"]
    tone_selects = [s for s in selects if s["action_id"].startswith("chorus:tone")]
    assert [decode_value(o["value"])["v"] for s in tone_selects for o in s["options"]] == list(tones)
    assert tone_selects[1]["placeholder"]["text"] == "Change tone (tone 100 – tone 129)"
    assert block_problems(blocks, BLOCK_LIMIT) == []
    picked = {**tone_selects[1], "selected_option": tone_selects[1]["options"][-1]}
    action = to_action(block_actions({"ts": "1.2", "blocks": blocks}, picked), ())
    assert action is not None and (action.action_id, action.value, action.target_id) == ("tone", "tone 129", 5)


def test_an_asking_action_is_a_button_that_opens_a_modal() -> None:
    action = ReplyAction("idea", "Add an idea", value="s1", ask="Your idea?")
    (block,) = render_blocks(Reply(actions=(action,)), TONES)
    button = block["elements"][0]
    assert button["action_id"] == "chorus:idea:ask" and decode_value(button["value"])["q"] == "Your idea?"
    modal = ask_modal("Your idea?", '{"a":"idea"}')
    assert modal["type"] == "modal" and modal["private_metadata"] == '{"a":"idea"}'
    assert modal["blocks"][0]["label"]["text"] == "Your idea?"
    assert all(len(modal[key]["text"]) <= 24 for key in ("title", "submit", "close"))


def test_the_remix_modal_offers_the_tones_and_variant_counts() -> None:
    modal = remix_modal("<!here> hello", TONES, 5, "{}")
    assert "<!here>" not in json.dumps(modal)
    selects = [b["element"] for b in modal["blocks"] if b["type"] == "input"]
    assert [o["value"] for o in selects[0]["options"]] == list(TONES)
    assert [o["value"] for o in selects[1]["options"]] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(("status", "shown"), [("Queued: 2nd in line, about 4 s", "2nd in line"), ("", "Working")])
def test_progress_shows_the_queue_or_that_work_started(status: str, shown: str) -> None:
    progress = render_progress("slogan · v1", [""], status)
    assert shown in json.dumps(progress, ensure_ascii=False)
    assert not any(b.get("type") == "actions" for b in progress["blocks"])


def test_progress_shows_the_text_so_far_with_a_cursor() -> None:
    progress = render_progress("poem · v1", ["roses are ", "violets"])
    assert progress["blocks"][1]["text"]["text"] == "1. roses are \n\n2. violets ▍"


def test_app_home_settings_only_for_admins() -> None:
    commands = [("/create <kind>", "write something")]
    usage = {"generations": 2, "feedback": 0, "engagement": 1}
    member = json.dumps(home_view(commands, usage, None), ensure_ascii=False)
    admin = json.dumps(home_view(commands, usage, {"mode": "socket"}), ensure_ascii=False)
    assert "generations: 2" in member and "Workspace settings" not in member
    assert "Workspace settings" in admin and "&lt;kind&gt;" in member


def test_the_manifest_users_paste_matches_the_commands_and_listeners() -> None:
    yaml = pytest.importorskip("yaml")
    from adapters.slack.manifest import PATH, manifest
    from bots.commands import COMMANDS

    pasted = yaml.safe_load(PATH.read_text())
    assert pasted == manifest(), "manifest.yaml is stale: run `python -m adapters.slack.manifest`"
    assert [c["command"] for c in pasted["features"]["slash_commands"]] == [f"/{spec.name}" for spec in COMMANDS]
    assert pasted["features"]["shortcuts"][0]["callback_id"] == "chorus_remix"
    assert {"message.channels", "message.im", "reaction_added", "app_home_opened", "app_uninstalled"} <= set(
        pasted["settings"]["event_subscriptions"]["bot_events"]
    )
    # Edits and deletions (message_changed, message_deleted) are `message` events with a subtype: Slack delivers them
    # under the same message.* subscriptions and *:history scopes, in public and private channels alike.
    assert {"message.channels", "message.groups"} <= set(pasted["settings"]["event_subscriptions"]["bot_events"])
    assert {"channels:history", "groups:history"} <= set(pasted["oauth_config"]["scopes"]["bot"])
