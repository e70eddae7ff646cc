"""The Discord adapter's pure parts: payload -> core event, and Reply -> the message Discord receives."""

from __future__ import annotations

from fake_discord import (
    BOT_ID,
    BOT_USER,
    CHANNEL_ID,
    GUILD_ID,
    form_problem,
    interaction_payload,
    message_payload,
    user_payload,
)

from adapters.discord.render import (
    CONTENT_LIMIT,
    DESCRIPTION_LIMIT,
    render_progress,
    render_reply,
    sanitize,
    split_text,
)
from adapters.discord.responder import RateHints
from adapters.discord.translate import (
    AskFirst,
    MentionNames,
    decode_custom_id,
    encode_custom_id,
    to_action,
    to_command,
    to_message,
    to_message_deletes,
    to_message_edit,
    to_reaction,
)
from bots.events import UNKNOWN_USER, Action, Activity, Command, Conversation, Message, MessageEdited, Reaction
from bots.feedback import result_actions
from bots.reply import Reply, ReplyAction

ALICE = ("940000000000000001", "alice")
HERE = Conversation("discord", GUILD_ID, CHANNEL_ID)


def test_slash_options_become_command_options_and_free_text_becomes_text() -> None:
    data = {"name": "create", "type": 1, "options": [{"name": "kind", "value": "slogan"}, {"name": "n", "value": 3}]}
    event = to_command(interaction_payload(2, data, user=ALICE), free_text=False)
    assert isinstance(event, Command)
    assert (event.name, event.text, dict(event.options)) == ("create", "", {"kind": "slogan", "n": "3"})
    assert event.conversation == HERE and event.user.id == ALICE[0] and not event.user.is_moderator
    free = to_command(
        interaction_payload(2, {"name": "help", "options": [{"name": "text", "value": "create"}]}, user=ALICE),
        free_text=True,
    )
    assert free.text == "create" and not free.options


def test_mentions_in_a_prompt_read_as_names_and_never_as_raw_ids() -> None:
    prompt = "a cake for <@111> and <@!222> from <@&333> in <#444>, see </create:555> and <@999> <@&998> <#997>"
    data = {
        "name": "create",
        "type": 1,
        "options": [{"name": "kind", "type": 3, "value": "slogan"}, {"name": "prompt", "type": 3, "value": prompt}],
        "resolved": {
            "users": {"111": {"id": "111", "username": "sam_k", "global_name": "Sam"}, "222": {"username": "jo"}},
            "members": {"111": {"nick": "Sammy"}},
            "roles": {"333": {"id": "333", "name": "Bakers"}},
        },
    }
    names = MentionNames(channels={"444": "general"})
    event = to_command(interaction_payload(2, data, user=ALICE), free_text=False, names=names)
    assert event.options["prompt"] == (
        "a cake for @Sammy and @jo from @Bakers in #general, see /create and @someone @a role #a channel"
    )


def test_manage_channels_makes_a_moderator() -> None:
    payload = interaction_payload(2, {"name": "drops"}, user=ALICE, moderator=True)
    assert to_command(payload, free_text=True).user.is_moderator


def test_the_message_menu_remixes_the_target_text() -> None:
    target = message_payload("77", CHANNEL_ID, user_payload(*ALICE), "our cafe opens at dawn")
    data = {"name": "Remix with Chorus", "type": 3, "target_id": "77", "resolved": {"messages": {"77": target}}}
    event = to_command(interaction_payload(2, data, user=ALICE), free_text=False)
    assert (event.name, event.text) == ("remix", "our cafe opens at dawn")


def test_the_message_menu_remixes_role_and_channel_mentions_as_names() -> None:
    target = message_payload("79", CHANNEL_ID, user_payload(*ALICE), "<@&5> meet in <#6> at dawn")
    data = {"name": "Remix with Chorus", "type": 3, "target_id": "79", "resolved": {"messages": {"79": target}}}
    names = MentionNames(roles={"5": "Bakers"}, channels={"6": "kitchen"})
    event = to_command(interaction_payload(2, data, user=ALICE), free_text=False, names=names)
    assert event.text == "@Bakers meet in #kitchen at dawn"


