"""Core Reply -> discord.py send/edit kwargs. Pure: no network, no client; tested on the dicts Discord would get.

Results are an embed (title, numbered variants, footer) with buttons, a tone select and, for several variants, a
select that reworks one of them; plain replies are content.
Long text is split at Discord's limits (2000 content, 4096 embed description) into several messages. Every page
carries `allowed_mentions=none`, and mention syntax in generated text is defused as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from adapters.discord.translate import encode_custom_id
from bots import actions
from bots.reply import Reply, ReplyAction

CONTENT_LIMIT = 2000
DESCRIPTION_LIMIT = 4096
TITLE_LIMIT = 256
FOOTER_LIMIT = 1024
SELECT_OPTIONS_LIMIT = 25
OPTION_LIMIT = 100  # characters of a select option's label or value
PLACEHOLDER_LIMIT = 150  # characters of a select's placeholder
BUTTONS_PER_ROW = 5
MAX_ROWS = 5
WRITING = "✍️ writing…"
THINKING = "Chorus is thinking…"

_ZWSP = "\u200b"
_MENTION = re.compile(r"[@\uff20\ufe6b](everyone|here)|<@([!&]?)(\d+)>", re.I)
_PRIMARY = frozenset({actions.REGENERATE})
_TONE = actions.TONE

Page = dict[str, Any]


def no_mentions() -> discord.AllowedMentions:
    return discord.AllowedMentions.none()


def sanitize(text: str) -> str:
    """Defuse @everyone, @here and <@id>/<@&id> so nothing renders as a ping even if allowed_mentions were lost."""

    def defuse(match: re.Match[str]) -> str:
        if match.group(1):
            return "@" + _ZWSP + match.group(1)
        return f"<@{_ZWSP}{match.group(2)}{match.group(3)}>"

    return _MENTION.sub(defuse, text)


def split_text(text: str, limit: int) -> list[str]:
    """Split at the last newline (else space) before the limit; a word longer than the limit is cut."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def body_text(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return "\n\n".join(f"**{i}.** {text}" for i, text in enumerate(parts, 1))


def _is_rich(reply: Reply) -> bool:
    return bool(reply.title) or reply.generation_id is not None


def render_reply(reply: Reply, tones: Sequence[str] = ()) -> list[Page]:
    """One kwargs dict per Discord message; components go on the last one."""
    pages: list[Page]
    text = sanitize(body_text(reply.parts))
    if _is_rich(reply):
        chunks = split_text(text, DESCRIPTION_LIMIT)
        pages = []
        for index, chunk in enumerate(chunks):
            embed = discord.Embed(description=chunk or None)
            if index == 0 and reply.title:
                embed.title = sanitize(reply.title)[:TITLE_LIMIT]
            if index == len(chunks) - 1 and reply.footer:
                embed.set_footer(text=sanitize(reply.footer)[:FOOTER_LIMIT])
            pages.append({"content": None, "embeds": [embed]})
    else:
        if reply.footer:
            text = f"{text}\n{sanitize(reply.footer)}" if text else sanitize(reply.footer)
        pages = [{"content": chunk, "embeds": []} for chunk in split_text(text, CONTENT_LIMIT)]
    for page in pages:
        page["allowed_mentions"] = no_mentions()
    if reply.actions:
        pages[-1]["view"] = build_view(reply.actions, tones)
    return pages


def render_progress(title: str, parts: Sequence[str], status: str = "") -> Page:
    """The message while a result streams: what has arrived so far and a note (queue position, writing…)."""
    text = sanitize(body_text(parts)) if any(parts) else ""
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 1] + "…"
    embed = discord.Embed(title=sanitize(title)[:TITLE_LIMIT] or None, description=text or None)
    embed.set_footer(text=status or (WRITING if text else THINKING))
    return {"content": None, "embeds": [embed], "allowed_mentions": no_mentions()}


def build_view(actions: Sequence[ReplyAction], tones: Sequence[str] = ()) -> discord.ui.View:
    """Buttons (and a tone select) whose custom_ids carry action, generation and value, so they outlive restarts."""
    view = discord.ui.View(timeout=None)
    row, in_row = 0, 0
    tone_action: ReplyAction | None = None
    selects: list[ReplyAction] = []
    for action in actions:
        if action.action_id == _TONE and tones:
            tone_action = action
            continue
        if action.choices:
            selects.append(action)
            continue
        if in_row == BUTTONS_PER_ROW or (action.action_id.startswith("rate_") and in_row and row == 0):
            row, in_row = row + 1, 0
        if action.ask:
            custom_id = encode_custom_id(action.action_id, action.target_id, action.ask, kind="?")
        else:
            custom_id = encode_custom_id(action.action_id, action.target_id, action.value)
        style = discord.ButtonStyle.primary if action.action_id in _PRIMARY else discord.ButtonStyle.secondary
        view.add_item(discord.ui.Button(label=action.label[:80], custom_id=custom_id, style=style, row=row))
        in_row += 1
    if tone_action is not None:
        # Past 25 tones the rest go into further selects, as the rework choices below do.
        row = _add_selects(view, row, tone_action, [(tone, tone) for tone in tones], "Change tone…")
    for action in selects:
        # A select of choices (rework one variant: "#2 · Shorter"): the picked value arrives as the Action's value.
        row = _add_selects(view, row, action, action.choices, action.label)
    return view


def _add_selects(
    view: discord.ui.View, row: int, action: ReplyAction, choices: Sequence[tuple[str, str]], placeholder: str
) -> int:
    """Selects for `choices` ((label, value) pairs), one per row after `row`, 25 options each, as many as the
    message's five rows leave room for; the custom_ids differ by page. Returns the last row used."""
    pages = [choices[i : i + SELECT_OPTIONS_LIMIT] for i in range(0, len(choices), SELECT_OPTIONS_LIMIT)]
    for page, chunk in enumerate(pages):
        if row + 1 >= MAX_ROWS:
            break
        row += 1
        options = [
            discord.SelectOption(label=label[:OPTION_LIMIT], value=value[:OPTION_LIMIT]) for label, value in chunk
        ]
        custom_id = encode_custom_id(action.action_id, action.target_id, str(page) if page else "")
        shown = f"{placeholder} ({chunk[0][0]} – {chunk[-1][0]})" if len(pages) > 1 else placeholder
        view.add_item(
            discord.ui.Select(custom_id=custom_id, placeholder=shown[:PLACEHOLDER_LIMIT], options=options, row=row)
        )
    return row
