"""Core reply -> terminal text. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bots.reply import Reply, ReplyAction

RATE_KEYS = ("+", "-")

# Terminal control sequences, removed whole so no fragment is left: CSI (ESC [ … final byte, or the C1 form),
# OSC / DCS / SOS / PM / APC strings (up to BEL or ST; unterminated ones to the end of the text), other ESC pairs.
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_KEPT_FORMAT = frozenset("\u200d\u200c")  # zero-width (non-)joiners: parts of emoji and of some scripts


def safe_text(text: str) -> str:
    """Only what prints: printable characters, newline and tab. Escape sequences (colours, cursor moves, window
    titles, clipboard writes), C0/C1 controls, backspace and carriage return are removed, so text from a model, a
    user name or a title cannot drive the terminal."""
    text = _SEQUENCES.sub("", text)
    return "".join(ch for ch in text if ch.isprintable() or ch in "\n\t" or ch in _KEPT_FORMAT)


def render_actions(actions: Sequence[ReplyAction]) -> str:
    """`[r] regenerate  [m] more like this  …  [+]/[-] rate`: one line of shortcut keys."""
    items: list[str] = []
    rate = [a for a in actions if a.key in RATE_KEYS]
    for action in actions:
        if action.choices and not action.key:
            # No selects here: one variant is reworked by typing its number first (`2 s`).
            items.append("[2 s] one variant")
            continue
        if action.key in RATE_KEYS or not action.key:
            continue
        items.append(f"[{action.key}] {action.label.lower()}")
    if rate:
        items.append("/".join(f"[{a.key}]" for a in rate) + " rate")
    return "  ".join(items)


def render_title(title: str) -> str:
    return f"── {title} ──"


def render_parts(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return "\n".join(f"{i}. {text}" for i, text in enumerate(parts, 1))


def render_reply(reply: Reply) -> str:
    lines: list[str] = []
    if reply.title:
        lines.append(render_title(reply.title))
    if reply.parts:
        lines.append(render_parts(reply.parts))
    if reply.footer:
        lines.append(reply.footer)
    if reply.actions:
        lines.append(render_actions(reply.actions))
    lines += [f"📎 {attachment.filename} saved to {attachment.path}" for attachment in reply.attachments]
    return "\n".join(lines)