def test_the_message_menu_remixes_the_text_of_an_embed_when_there_is_no_content() -> None:
    # A Chorus result (or another bot's announcement) is an embed with no content: the form opened empty.
    embeds = render_reply(Reply(parts=("Sip @everyone, read.", "Books & brews."), title="slogan · v1", generation_id=4))
    target = message_payload("78", CHANNEL_ID, BOT_USER, "", embeds=[embeds[0]["embeds"][0].to_dict()])
    data = {"name": "Remix with Chorus", "type": 3, "target_id": "78", "resolved": {"messages": {"78": target}}}
    event = to_command(interaction_payload(2, data, user=ALICE), free_text=False)
    assert event.text == "Sip @everyone, read.\n\nBooks & brews."


def test_custom_ids_round_trip_and_fit_discord_limit() -> None:
    assert decode_custom_id(encode_custom_id("rate_up", 42, "+1")) == (":", "rate_up", 42, "+1")
    assert decode_custom_id(encode_custom_id("regenerate", None)) == (":", "regenerate", None, "")
    long = encode_custom_id("brainstorm_idea", 9, "x" * 300, kind="?")
    assert len(long) == 100 and decode_custom_id(long)[0] == "?"
    assert decode_custom_id("someone-elses-button") is None


def test_buttons_selects_and_modals_become_actions() -> None:
    message = message_payload("55", CHANNEL_ID, BOT_USER, "")
    button = interaction_payload(
        3, {"custom_id": "chorus::shorter:7:", "component_type": 2}, user=ALICE, message=message
    )
    clicked = to_action(button)
    assert isinstance(clicked, Action) and clicked.conversation == HERE and clicked.user.id == ALICE[0]
    assert (clicked.action_id, clicked.target_id, clicked.message_ref) == ("shorter", 7, "55")
    select = interaction_payload(3, {"custom_id": "chorus::tone:7:", "values": ["witty"]}, user=ALICE, message=message)
    assert to_action(select).value == "witty"  # type: ignore[union-attr]
    ask = interaction_payload(3, {"custom_id": "chorus?:idea:7:Your idea"}, user=ALICE, message=message)
    assert to_action(ask) == AskFirst("idea", 7, "Your idea")
    modal = {
        "custom_id": "chorusm:idea:7:",
        "components": [{"type": 1, "components": [{"type": 4, "custom_id": "text", "value": " a tea bar "}]}],
    }
    submitted = to_action(interaction_payload(5, modal, user=ALICE))
    assert isinstance(submitted, Action) and (submitted.action_id, submitted.value) == ("idea", "a tea bar")
    assert to_action(interaction_payload(3, {"custom_id": "other"}, user=ALICE)) is None


def _message(content: str, **extra: object) -> dict:
    payload = message_payload("66", CHANNEL_ID, user_payload(*ALICE), content)
    payload["guild_id"] = GUILD_ID
    payload.update(extra)
    return payload


def test_messages_addressed_to_chorus_are_messages_and_the_rest_activity() -> None:
    mention = to_message(_message(f"<@{BOT_ID}> make it rhyme", mentions=[BOT_USER]), bot_id=BOT_ID)
    assert isinstance(mention, Message) and mention.text == "make it rhyme" and mention.message_ref == "66"
    reply = to_message(
        _message("shorter please", message_reference={"message_id": "55"}, referenced_message={"author": BOT_USER}),
        bot_id=BOT_ID,
    )
    assert isinstance(reply, Message) and reply.reply_to == "55"
    in_thread = to_message(_message("one more idea"), bot_id=BOT_ID, thread_parent="123", chorus_thread=True)
    assert isinstance(in_thread, Message) and in_thread.conversation.thread == CHANNEL_ID
    assert in_thread.conversation.channel == "123"
    chatter = to_message(_message("lunch?"), bot_id=BOT_ID)
    assert isinstance(chatter, Activity) and chatter.text == "lunch?"  # kept only as word counts, if opted in
    assert to_message(_message("beep", author={**BOT_USER, "id": "5"}), bot_id=BOT_ID) is None
    assert to_message(_message("", type=7), bot_id=BOT_ID) is None  # a member joined


