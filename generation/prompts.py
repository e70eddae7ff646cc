"""Prompt templates: turn a content kind, a user prompt and the versions so far into chat messages.

Pure string work, no model: the templates themselves live in config (default.toml) so deployments change them
without code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from config import KindSpec
from generation.types import ChatMessage


@dataclass(frozen=True)
class Turn:
    """One earlier exchange: what was asked and what came back (the variants of a version)."""

    ask: str
    answer: tuple[str, ...]


def render_template(spec: KindSpec, prompt: str, tone: str) -> str:
    # A tone of "neutral" reads badly inside a sentence ("a neutral slogan"), so it drops out.
    tone_word = "" if tone == "neutral" else tone
    text = spec.template.replace("{tone}", tone_word).replace("{prompt}", prompt.strip())
    return re.sub(r"  +", " ", text).strip()


def format_answer(variants: Sequence[str]) -> str:
    if len(variants) == 1:
        return variants[0]
    return "\n".join(f"{i}. {text}" for i, text in enumerate(variants, 1))


def build_messages(
    spec: KindSpec, first_ask: str, turns: Sequence[Turn] = (), ask: str = ""
) -> tuple[ChatMessage, ...]:
    """System prompt, the first request, then each earlier answer and follow-up, then the new ask (if any).

    `first_ask` is the rendered template of version 1; `turns` are earlier versions oldest first, where
    turns[0].ask is first_ask itself.
    """
    messages = [ChatMessage("system", spec.system)]
    if not turns:
        messages.append(ChatMessage("user", first_ask))
        return tuple(messages)
    for turn in turns:
        messages.append(ChatMessage("user", turn.ask))
        messages.append(ChatMessage("assistant", format_answer(turn.answer)))
    messages.append(ChatMessage("user", ask))
    return tuple(messages)


_LEADING_NUMBER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_QUOTES = "\"'“”‘’«»"


def clean_variant(text: str) -> str:
    """Tidy one model answer: strip whitespace, an echoed list number and wrapping quotes."""
    text = text.strip()
    text = _LEADING_NUMBER.sub("", text, count=1)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text
