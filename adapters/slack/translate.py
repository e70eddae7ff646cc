"""Slack payload -> core event. Pure functions over the JSON Slack sends; tested on recorded payloads.

Slack's `ts` is unique only within a channel, so every message id Chorus stores is `"<channel>:<ts>"`.
Buttons carry their action, generation and value in the element's `action_id` and `value`, so a click on a
result posted before a restart still reaches the right generation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

import emoji

from bots.events import (
    UNKNOWN_USER,
    Action,
    Activity,
    Command,
    Conversation,
    Message,
    MessageDeleted,
    MessageEdited,
    Reaction,
    User,
    plain_emoji,
)

PLATFORM = "slack"
ACTION_PREFIX = "chorus:"
ASK_CALLBACK = "chorus_ask"
REMIX_SHORTCUT = "chorus_remix"
REMIX_CALLBACK = "chorus_remix_modal"
# Message subtypes that are still a person writing; edits, joins, bot posts and the like are not.
_PERSON_SUBTYPES = frozenset({"thread_broadcast", "file_share", "me_message"})
# A message changed or deleted after it was posted: `message` events with these subtypes (see to_message_change).
CHANGE_SUBTYPES = frozenset({"message_changed", "message_deleted"})

Payload = Mapping[str, Any]


class SlashCommandBody(TypedDict, total=False):
    """The form fields of a slash command request (only those Chorus reads)."""

    command: str
    text: str
    team_id: str
    channel_id: str
    user_id: str
    user_name: str
    response_url: str
    trigger_id: str


class MessageEvent(TypedDict, total=False):
    """The `event` of a `message` Events API callback."""

    type: str
    subtype: str
    user: str
    bot_id: str
    text: str
    ts: str
    thread_ts: str
    parent_user_id: str
    channel: str
    channel_type: str


class ButtonValue(TypedDict, total=False):
    """What a Chorus button or select option carries in its `value`: generation id and the action's value."""

    g: int | None
    v: str
    # The question of an asking button: a click opens a modal with it instead of acting at once.
    q: str


def message_ref(channel: str, ts: str) -> str:
    return f"{channel}:{ts}"


def split_ref(ref: str) -> tuple[str, str]:
    """`"C1:1700000000.000100"` -> `("C1", "1700000000.000100")`."""
    channel, _, ts = ref.partition(":")
    if not channel or not ts:
        raise ValueError(f"not a Slack message id: {ref!r}")
    return channel, ts


# Slack's markup in the text it sends (docs.slack.dev "Formatting text"): links, mentions, channels, user groups and
# dates are `<target|label>` or `<target>`; a `<` or `>` the person typed arrives as `&lt;`/`&gt;`.
_MARKUP = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_SPECIAL_MENTIONS = frozenset({"here", "channel", "everyone"})


SOMEONE = "someone"  # who an unlabeled `<@U…>` mention names when the person's display name is not known


def _as_shown(match: re.Match[str], names: Mapping[str, str]) -> str:
    """What Slack shows for one `<…>`: a link's label (or its address), `@name`, `#channel`, a date's fallback. A
    person mentioned without a label is `@` their display name from `names`, else `@someone`: never a raw id."""
    target, label = match.group(1), match.group(2)
    if target.startswith("@"):
        return f"@{label or names.get(target[1:]) or SOMEONE}"
    if target.startswith("#"):
        return f"#{label}" if label else target
    if target.startswith("!"):
        word = target[1:].split("^", 1)[0]
        if word in _SPECIAL_MENTIONS:
            return f"@{word}"
        return label or ""
    return label or target.removeprefix("mailto:")


def mentioned_users(text: str) -> list[str]:
    """The ids of people mentioned without a label (`<@U0BOB>`), in order, once each: the names to look up."""
    found: dict[str, None] = {}
    for match in _MARKUP.finditer(text):
        target, label = match.group(1), match.group(2)
        if target.startswith("@") and not label and len(target) > 1:
            found[target[1:]] = None
    return list(found)