def test_an_edit_is_the_new_content_read_as_a_new_message_and_a_deletion_names_only_the_message() -> None:
    edited = to_message_edit(
        _message(f"<@{BOT_ID}> kayaking & a picnic", mentions=[BOT_USER]), bot_id=BOT_ID, thread_parent="123"
    )
    assert isinstance(edited, MessageEdited) and edited.text == "kayaking & a picnic" and edited.message_ref == "66"
    assert edited.conversation.thread == CHANNEL_ID and edited.user.name == "alice"
    # Chorus' own posts (it edits them while it streams), updates without content (an embed unfurled), and, without
    # the Message Content intent, a guild message's content that Discord withheld say nothing of an idea's text.
    assert to_message_edit(_message("Seed idea #1", author=BOT_USER), bot_id=BOT_ID) is None
    partial = {key: value for key, value in _message("x").items() if key != "content"}
    assert to_message_edit(partial, bot_id=BOT_ID) is None
    assert to_message_edit(_message(""), bot_id=BOT_ID, content_intent=False) is None
    cleared = to_message_edit(_message(""), bot_id=BOT_ID, content_intent=True)
    assert isinstance(cleared, MessageEdited) and cleared.text == ""
    [deleted] = to_message_deletes({"id": "66", "channel_id": CHANNEL_ID, "guild_id": GUILD_ID}, thread_parent="123")
    assert deleted.message_ref == "66" and deleted.user == UNKNOWN_USER and deleted.conversation.thread == CHANNEL_ID
    bulk = to_message_deletes({"ids": ["66", "67"], "channel_id": CHANNEL_ID, "guild_id": GUILD_ID})
    assert [event.message_ref for event in bulk] == ["66", "67"]


def test_mentions_and_custom_emoji_in_a_message_reach_the_core_as_people_saw_them() -> None:
    # Discord sends `<@id>` and `<:name:id>`; an idea "ask @bob" showed as `<@940…>` in Themes and the summary.
    bob = user_payload("940000000000000002", "bob")
    content = f"<@{BOT_ID}> ask <@940000000000000002> and <@!940000000000000002> <:party:99> <a:wave:98> <@&5> <#6>"
    message = to_message(_message(content, mentions=[BOT_USER, bob]), bot_id=BOT_ID)
    assert isinstance(message, Message)
    assert message.text == "ask @bob and @bob :party: :wave: <@&5> <#6>"
    target = message_payload("77", CHANNEL_ID, user_payload(*ALICE), "<@940000000000000002> opens at dawn <:sun:1>")
    target["mentions"] = [{**bob, "member": {"nick": "Bobby"}}]
    data = {"name": "Remix with Chorus", "type": 3, "target_id": "77", "resolved": {"messages": {"77": target}}}
    assert to_command(interaction_payload(2, data, user=ALICE), free_text=False).text == "@Bobby opens at dawn :sun:"


def test_raw_reactions_become_reactions_but_not_chorus_own() -> None:
    payload = {
        "user_id": ALICE[0],
        "channel_id": CHANNEL_ID,
        "guild_id": GUILD_ID,
        "message_id": "55",
        "emoji": {"id": None, "name": "🔥"},
        "type": 0,
    }
    event = to_reaction(payload, added=True, bot_id=BOT_ID)
    assert isinstance(event, Reaction) and (event.message_ref, event.emoji, event.added) == ("55", "🔥", True)
    custom = {**payload, "emoji": {"id": "99", "name": "party"}}
    assert to_reaction(custom, added=False, bot_id=BOT_ID).emoji == "party:99"  # type: ignore[union-attr]
    assert to_reaction({**payload, "user_id": BOT_ID}, added=True, bot_id=BOT_ID) is None


