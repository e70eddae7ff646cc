"""Core Reply -> Slack Block Kit. Pure functions; tested without Slack.

Every piece of text Chorus sends passes through `escape`, so no user or model text can become a Slack mention
(`<!channel>`, `<!here>`, `<!everyone>`, `<@U…>`, `<!subteam^…>`) or a link: Slack only parses those inside
`<…>`, and `<` never survives. The bare words `@channel`, `@here` and `@everyone` (which Slack turns into
mentions where `link_names` applies) get a zero-width space after the `@`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from adapters.slack.translate import (
    ACTION_PREFIX,
    ASK_CALLBACK,
    REMIX_CALLBACK,
    encode_value,
)
from bots.feedback import TONE
from bots.reply import Reply, ReplyAction

SECTION_LIMIT = 3000  # characters of text in one section block
BLOCK_LIMIT = 50  # blocks in one message
FALLBACK_LIMIT = 3000  # the notification text shown where blocks are not
TITLE_LIMIT = 300  # characters of escaped title shown above a result (a refinement's instruction may be 1000)
ACTIONS_PER_BLOCK = 25
OPTIONS_LIMIT = 100
TRUNCATED = "_… the rest did not fit in one Slack message._"
WORKING = "_⏳ Working on it…_"
CURSOR = " ▍"

Block = dict[str, Any]

_ZWSP = "\u200b"
_AT_WORD = re.compile(r"[@\uff20\ufe6b](?=(everyone|here|channel)\b)", re.IGNORECASE)


def escape(text: str) -> str:
    """Text -> mrkdwn that shows exactly that text and can never ping anyone."""
    text = _AT_WORD.sub("@" + _ZWSP, text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _entity_safe_cut(text: str, cut: int) -> int:
    """`cut`, moved back to before an `&amp;`-style entity it would split."""
    amp = text.rfind("&", max(0, cut - 5), cut)
    return amp if amp != -1 and ";" not in text[amp:cut] else cut


def cap(escaped: str, limit: int) -> str:
    """Escaped mrkdwn shortened to at most `limit` characters with "…", never inside an entity."""
    if len(escaped) <= limit:
        return escaped
    return escaped[: _entity_safe_cut(escaped, limit - 1)] + "…"


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split escaped text into pieces of at most `limit`, at a line break or space when there is one near the end,
    never inside an `&amp;`-style entity."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", limit // 2, limit)
        if cut <= 0:
            cut = text.rfind(" ", limit // 2, limit)
        if cut <= 0:
            cut = _entity_safe_cut(text, limit)
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n ") if text[cut : cut + 1] in ("\n", " ") else text[cut:]
    if text or not pieces:
        pieces.append(text)
    return pieces


def _mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object. `verbatim`: Slack keeps the formatting but does not preprocess the plain text, where it
    would otherwise link-ify names and "automatically parse certain mentions" (Block Kit text object reference)."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text or " ")}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text, "emoji": True}


def parts_text(parts: Sequence[str]) -> str:
    """One part as is; several numbered (variants)."""
    if len(parts) == 1:
        return parts[0]
    return "\n\n".join(f"{i}. {text}" for i, text in enumerate(parts, 1))


def _title_block(title: str) -> Block:
    return _context(f"*{cap(escape(title), TITLE_LIMIT)}*")


def _body_blocks(text: str, room: int, limit: int = SECTION_LIMIT) -> list[Block]:
    blocks = [_section(piece) for piece in split_text(escape(text), limit)]
    if len(blocks) > room:
        blocks = [*blocks[: max(room - 1, 0)], _context(TRUNCATED)]
    return blocks


def action_elements(actions: Sequence[ReplyAction], tones: Sequence[str]) -> list[Block]:
    """Buttons for each action; the tone action becomes a select of the configured tones, an action with choices a
    select of them."""
    elements: list[Block] = []
    for action in actions:
        action_id = f"{ACTION_PREFIX}{action.action_id}"
        if action.action_id == TONE and tones and not action.ask:
            # A select holds 100 options: past that the tones continue in further selects (action ids stay unique).
            for start in range(0, len(tones), OPTIONS_LIMIT):
                chunk = tones[start : start + OPTIONS_LIMIT]
                label = action.label or "Change tone"
                elements.append(
                    {
                        "type": "static_select",
                        "action_id": action_id + (f":{start // OPTIONS_LIMIT + 1}" if start else ""),
                        "placeholder": _plain(f"{label} ({chunk[0]} – {chunk[-1]})" if start else label),
                        "options": [
                            {"text": _plain(tone), "value": encode_value(action.target_id, tone)} for tone in chunk
                        ],
                    }
                )
            continue
        if action.choices:
            # A select of choices (rework one variant: "#2 · Shorter"): the picked value arrives as the value.
            elements.append(
                {
                    "type": "static_select",
                    "action_id": action_id,
                    "placeholder": _plain(action.label),
                    "options": [
                        {"text": _plain(label), "value": encode_value(action.target_id, value)}
                        for label, value in action.choices[:OPTIONS_LIMIT]
                    ],
                }
            )
            continue
        element: Block = {
            "type": "button",
            "action_id": action_id + (":ask" if action.ask else ""),
            "text": _plain(action.label),
            "value": encode_value(action.target_id, action.value, action.ask),
        }
        elements.append(element)
    return elements


def render_blocks(reply: Reply, tones: Sequence[str] = ()) -> list[Block]:
    """The whole reply: title, text split at the section limit, footer, then the action row(s); ≤ 50 blocks."""
    head: list[Block] = [_title_block(reply.title)] if reply.title else []
    tail: list[Block] = [_context(cap(escape(reply.footer), SECTION_LIMIT))] if reply.footer else []
    elements = action_elements(reply.actions, tones)
    for start in range(0, len(elements), ACTIONS_PER_BLOCK):
        tail.append({"type": "actions", "elements": elements[start : start + ACTIONS_PER_BLOCK]})
    body = _body_blocks(parts_text(reply.parts), BLOCK_LIMIT - len(head) - len(tail)) if reply.parts else []
    return [*head, *body, *tail][:BLOCK_LIMIT]


def fallback_text(reply: Reply) -> str:
    """The message's `text`: what notifications and screen readers show."""
    text = " — ".join(piece for piece in (reply.title, parts_text(reply.parts)) if piece) or "Chorus"
    return cap(escape(text), FALLBACK_LIMIT)


