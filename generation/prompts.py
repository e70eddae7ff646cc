"""Prompt templates: turn a content kind, a user prompt and the versions so far into chat messages.

Pure string work, no model: the templates themselves live in config (default.toml) so deployments change them
without code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from config import KindSpec
from generation.text import shorten_to
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
    variants = [text for text in variants if text]
    if len(variants) == 1:
        return variants[0]
    return "\n".join(f"{i}. {text}" for i, text in enumerate(variants, 1))


def few_shot(spec: KindSpec, tone: str) -> tuple[Turn, ...]:
    """Up to spec.few_shot worked examples as earlier turns: those written for `tone` first, then tone-free ones."""
    if spec.few_shot <= 0 or not spec.examples:
        return ()
    matching = [e for e in spec.examples if e.tone == tone]
    general = [e for e in spec.examples if not e.tone]
    chosen = (matching + general)[: spec.few_shot]
    return tuple(Turn(render_template(spec, e.prompt, e.tone or "neutral"), (e.answer.strip(),)) for e in chosen)


def refinement_demo(spec: KindSpec, tone: str, direction: str, ask: str) -> tuple[Turn, ...]:
    """A worked "shorter" (or "longer") refinement made from one of the kind's examples: the example answer, `ask`,
    then the same answer cut to its leading sentences or lines (for "longer", the other way round). A small model
    told "make it shorter" often rewrites at the same length; shown one, it follows. Empty when no example of the
    kind can be cut."""
    matching = [e for e in spec.examples if e.tone == tone]
    general = [e for e in spec.examples if not e.tone]
    # Prefer an example the few-shot turns do not already show.
    shown = (matching + general)[: max(spec.few_shot, 0)]
    ordered = [e for e in matching + general + list(spec.examples) if e not in shown] + shown
    for example in ordered:
        full = example.answer.strip()
        short = shorten_to(full, max(2, (len(full.split()) * 2) // 3))
        if short == full or len(short.split()) < 2:
            continue
        first_ask = render_template(spec, example.prompt, example.tone or "neutral")
        before, after = (full, short) if direction == "shorter" else (short, full)
        return (Turn(first_ask, (before,)), Turn(ask, (after,)))
    return ()


def build_messages(
    spec: KindSpec,
    first_ask: str,
    turns: Sequence[Turn] = (),
    ask: str = "",
    *,
    examples: Sequence[Turn] = (),
) -> tuple[ChatMessage, ...]:
    """System prompt, worked examples, the first request, then each earlier answer and follow-up, then the new ask.

    `first_ask` is the rendered template of version 1; `turns` are earlier versions oldest first, where
    turns[0].ask is first_ask itself. Empty (unusable) answers are left out of the context.
    """
    messages = [ChatMessage("system", spec.system)]
    for example in examples:
        messages.append(ChatMessage("user", example.ask))
        messages.append(ChatMessage("assistant", format_answer(example.answer)))
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
    """Tidy one model answer: strip whitespace, an echoed list number (one-line answers only, so a numbered outline
    keeps its first number) and wrapping quotes."""
    text = text.strip()
    if "\n" not in text:
        text = _LEADING_NUMBER.sub("", text, count=1)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES and text.count(text[0]) <= 2:
        text = text[1:-1].strip()
    return text


ONE_LINE_KINDS = frozenset({"slogan", "tagline", "headline", "question"})
_INTRO = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|okay|ok|absolutely|great)\b.*|here(?:'s|’s| is| are)\b.*|.*:\s*)$",
    re.IGNORECASE,
)
_OUTRO = re.compile(
    r"^\W*(?:i hope|hope this|let me know|feel free|note:|\(?word count|\(?\d+ (?:words|characters)\)?$|"
    r"this (?:slogan|tagline|tweet|post|headline|poem|story|description|ad)\b)",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\W*(?:slogan|tagline|headline|tweet|post|title|answer|response|output|poem|story|description|names?|"
    r"rewritten text|new version)\s*\d*\s*[:\-–—]\s+",
    re.IGNORECASE,
)
_INTERJECTION = re.compile(r"^\s*(?:sure|certainly|of course|absolutely|okay)\s*[!,.]\s+(?=\S)", re.IGNORECASE)
_COUNT_NOTE = re.compile(r"\s*\((?:\d+|under \d+) (?:words|characters)\)\s*$", re.IGNORECASE)


def tidy_variant(text: str, kind: str) -> str:
    """Take the answer out of what a small model wraps around it: an intro line ("Here's a slogan:"), a label
    ("Slogan: …"), a closing remark ("I hope this helps"), a word count; one-line kinds keep their first line."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    while len(lines) > 1 and (not lines[0].strip() or (_INTRO.match(lines[0]) and _is_intro(lines[0], kind))):
        lines.pop(0)
    while len(lines) > 1 and (not lines[-1].strip() or _OUTRO.match(lines[-1])):
        lines.pop()
    if lines:
        lines[0] = _INTERJECTION.sub("", lines[0])
    if lines and kind != "lyrics":
        lines[0] = _LABEL.sub("", lines[0], count=1)
    if kind in ONE_LINE_KINDS:
        lines = [next((line for line in lines if line.strip()), "")]
    tidied = _COUNT_NOTE.sub("", "\n".join(lines).strip())
    return clean_variant(tidied) if tidied else text.strip()


def _is_intro(line: str, kind: str) -> bool:
    """An opening line that talks about the answer rather than being part of it (a heading such as "Verse 1:" or an
    outline's first item is part of it)."""
    lowered = line.strip().lower()
    if kind == "lyrics" and re.match(r"^\W*(?:verse|chorus|bridge|pre-chorus|intro|outro)\b", lowered):
        return False
    if kind == "outline" and re.match(r"^\s*(?:\d+[.)]|[-*•]|[ivx]+\.)\s", lowered):
        return False
    if lowered.endswith(":"):
        return len(lowered.split()) <= 14
    return bool(re.match(r"^\W*(?:sure|certainly|of course|okay|ok|absolutely|great)\W*$", lowered)) or (
        lowered.startswith(("here's", "here’s", "here is", "here are")) and len(lowered.split()) <= 14
    )