def test_mentions_are_defused() -> None:
    text = sanitize("hi @everyone and @Here, <@1>, <@!2> and <@&3>, ＠everyone")
    assert "@everyone" not in text and "@Here" not in text and "＠everyone" not in text
    assert "<@1>" not in text and "<@!2>" not in text and "<@&3>" not in text
    # Still readable: only zero-width spaces were added.
    assert text.replace("\u200b", "").replace("＠", "@") == "hi @everyone and @Here, <@1>, <@!2> and <@&3>, @everyone"


def test_ordinary_at_signs_and_angles_are_untouched() -> None:
    text = "Email me@example.com, 3 < 4 > 2, see you @ noon, <#123> is the channel"
    assert sanitize(text) == text


def test_long_text_splits_at_discords_limits() -> None:
    words = " ".join(["word"] * 2000)  # 9999 characters
    chunks = split_text(words, CONTENT_LIMIT)
    assert all(len(c) <= CONTENT_LIMIT for c in chunks) and " ".join(chunks) == words
    pages = render_reply(Reply(parts=(words,), title="story · v1", generation_id=3, actions=result_actions(3)))
    descriptions = [p["embeds"][0].description for p in pages]
    assert len(pages) == 3 and all(len(d) <= DESCRIPTION_LIMIT for d in descriptions)
    assert "view" in pages[-1] and "view" not in pages[0]
    assert all(p["allowed_mentions"].to_dict() == {"parse": []} for p in pages)
    plain = render_reply(Reply.text("x" * 4500))
    assert [len(p["content"]) for p in plain] == [2000, 2000, 500] and not plain[0]["embeds"]


def test_a_result_renders_numbered_variants_buttons_and_tone_select() -> None:
    reply = Reply(
        parts=("one", "two"), title="slogan · v2", footer="⚠ cut short", actions=result_actions(5), generation_id=5
    )
    page = render_reply(reply, ["neutral", "witty"])[0]
    embed = page["embeds"][0].to_dict()
    assert embed["title"] == "slogan · v2" and embed["description"] == "**1.** one\n\n**2.** two"
    assert embed["footer"]["text"] == "⚠ cut short"
    rows = page["view"].to_components()
    labels = [c.get("label") for row in rows for c in row["components"] if c["type"] == 2]
    assert labels == ["Regenerate", "More like this", "Shorter", "Longer", "👍", "👎"]
    select = next(c for row in rows for c in row["components"] if c["type"] == 3)
    assert select["custom_id"] == "chorus::tone:5:" and [o["value"] for o in select["options"]] == ["neutral", "witty"]
    asking = render_reply(Reply(parts=("?",), actions=(ReplyAction("idea", "Add idea", ask="Your idea"),)))[0]
    assert asking["view"].to_components()[0]["components"][0]["custom_id"] == "chorus?:idea::Your idea"


def test_ten_variants_can_each_be_reworked_within_discord_select_limits() -> None:
    # limits.max_variants goes to 10: 30 choices, and a Discord select holds 25, so variants 9 and 10 were cut off.
    reply = Reply(parts=tuple("abcdefghij"), title="slogan · v1", actions=result_actions(5, 10), generation_id=5)
    rows = render_reply(reply, ["neutral", "witty"])[0]["view"].to_components()
    selects = [c for row in rows for c in row["components"] if c["type"] == 3]
    reworks = [s for s in selects if s["custom_id"].startswith("chorus::variant:5:")]
    labels = [o["label"] for s in reworks for o in s["options"]]
    assert len(labels) == 30 and "#10 · Regenerate" in labels and "#9 · Shorter" in labels
    assert all(len(s["options"]) <= 25 for s in selects) and len(rows) <= 5
    ids = [c["custom_id"] for row in rows for c in row["components"]]
    assert len(set(ids)) == len(ids) and all(len(i) <= 100 for i in ids)
    assert all(decode_custom_id(s["custom_id"])[1:3] == ("variant", 5) for s in reworks)