def prefixed_commands(text: str, prefix: str, commands: Sequence[str]) -> str:
    """Every `/create`-style mention of a Chorus command as the workspace registered it (`/chorus-create` with
    `command_prefix = "chorus-"`): the bare name may run another app's command."""
    if not prefix or not commands:
        return text
    names = "|".join(re.escape(name) for name in sorted(commands, key=len, reverse=True))
    return re.sub(rf"(?<![\w/-])/({names})\b", lambda match: f"/{prefix}{match[1]}", text)


def with_command_prefix(reply: Reply, prefix: str, commands: Sequence[str]) -> Reply:
    """The reply with its command names as registered (see `prefixed_commands`)."""
    if not prefix or not commands:
        return reply

    def rename(text: str) -> str:
        return prefixed_commands(text, prefix, commands)

    return replace(
        reply, parts=tuple(rename(part) for part in reply.parts), title=rename(reply.title), footer=rename(reply.footer)
    )


def render_message(reply: Reply, tones: Sequence[str] = ()) -> dict[str, Any]:
    """kwargs for chat.postMessage / chat.update / chat.postEphemeral."""
    return {"text": fallback_text(reply), "blocks": render_blocks(reply, tones)}


def render_progress(title: str, parts: Sequence[str], status: str = "") -> dict[str, Any]:
    """A message being streamed: title, the text so far with a cursor, and a queue note while waiting."""
    head = [_title_block(title)] if title else []
    text = parts_text(parts) if any(parts) else ""
    if text:
        # The cursor is added after the split, so every piece leaves room for it.
        body = _body_blocks(text, BLOCK_LIMIT - len(head) - 1, SECTION_LIMIT - len(CURSOR))
        last = body[-1]
        if last["type"] == "section":
            last["text"]["text"] = last["text"]["text"].rstrip() + CURSOR
    else:
        body = []
    note = [_context(f"_⏳ {escape(status)}_" if status else WORKING)] if status or not text else []
    blocks = [*head, *body, *note][:BLOCK_LIMIT]
    fallback = cap(escape(title or "Chorus"), TITLE_LIMIT) + " — " + (escape(status) if status else "writing…")
    return {"text": fallback, "blocks": blocks}


