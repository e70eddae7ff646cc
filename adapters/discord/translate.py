"""Discord gateway payloads -> core events. Pure functions over the raw API shapes (dicts), tested on recorded ones.

custom_ids carry everything a component needs (action, generation id, value), so buttons work after a restart:
`chorus:<action_id>:<generation_id>:<value>` for buttons and selects, `chorus?...` for a button that first asks for
text in a modal, `chorusm:...` for that modal's submission, and `chorusr:remix::` for the "Remix with Chorus" modal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bots.events import Action, Activity, Command, Conversation, Message, MessageDeleted, MessageEdited, Reaction, User

PLATFORM = "discord"
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
THREAD_TYPES = frozenset({10, 11, 12})
CUSTOM_ID_LIMIT = 100
REMIX_MENU = "Remix with Chorus"
# Message types a user writes: default and reply. Joins, pins, thread starters are never answered.
_USER_MESSAGE_TYPES = frozenset({0, 19})

REMIX_MODAL_ID = "chorusr:remix::"
CUSTOM_ID = re.compile(r"chorus(?P<kind>[:?mr]):(?P<action>[a-z0-9_]+):(?P<generation>\d*):(?P<value>.*)", re.S)


@dataclass(frozen=True)
class AskFirst:
    """A click on a button whose action needs a line of text: the adapter opens a modal with this label."""

    action_id: str
    target_id: int | None
    label: str


def encode_custom_id(action_id: str, generation_id: int | None, value: str = "", *, kind: str = ":") -> str:
    """Pack an action into a custom_id (at most 100 characters; the value is cut to fit)."""
    head = f"chorus{kind}:{action_id}:{generation_id if generation_id is not None else ''}:"
    return head + value[: CUSTOM_ID_LIMIT - len(head)]


def decode_custom_id(custom_id: str) -> tuple[str, str, int | None, str] | None:
    """(kind, action_id, generation_id, value), or None when the id is not one of ours."""
    match = CUSTOM_ID.fullmatch(custom_id)
    if match is None:
        return None
    generation = match["generation"]
    return match["kind"], match["action"], int(generation) if generation else None, match["value"]


def defers_at_once(
    payload: Mapping[str, Any], generating_commands: frozenset[str], generating_actions: frozenset[str]
) -> bool:
    """Will this interaction certainly start a generation, so it can be deferred before anything else runs?

    Slash and menu commands that generate, and buttons/selects whose action generates; never a button that opens a
    modal (a modal must be the first response) and never anything that is answered with a message at once.
    """
    data = payload.get("data") or {}
    if payload.get("type") == 2:
        # A message-menu command first asks for the tone in a modal, which has to be the first response.
        return data.get("type", 1) == 1 and str(data.get("name", "")) in generating_commands
    if payload.get("type") == 3:
        decoded = decode_custom_id(str(data.get("custom_id", "")))
        return decoded is not None and decoded[0] == ":" and decoded[1] in generating_actions
    if payload.get("type") == 5:
        return str(data.get("custom_id", "")) == REMIX_MODAL_ID and "remix" in generating_commands
    return False


def _member_user(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    member = payload.get("member") or {}
    return member.get("user") or payload.get("user") or payload.get("author") or {}


def to_user(payload: Mapping[str, Any]) -> User:
    """The acting user; a moderator is someone with Manage Channels or Manage Guild in this channel."""
    raw = _member_user(payload)
    member = payload.get("member") or {}
    permissions = int(member.get("permissions") or 0)
    name = raw.get("global_name") or raw.get("username") or str(raw.get("id", "?"))
    return User(id=str(raw.get("id", "")), name=name, is_moderator=bool(permissions & (MANAGE_CHANNELS | MANAGE_GUILD)))


def to_conversation(payload: Mapping[str, Any]) -> Conversation:
    """A guild channel, or a thread (its parent is the channel). DMs use the workspace "@me"."""
    channel = payload.get("channel") or {}
    channel_id = str(payload.get("channel_id") or channel.get("id") or "")
    workspace = str(payload.get("guild_id") or "@me")
    if channel.get("type") in THREAD_TYPES and channel.get("parent_id"):
        return Conversation(PLATFORM, workspace, str(channel["parent_id"]), thread=channel_id)
    return Conversation(PLATFORM, workspace, channel_id)


def _option_value(option: Mapping[str, Any]) -> str:
    value = option.get("value")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class MentionNames:
    """Names for the `<@id>`, `<@&id>` and `<#id>` a text mentions, by id: what the adapter knows of the guild."""

    users: Mapping[str, str] = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)


_ANY_MENTION = re.compile(r"<(@!?|@&|#)(\d+)>")
_COMMAND_MENTION = re.compile(r"</([\w-]+(?: [\w-]+){0,2}):\d+>")
# How a mention reads when its name is not known: never the raw id, which means nothing to the model.
UNKNOWN_MENTION = {"@": "@someone", "@!": "@someone", "@&": "@a role", "#": "#a channel"}


def mentioned_ids(text: str) -> list[tuple[str, str]]:
    """(kind, id) for each user (`@`), role (`@&`) and channel (`#`) mention in `text`, once each, in order."""
    found: dict[tuple[str, str], None] = {}
    for match in _ANY_MENTION.finditer(text):
        found[("@" if match[1] == "@!" else match[1], match[2])] = None
    return list(found)


def resolved_names(payload: Mapping[str, Any]) -> MentionNames:
    """The names an interaction's `resolved` data carries (members' nicknames first)."""
    resolved = (payload.get("data") or {}).get("resolved") or {}
    users = {
        str(id_): str(user.get("global_name") or user.get("username") or "")
        for id_, user in (resolved.get("users") or {}).items()
    }
    for id_, member in (resolved.get("members") or {}).items():
        if member.get("nick"):
            users[str(id_)] = str(member["nick"])
    roles = {str(id_): str(role.get("name") or "") for id_, role in (resolved.get("roles") or {}).items()}
    channels = {str(id_): str(chan.get("name") or "") for id_, chan in (resolved.get("channels") or {}).items()}
    return MentionNames(users, roles, channels)


def readable_mentions(text: str, names: MentionNames) -> str:
    """Discord's mention markup as Discord shows it: `<@id>` as `@name`, `<@&id>` as `@role`, `<#id>` as
    `#channel`, `</create:id>` as `/create`; one whose name is not known reads `@someone`, `@a role` or
    `#a channel`, so the model never sees a raw id (and never writes one back as a ping)."""

    def shown(match: re.Match[str]) -> str:
        kind, id_ = match[1], match[2]
        table = names.roles if kind == "@&" else names.channels if kind == "#" else names.users
        name = table.get(id_, "")
        if not name:
            return UNKNOWN_MENTION[kind]
        return f"{'#' if kind == '#' else '@'}{name.lstrip('@#')}"

    return _COMMAND_MENTION.sub(r"/\1", _ANY_MENTION.sub(shown, text))


def to_command(payload: Mapping[str, Any], *, free_text: bool, names: MentionNames | None = None) -> Command:
    """A slash command or the "Remix with Chorus" message command. A free-text command's `text` option is its text.
    Mentions in option text read as names (`names`, else the interaction's `resolved` data)."""
    data = payload.get("data") or {}
    conversation, user = to_conversation(payload), to_user(payload)
    if data.get("type") == 3:  # message context menu: remix the target message's text
        target = (data.get("resolved") or {}).get("messages", {}).get(str(data.get("target_id")), {})
        text = readable_content(target, places=names) or embed_text(target)
        return Command(conversation, user, "remix", text=text, extras={"payload": payload})
    known = resolved_names(payload)
    if names is not None:
        known = MentionNames(
            {**names.users, **known.users}, {**names.roles, **known.roles}, {**names.channels, **known.channels}
        )
    options = {
        str(o["name"]): readable_mentions(_option_value(o), known) if o.get("type", 3) == 3 else _option_value(o)
        for o in data.get("options") or []
        if "name" in o
    }
    text = ""
    if free_text:
        text = options.pop("text", "")
    return Command(
        conversation, user, str(data.get("name", "")), text=text, options=options, extras={"payload": payload}
    )


def to_action(payload: Mapping[str, Any]) -> Action | AskFirst | None:
    """A button, select or modal submission with one of our custom_ids; None for anything else."""
    data = payload.get("data") or {}
    decoded = decode_custom_id(str(data.get("custom_id", "")))
    if decoded is None:
        return None
    kind, action_id, generation_id, value = decoded
    if kind == "r":
        return None
    if kind == "?":
        return AskFirst(action_id, generation_id, value or "Your text")
    if kind == "m":
        value = modal_values(data).get("text", "")
    elif data.get("values"):
        value = str(data["values"][0])
    message = payload.get("message") or {}
    return Action(
        to_conversation(payload),
        to_user(payload),
        action_id,
        value=value,
        target_id=generation_id,
        message_ref=str(message["id"]) if message.get("id") else None,
        extras={"payload": payload},
    )


def modal_values(data: Mapping[str, Any]) -> dict[str, str]:
    """custom_id -> submitted text for every text input of a modal (in action rows or labels)."""
    values: dict[str, str] = {}
    for row in data.get("components") or []:
        for component in row.get("components") or [row.get("component") or {}]:
            if component.get("custom_id") and component.get("value") is not None:
                values[str(component["custom_id"])] = str(component["value"]).strip()
    return values


def to_remix_command(payload: Mapping[str, Any]) -> Command | None:
    """The "Remix with Chorus" modal: the message text (editable) and the tone, as a /remix command."""
    data = payload.get("data") or {}
    if str(data.get("custom_id", "")) != REMIX_MODAL_ID:
        return None
    values = modal_values(data)
    options = {"tone": values["tone"]} if values.get("tone") else {}
    return Command(
        to_conversation(payload),
        to_user(payload),
        "remix",
        text=values.get("text", ""),
        options=options,
        extras={"payload": payload},
    )


def _message_conversation(payload: Mapping[str, Any], thread_parent: str | None) -> Conversation:
    workspace = str(payload.get("guild_id") or "@me")
    channel_id = str(payload.get("channel_id", ""))
    if thread_parent:
        return Conversation(PLATFORM, workspace, thread_parent, thread=channel_id)
    return Conversation(PLATFORM, workspace, channel_id)


def _strip_mention(text: str, bot_id: str) -> str:
    return re.sub(rf"<@!?{re.escape(bot_id)}>", "", text).strip()


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
# How render numbers the variants of a result in an embed ("**2.** text"); like the zero-width space that defuses
# mentions there, it is not part of the text.
_VARIANT_NUMBER = re.compile(r"^\*\*\d+\.\*\* ", re.M)


def embed_text(message: Mapping[str, Any]) -> str:
    """The text of a message's embeds (a Chorus result, another bot's post), for a message that has no content."""
    descriptions = [str(embed.get("description") or "") for embed in message.get("embeds") or []]
    text = "\n\n".join(description for description in descriptions if description)
    return _VARIANT_NUMBER.sub("", text).replace("\u200b", "")


def readable_content(payload: Mapping[str, Any], *, bot_id: str = "", places: MentionNames | None = None) -> str:
    """A message's content as Discord shows it: `<@id>` of a mentioned user as `@name` (nickname first), a custom
    emoji as `:name:`, and roles and channels named in `places` (the guild the adapter knows) as `@role` and
    `#channel`, so ideas, requests, refinements and remixes carry names, not ids. Chorus' own mention, and roles and
    channels not in `places`, stay as they are."""
    names: dict[str, str] = {}
    for mentioned in payload.get("mentions") or []:
        if str(mentioned.get("id")) == bot_id:
            continue
        member = mentioned.get("member") or {}
        name = member.get("nick") or mentioned.get("global_name") or mentioned.get("username")
        if mentioned.get("id") and name:
            names[str(mentioned["id"])] = str(name)
    content = str(payload.get("content") or "")
    content = _USER_MENTION.sub(lambda m: f"@{names[m[1]]}" if m[1] in names else m[0], content)
    if places is not None:
        content = _PLACE_MENTION.sub(lambda m: _place(m, places), content)
    return _CUSTOM_EMOJI.sub(r":\1:", content)


_PLACE_MENTION = re.compile(r"<(@&|#)(\d+)>")


def _place(match: re.Match[str], places: MentionNames) -> str:
    role = match[1] == "@&"
    name = (places.roles if role else places.channels).get(match[2])
    return f"{'@' if role else '#'}{name}" if name else match[0]


def to_message(
    payload: Mapping[str, Any],
    *,
    bot_id: str,
    thread_parent: str | None = None,
    chorus_thread: bool = False,
    places: MentionNames | None = None,
) -> Message | Activity | None:
    """MESSAGE_CREATE -> Message when it is addressed to Chorus (reply to it, mention, DM, a Chorus thread), else
    Activity (counted only). Bots, Chorus itself and system messages give None."""
    author = payload.get("author") or {}
    if author.get("bot") or str(author.get("id")) == bot_id or payload.get("webhook_id"):
        return None
    if payload.get("type", 0) not in _USER_MESSAGE_TYPES:
        return None
    conversation = _message_conversation(payload, thread_parent)
    user = to_user(payload)
    reference = payload.get("referenced_message") or {}
    replied_to_chorus = str((reference.get("author") or {}).get("id", "")) == bot_id
    reply_to = (payload.get("message_reference") or {}).get("message_id")
    mentioned = any(str(m.get("id")) == bot_id for m in payload.get("mentions") or [])
    direct = not payload.get("guild_id")
    text = _strip_mention(readable_content(payload, bot_id=bot_id, places=places), bot_id)
    extras = {"payload": payload}
    if replied_to_chorus or mentioned or direct or chorus_thread:
        return Message(
            conversation,
            user,
            text,
            reply_to=str(reply_to) if reply_to and replied_to_chorus else None,
            message_ref=str(payload.get("id")),
            extras=extras,
        )
    at = _parse_time(payload.get("timestamp"))
    return Activity(conversation, user, at, text=text, extras=extras)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def emoji_text(emoji: Mapping[str, Any]) -> str:
    """Unicode emoji as themselves, custom ones as `name:id`."""
    if emoji.get("id"):
        return f"{emoji.get('name') or ''}:{emoji['id']}"
    return str(emoji.get("name") or "")


def to_reaction(
    payload: Mapping[str, Any], *, added: bool, bot_id: str, thread_parent: str | None = None
) -> Reaction | None:
    """MESSAGE_REACTION_ADD/REMOVE (raw, so uncached messages count). Chorus' own reactions give None."""
    user_id = str(payload.get("user_id", ""))
    if user_id == bot_id:
        return None
    member = payload.get("member") or {}
    raw_user = member.get("user") or {}
    name = raw_user.get("global_name") or raw_user.get("username") or user_id
    return Reaction(
        _message_conversation(payload, thread_parent),
        User(id=user_id, name=name),
        message_ref=str(payload.get("message_id", "")),
        emoji=emoji_text(payload.get("emoji") or {}),
        added=added,
        extras={"payload": payload},
    )


def to_message_edit(
    payload: Mapping[str, Any], *, bot_id: str, thread_parent: str | None = None, content_intent: bool = True
) -> MessageEdited | None:
    """MESSAGE_UPDATE -> MessageEdited: a person's message with its new content, read as MESSAGE_CREATE reads it.

    None for Chorus' own and other bots' messages (Chorus edits its posts while it streams), and for updates that
    say nothing of the text: one without `content` (an embed unfurled; Discord may send a partial message), or, without
    the Message Content intent, a guild message's empty content, which Discord withholds rather than the person
    cleared."""
    author = payload.get("author") or {}
    if author.get("bot") or str(author.get("id")) == bot_id or payload.get("webhook_id"):
        return None
    if "content" not in payload or payload.get("type", 0) not in _USER_MESSAGE_TYPES or not payload.get("id"):
        return None
    if not payload["content"] and not content_intent and payload.get("guild_id"):
        return None
    return MessageEdited(
        _message_conversation(payload, thread_parent),
        to_user(payload),
        str(payload["id"]),
        _strip_mention(readable_content(payload, bot_id=bot_id), bot_id),
        extras={"payload": payload},
    )


def to_message_deletes(payload: Mapping[str, Any], *, thread_parent: str | None = None) -> list[MessageDeleted]:
    """MESSAGE_DELETE (`id`) or MESSAGE_DELETE_BULK (`ids`, a moderator's purge) -> one MessageDeleted each. Discord
    says neither whose message it was nor who deleted it."""
    ids = payload.get("ids") if "ids" in payload else [payload.get("id")]
    conversation = _message_conversation(payload, thread_parent)
    return [MessageDeleted(conversation, str(id_), extras={"payload": payload}) for id_ in ids or () if id_]