def test_more_than_25_tones_are_all_offered_in_selects_within_discord_limits() -> None:
    # A select holds 25 options: tones 26 and on were silently missing from the result's tone menu.
    tones = [f"tone {i:02d}" for i in range(40)]
    reply = Reply(parts=("a", "b"), title="slogan · v1", actions=result_actions(5, 2), generation_id=5)
    rows = render_reply(reply, tones)[0]["view"].to_components()
    selects = [c for row in rows for c in row["components"] if c["type"] == 3]
    tone_selects = [s for s in selects if decode_custom_id(s["custom_id"])[1] == "tone"]
    assert [o["value"] for s in tone_selects for o in s["options"]] == tones
    assert tone_selects[1]["placeholder"] == "Change tone… (tone 25 – tone 39)"
    assert any(decode_custom_id(s["custom_id"])[1] == "variant" for s in selects), "rework select still fits"
    assert all(len(s["options"]) <= 25 for s in selects) and len(rows) <= 5
    ids = [c["custom_id"] for row in rows for c in row["components"]]
    assert len(set(ids)) == len(ids) and all(len(i) <= 100 for i in ids)


def test_progress_shows_the_queue_then_the_text() -> None:
    queued = render_progress("slogan · v1", [""], "Queued: 2nd in line, about 4 s")["embeds"][0].to_dict()
    assert queued["footer"]["text"] == "Queued: 2nd in line, about 4 s" and "description" not in queued
    writing = render_progress("slogan · v1", ["Hello @everyone"])["embeds"][0].to_dict()
    assert "@everyone" not in writing["description"] and writing["footer"]["text"] == "✍️ writing…"


def test_rate_limit_headers_slow_the_edit_pace() -> None:
    hints = RateHints()
    path = "/api/v10/webhooks/1/tok/messages/@original"
    assert hints.interval("tok", 1.0) == 1.0
    hints.observe(path, {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset-After": "3.0"})
    assert hints.interval("tok", 1.0) == 3.0
    hints.observe(path, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "5.5"})
    assert hints.interval("tok", 1.0) == 5.5
    hints.observe(path, {"X-RateLimit-Remaining": "4", "X-RateLimit-Reset-After": "2.0"})
    assert hints.interval("tok", 1.0) == 1.0 and hints.interval("other", 0.5) == 0.5


def _as_sent(page: dict) -> dict:
    """A page as discord.py sends it (the JSON the fake checks)."""
    body = {"content": page.get("content"), "embeds": [embed.to_dict() for embed in page.get("embeds") or []]}
    if page.get("view") is not None:
        body["components"] = page["view"].to_components()
    return body


def test_replies_at_the_extremes_stay_within_discords_documented_limits() -> None:
    tones = [f"{'t' * 38}{i:02d}" for i in range(80)]
    long = "word " * 3000
    for title, footer in (("", ""), ("T" * 1000, "F" * 5000), ("@everyone " * 40, "@here " * 900)):
        for parts in ((long,), tuple(long[:1500] for _ in range(10)), ("<@123> " * 800,)):
            rich = Reply(
                parts=parts, title=title, footer=footer, actions=result_actions(5, len(parts)), generation_id=5
            )
            pages = [*render_reply(rich, tones), *render_reply(Reply(parts=parts, footer=footer))]
            pages.append(render_progress(title, parts, "⏳ 3 ahead of you"))
            assert [form_problem("POST", "/channels/1/messages", _as_sent(page)) for page in pages] == [""] * len(pages)