def ask_modal(question: str, metadata: str) -> dict[str, Any]:
    """The modal an asking button opens; the answer comes back as the Action's value."""
    return {
        "type": "modal",
        "callback_id": ASK_CALLBACK,
        "private_metadata": metadata,
        "title": _plain("Chorus", 24),
        "submit": _plain("Send", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {
                "type": "input",
                "block_id": "answer",
                "label": _plain(question, 2000),
                "element": {"type": "plain_text_input", "action_id": "text", "multiline": True, "max_length": 3000},
            }
        ],
    }


def remix_modal(preview: str, tones: Sequence[str], max_variants: int, metadata: str) -> dict[str, Any]:
    """The "Remix with Chorus" shortcut: pick a tone (and how many variants) for the message it was used on."""
    shown = preview if len(preview) <= 500 else preview[:499] + "…"
    return {
        "type": "modal",
        "callback_id": REMIX_CALLBACK,
        "private_metadata": metadata,
        "title": _plain("Remix with Chorus", 24),
        "submit": _plain("Remix", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _section(f">{escape(shown)}" if shown else "_(the message has no text)_"),
            {
                "type": "input",
                "block_id": "tone",
                "label": _plain("Tone"),
                "element": {
                    "type": "static_select",
                    "action_id": "tone",
                    "initial_option": {"text": _plain(tones[0]), "value": tones[0]},
                    "options": [{"text": _plain(t), "value": t} for t in tones[:OPTIONS_LIMIT]],
                },
            },
            {
                "type": "input",
                "block_id": "n",
                "label": _plain("Variants"),
                "element": {
                    "type": "static_select",
                    "action_id": "n",
                    "initial_option": {"text": _plain("1"), "value": "1"},
                    "options": [{"text": _plain(str(n)), "value": str(n)} for n in range(1, max_variants + 1)],
                },
            },
        ],
    }


def home_view(
    commands: Sequence[tuple[str, str]],
    usage: Mapping[str, int],
    settings: Mapping[str, str] | None,
    forget: str = "/forget",
) -> dict[str, Any]:
    """The App Home tab: what Chorus does, the user's own usage, and (for admins) the workspace settings. `forget` is
    the /forget command as the workspace registered it."""
    blocks: list[Block] = [
        {"type": "header", "text": _plain("Chorus — your creative co-pilot", 150)},
        _section(
            "Chorus writes slogans, posts, stories, poems, names and more, right in Slack. Start with a slash "
            "command, then refine with the buttons or by replying in the thread (\u201cmake it rhyme\u201d)."
        ),
        _section("\n".join(f"`{escape(usage_line)}` — {escape(summary)}" for usage_line, summary in commands)),
        {"type": "divider"},
        _section(
            "*Your usage*\n"
            + ("\n".join(f"• {escape(what)}: {n}" for what, n in usage.items()) or "Nothing yet.")
            + f"\n_{forget} deletes everything Chorus stored about you._"
        ),
    ]
    if settings is not None:
        blocks.append({"type": "divider"})
        blocks.append(
            _section(
                "*Workspace settings* (admins)\n"
                + "\n".join(f"• {escape(key)}: `{escape(value)}`" for key, value in settings.items())
            )
        )
    return {"type": "home", "blocks": blocks[:100]}