def unescape(text: str, names: Mapping[str, str] | None = None) -> str:
    """Slack's message and command text as the person saw it: links, mentions and channels as their text, and the
    `&`, `<` and `>` Slack escapes as themselves; the core (the model, idea lists, history) wants what was typed.
    `names`: display names by user id, for mentions Slack sent without one."""
    known = names or {}
    text = _MARKUP.sub(lambda match: _as_shown(match, known), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_user(user_id: str, name: str, admins: Collection[str]) -> User:
    return User(id=user_id, name=name or user_id, is_moderator=user_id in admins)


def command_name(command: str, prefix: str = "") -> str:
    """`/chorus-create` with prefix `chorus-` -> `create`."""
    name = command.lstrip("/").lower()
    return name.removeprefix(prefix.lower()) if prefix else name


def to_command(
    body: SlashCommandBody | Payload, admins: Collection[str], prefix: str = "", names: Mapping[str, str] | None = None
) -> Command:
    conversation = Conversation(PLATFORM, body.get("team_id", ""), body.get("channel_id", ""))
    user = slack_user(body.get("user_id", ""), body.get("user_name", ""), admins)
    return Command(
        conversation=conversation,
        user=user,
        name=command_name(body.get("command", ""), prefix),
        text=unescape(body.get("text", ""), names).strip(),
        extras={"payload": body},
    )


def encode_value(generation_id: int | None, value: str, ask: str = "") -> str:
    """A button's or option's `value`. Slack counts characters (an option value holds 150), so non-ASCII text is
    kept as is: escaped, a 40-character Cyrillic tone took 240."""
    data: dict[str, Any] = {"g": generation_id, "v": value}
    if ask:
        data["q"] = ask
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode_value(raw: str) -> ButtonValue:
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        decoded = {}
    if not isinstance(decoded, dict):
        decoded = {}
    generation_id = decoded.get("g")
    return ButtonValue(
        g=generation_id if isinstance(generation_id, int) else None,
        v=str(decoded.get("v") or ""),
        q=str(decoded.get("q") or ""),
    )


def _interaction_user(body: Payload, admins: Collection[str]) -> User:
    user = body.get("user") or {}
    return slack_user(user.get("id", ""), user.get("username") or user.get("name", ""), admins)


def _team(body: Payload) -> str:
    return (body.get("team") or {}).get("id") or body.get("team_id") or (body.get("view") or {}).get("team_id", "")


def to_action(body: Payload, admins: Collection[str]) -> Action | None:
    """A click on a Chorus button or tone select (`block_actions`); None for anything that is not ours."""
    actions = body.get("actions") or []
    if not actions:
        return None
    element = actions[0]
    action_id = element.get("action_id", "")
    if not action_id.startswith(ACTION_PREFIX):
        return None
    raw = (element.get("selected_option") or {}).get("value") if element.get("type") == "static_select" else None
    value = decode_value(raw if raw is not None else element.get("value", ""))
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id", "")
    ts = message.get("ts") or container.get("message_ts")
    # A result's refinements go into its thread: the thread root is the result itself unless it sits in one.
    thread = message.get("thread_ts") or container.get("thread_ts") or (None if container.get("is_ephemeral") else ts)
    return Action(
        conversation=Conversation(PLATFORM, _team(body), channel, thread),
        user=_interaction_user(body, admins),
        action_id=action_id.removeprefix(ACTION_PREFIX).split(":", 1)[0],
        value=value.get("v", ""),
        target_id=value.get("g"),
        message_ref=message_ref(channel, ts) if channel and ts else None,
        extras={"payload": body},
    )


def asked_question(body: Payload) -> str:
    """The question when the clicked element is an asking button (then Chorus opens a modal), else ''."""
    actions = body.get("actions") or []
    if not actions or actions[0].get("type") != "button":
        return ""
    return decode_value(actions[0].get("value", "")).get("q", "")


def ask_metadata(action: Action) -> str:
    """The modal's private_metadata: where the answer belongs, so the submission can be routed like a click."""
    conversation = action.conversation
    return json.dumps(
        {
            "a": action.action_id,
            "g": action.target_id,
            "c": conversation.channel,
            "t": conversation.thread,
            "m": action.message_ref,
        },
        separators=(",", ":"),
    )


def _metadata(view: Payload) -> dict[str, Any]:
    try:
        decoded = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _input_values(view: Payload) -> dict[str, str]:
    """Every input's value in a submitted view, by action_id (text inputs and selects)."""
    found: dict[str, str] = {}
    for block in ((view.get("state") or {}).get("values") or {}).values():
        for action_id, state in block.items():
            if state.get("type") == "static_select":
                found[action_id] = (state.get("selected_option") or {}).get("value", "")
            else:
                found[action_id] = state.get("value") or ""
    return found


def to_submission(body: Payload, admins: Collection[str]) -> Action | Command | None:
    """A submitted Chorus modal: the answer to an asking button (an Action) or the remix shortcut (a Command)."""
    view = body.get("view") or {}
    meta = _metadata(view)
    values = _input_values(view)
    conversation = Conversation(PLATFORM, _team(body), meta.get("c", ""), meta.get("t"))
    user = _interaction_user(body, admins)
    if view.get("callback_id") == REMIX_CALLBACK:
        options = {"text": meta.get("x", ""), "tone": values.get("tone", "")}
        if values.get("n"):
            options["n"] = values["n"]
        return Command(conversation, user, "remix", options=options, extras={"payload": body})
    if view.get("callback_id") != ASK_CALLBACK or not meta.get("a"):
        return None
    generation_id = meta.get("g")
    return Action(
        conversation=conversation,
        user=user,
        action_id=str(meta["a"]),
        value=values.get("text", "").strip(),
        target_id=generation_id if isinstance(generation_id, int) else None,
        message_ref=meta.get("m"),
        extras={"payload": body},
    )


METADATA_LIMIT = 3000  # characters of a view's private_metadata


def remix_metadata(body: Payload, max_chars: int, names: Mapping[str, str] | None = None) -> str:
    """What the remix modal needs to remember of the message it was started on. Slack keeps 3000 characters, so the
    text is shortened until the JSON fits; cutting the JSON itself lost where the remix goes."""
    message = body.get("message") or {}
    text = unescape(message.get("text", ""), names)[:max_chars]
    channel = (body.get("channel") or {}).get("id", "")
    thread = message.get("thread_ts")
    while True:
        encoded = json.dumps({"c": channel, "t": thread, "x": text}, separators=(",", ":"), ensure_ascii=False)
        over = len(encoded.encode()) - METADATA_LIMIT  # bytes: within the limit however Slack counts
        if over <= 0 or not text:
            return encoded
        text = text[: max(0, len(text) - over)]


def to_message(
    event: MessageEvent | Payload,
    team_id: str,
    bot_user_id: str,
    admins: Collection[str],
    names: Mapping[str, str] | None = None,
) -> Message | Activity | None:
    """A person's message: addressed to Chorus (DM, mention, a thread under a Chorus post) or channel activity.

    None for edits, joins, bot posts and Chorus' own messages, which mean nothing to the core.
    """
    subtype = event.get("subtype")
    user_id = event.get("user", "")
    if (subtype and subtype not in _PERSON_SUBTYPES) or event.get("bot_id") or not user_id or user_id == bot_user_id:
        return None
    channel, ts = event.get("channel", ""), event.get("ts", "")
    thread_ts = event.get("thread_ts")
    in_thread = bool(thread_ts) and thread_ts != ts
    text = event.get("text", "")
    mention = f"<@{bot_user_id}>" if bot_user_id else ""
    addressed = (
        event.get("channel_type") == "im"
        or (mention and mention in text)
        or (in_thread and bot_user_id and event.get("parent_user_id") == bot_user_id)
    )
    conversation = Conversation(PLATFORM, team_id, channel, thread_ts if in_thread else None)
    user = slack_user(user_id, "", admins)
    if not addressed:
        at = datetime.fromtimestamp(float(ts or 0), UTC)
        return Activity(
            conversation, user, at=at, text=" ".join(unescape(text, names).split()), extras={"payload": event}
        )
    return Message(
        conversation=conversation,
        user=user,
        text=_text_as_read(text, bot_user_id, names),
        reply_to=message_ref(channel, thread_ts) if in_thread and thread_ts else None,
        message_ref=message_ref(channel, ts),
        extras={"payload": event},
    )


def _text_as_read(text: str, bot_user_id: str, names: Mapping[str, str] | None) -> str:
    """A message's text as the core gets it: Chorus' mention removed, markup as shown, whitespace collapsed."""
    if bot_user_id:
        text = text.replace(f"<@{bot_user_id}>", " ")
    return " ".join(unescape(text, names).split())


def to_message_change(
    event: Payload,
    team_id: str,
    bot_user_id: str,
    admins: Collection[str],
    names: Mapping[str, str] | None = None,
) -> MessageEdited | MessageDeleted | None:
    """A `message` event with subtype `message_changed` (the message as it is now in `message`, the one before in
    `previous_message`) or `message_deleted` (`deleted_ts`, and `previous_message`): a person's message edited or
    deleted. None for Chorus' own and other bots' messages, and for changes that leave the text as it was (a link
    preview added, a reply counted under a thread's first message)."""
    subtype = event.get("subtype")
    channel = str(event.get("channel", ""))
    before = event.get("previous_message") or {}
    if subtype == "message_changed":
        message = event.get("message") or {}
        user_id = str(message.get("user", ""))
        ts = str(message.get("ts", ""))
        text = str(message.get("text", ""))
        if message.get("subtype") not in (None, *_PERSON_SUBTYPES) or message.get("bot_id") or not user_id or not ts:
            return None
        if user_id == bot_user_id or ("text" in before and before.get("text") == text):
            return None
        return MessageEdited(
            _change_conversation(team_id, channel, ts, message.get("thread_ts")),
            slack_user(user_id, "", admins),
            message_ref(channel, ts),
            _text_as_read(text, bot_user_id, names),
            extras={"payload": event},
        )
    if subtype == "message_deleted":
        ts = str(event.get("deleted_ts", ""))
        user_id = str(before.get("user", ""))
        if not ts or before.get("bot_id") or (user_id and user_id == bot_user_id):
            return None
        user = slack_user(user_id, "", admins) if user_id else UNKNOWN_USER
        conversation = _change_conversation(team_id, channel, ts, before.get("thread_ts"))
        return MessageDeleted(conversation, message_ref(channel, ts), user, extras={"payload": event})
    return None


def _change_conversation(team_id: str, channel: str, ts: str, thread_ts: Any) -> Conversation:
    in_thread = bool(thread_ts) and thread_ts != ts
    return Conversation(PLATFORM, team_id, channel, str(thread_ts) if in_thread else None)


def unicode_emoji(name: str) -> str:
    """Slack's emoji name (`+1`, `thumbsup::skin-tone-3`, `heart`) as the Unicode emoji Chorus counts; a workspace's
    custom emoji keeps its name."""
    bare = name.strip(":").split("::", 1)[0]
    unicode = emoji.emojize(f":{bare}:", language="alias")
    return plain_emoji(unicode if unicode != f":{bare}:" else bare)


def to_reaction(event: Payload, team_id: str, admins: Collection[str]) -> Reaction | None:
    """`reaction_added` / `reaction_removed` on a message; reactions on files are not Chorus' business."""
    item = event.get("item") or {}
    if item.get("type") != "message" or not item.get("channel") or not item.get("ts"):
        return None
    return Reaction(
        conversation=Conversation(PLATFORM, team_id, item["channel"]),
        user=slack_user(event.get("user", ""), "", admins),
        message_ref=message_ref(item["channel"], item["ts"]),
        emoji=unicode_emoji(event.get("reaction", "")),
        added=event.get("type") == "reaction_added",
        extras={"payload": event},
    )
