"""Core reply -> terminal text. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

from bots.reply import Reply, ReplyAction

RATE_KEYS = ("+", "-")


def render_actions(actions: Sequence[ReplyAction]) -> str:
    """`[r] regenerate  [m] more like this  …  [+]/[-] rate`: one line of shortcut keys."""
    items: list[str] = []
    rate = [a for a in actions if a.key in RATE_KEYS]
    for action in actions:
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
