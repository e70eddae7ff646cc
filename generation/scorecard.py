"""The quality scorecard: explicit checks a copywriter would apply to one variant of a content kind.

Pure string work (relevance takes precomputed embeddings), so the studio's best-of-k picks candidates with the same
checks that bench/quality.py reports. Each check answers "would a person use this as it is?" for one aspect.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from generation.text import is_degenerate

CHECKS = ("complete", "not_degenerate", "no_meta", "format", "on_topic", "distinct")
# Cosine similarity (all-MiniLM-L6-v2) between a variant and its brief below which it is off topic. Unrelated
# sentence pairs score about 0.0-0.15 with this model; short on-topic slogans score 0.3 and up.
ON_TOPIC_MIN = 0.2
# Two variants this similar (difflib ratio of their normalized text) are one variant shown twice.
DUPLICATE_RATIO = 0.85


@dataclass(frozen=True)
class KindFormat:
    """What a kind's answer looks like: one line, prose, lines (poem), or a list (names, outline)."""

    shape: str = "prose"  # line | prose | lines | list
    max_words: int = 0
    max_chars: int = 0
    min_lines: int = 0
    min_items: int = 0
    min_sentences: int = 0
    labels: tuple[str, ...] = ()  # line labels that belong to the kind ("Chorus:" in lyrics)


FORMATS: dict[str, KindFormat] = {
    "slogan": KindFormat("line", max_words=12),
    "tagline": KindFormat("line", max_words=12),
    "headline": KindFormat("line", max_words=16),
    "tweet": KindFormat("prose", max_chars=280),
    "post": KindFormat("prose", min_sentences=2, max_chars=2000),
    "story": KindFormat("prose", min_sentences=3),
    "description": KindFormat("prose", min_sentences=2, max_chars=1200),
    "ad": KindFormat("lines", min_lines=2, labels=("headline", "body", "cta", "call to action")),
    "poem": KindFormat("lines", min_lines=4),
    "lyrics": KindFormat(
        "lines", min_lines=6, labels=("verse", "verse 1", "verse 2", "chorus", "bridge", "pre-chorus", "outro")
    ),
    "names": KindFormat("list", min_items=3),
    "outline": KindFormat("list", min_items=3),
    "remix": KindFormat("prose"),
    "prompt": KindFormat("prose", max_chars=400),
    "idea": KindFormat("prose", max_chars=500),
    "question": KindFormat("line"),
}


def format_for(kind: str) -> KindFormat:
    return FORMATS.get(kind, KindFormat())


_SENTENCE_END = re.compile(r"[.!?…]['\"”’)\]]*$")
_ENDS_WITH_SYMBOL = re.compile(r"(?:[#@]\w+|https?://\S+|[^\w\s,;:(\[{/\\&+=<-])$", re.UNICODE)
_DANGLING = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "that",
        "which",
        "who",
        "whom",
        "whose",
        "your",
        "our",
        "my",
        "their",
        "its",
        "his",
        "her",
        "this",
        "these",
        "those",
        "into",
        "onto",
        "than",
        "so",
        "if",
        "when",
        "while",
        "because",
        "like",
        "very",
        "more",
        "most",
        "not",
        "can",
        "will",
        "would",
        "should",
        "could",
        "may",
        "might",
        "must",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "i",
        "we",
        "you",
        "they",
        "he",
        "she",
        "it's",
        "it’s",
        "let's",
        "let’s",
        "just",
        "where",
        "how",
        "what",
        "whether",
        "both",
        "either",
        "neither",
        "each",
        "every",
        "some",
        "any",
        "no",
    ]
)
_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?…]+[.!?…]+", re.UNICODE)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•‣–—]|[IVX]+\.|[A-Za-z][.)])\s+\S")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines() if line.strip()]


def _label(line: str) -> str:
    match = re.match(r"^\s*\**\[?([A-Za-z][A-Za-z -]{0,20}?)\s*\d*\]?\**\s*:", line)
    return match.group(1).strip().lower() if match else ""


def line_is_complete(line: str) -> bool:
    """A line ends a sentence, or ends on a whole content word (not "and", "the", a comma or a colon)."""
    line = line.strip().rstrip("*_").strip()
    if not line:
        return False
    if _SENTENCE_END.search(line) or _ENDS_WITH_SYMBOL.search(line):
        return True
    if line[-1] in ",;:-–—(/&":
        return False
    words = _WORD.findall(line)
    return bool(words) and words[-1].lower() not in _DANGLING


def is_complete(text: str, kind: str) -> bool:
    """Not cut mid-sentence or mid-line. Prose must end a sentence (or a hashtag, link or emoji); one-line and
    multi-line kinds may end a line without punctuation, but not on a dangling word."""
    lines = _lines(text)
    if not lines:
        return False
    last = lines[-1]
    shape = format_for(kind).shape
    if shape == "prose":
        return bool(_SENTENCE_END.search(last.rstrip("*_ ")) or _ENDS_WITH_SYMBOL.search(last))
    return line_is_complete(last)


_META = [
    re.compile(p, re.IGNORECASE | re.MULTILINE)
    for p in (
        r"^\W*(?:sure|certainly|of course|okay|ok|absolutely|great)\b[,!.]",
        r"\bhere(?:'s|’s| is| are)\b[^.!?\n]{0,60}(?::|\b(?:slogans?|taglines?|tweets?|posts?|headlines?|stor(?:y|ies)|"
        r"poems?|lyrics|ad copy|names|outline|description|version|rewrite|options?)\b)",
        r"\bas an ai\b",
        r"\b(?:i hope (?:this|you|that)|let me know|feel free to|hope this helps|i can help)\b",
        r"\bunder \d+ (?:words|characters)\b",
        r"\b(?:answer with|word count|character count|in \d+ words)\b",
        r"\(\d+ (?:words|characters)\)",
        r"\b(?:the (?:new|rewritten|revised|shorter|longer) version|shorter version|longer version)\b",
        r"^\W*(?:answer|output|response|note|explanation|rewritten text|result)\s*:",
        r"\[(?:insert|your|name|company|product|link)[^\]]*\]",
    )
]


def has_meta(text: str, kind: str, asks: Sequence[str] = ()) -> bool:
    """Talk about the answer instead of the answer: "Here's a slogan:", "Sure!", "(9 words)", a label that names
    the kind ("Slogan:"), placeholders ("[Your Name]"), or five words in a row copied from an instruction."""
    if any(pattern.search(text) for pattern in _META):
        return True
    allowed = set(format_for(kind).labels)
    kind_words = {kind, kind.rstrip("s"), "slogan", "tagline", "tweet", "headline", "title", "poem", "story", "post"}
    for line in _lines(text):
        label = _label(line)
        if label and label not in allowed and (label in kind_words or label.rstrip("s") in kind_words):
            return True
    words = [w.lower() for w in _WORD.findall(text)]
    grams = {tuple(words[i : i + 5]) for i in range(len(words) - 4)}
    for ask in asks:
        ask_words = [w.lower() for w in _WORD.findall(ask)]
        if any(tuple(ask_words[i : i + 5]) in grams for i in range(len(ask_words) - 4)):
            return True
    return False


def list_items(text: str) -> list[str]:
    """The items of a list answer: numbered or bulleted lines, else comma/semicolon/line-separated entries."""
    lines = _lines(text)
    bullets = [line for line in lines if _LIST_ITEM.match(line)]
    if len(bullets) >= 2:
        return [_LIST_ITEM.sub(lambda m: m.group(0)[-1], line, count=1).strip() for line in bullets]
    if len(lines) >= 3:
        return lines
    pieces = [piece.strip(" .\"'“”") for piece in re.split(r"[,;\n]|\band\b", text) if piece.strip(" .\"'“”")]
    return pieces


def _distinct_names(text: str) -> list[str]:
    names: list[str] = []
    for item in list_items(text):
        name = re.split(r"\s[-–—:]\s|:\s", item, maxsplit=1)[0].strip(" *\"'“”.")
        if name and len(name.split()) <= 4 and name.lower() not in {n.lower() for n in names}:
            names.append(name)
    return names


def has_format(text: str, kind: str) -> bool:
    """The kind's shape: a slogan is one line of at most 12 words, a tweet at most 280 characters, names at least
    three distinct names, an outline at least three items, a poem at least four lines…"""
    spec = format_for(kind)
    lines = _lines(text)
    if not lines:
        return False
    words = _WORD.findall(text)
    if spec.shape == "line" and len(lines) != 1:
        return False
    if spec.max_words and len(words) > spec.max_words:
        return False
    if spec.max_chars and len(text.strip()) > spec.max_chars:
        return False
    content_lines = [line for line in lines if not (_label(line) and len(_WORD.findall(line)) <= 3)]
    if spec.min_lines and len(content_lines) < spec.min_lines:
        return False
    if spec.min_sentences and len(_SENTENCE.findall(text + " ")) < spec.min_sentences:
        return False
    if kind == "names":
        return len(_distinct_names(text)) >= spec.min_items
    return not spec.min_items or len(list_items(text)) >= spec.min_items


def _normalized(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def near_duplicate(a: str, b: str) -> bool:
    first, second = _normalized(a), _normalized(b)
    if not first or not second:
        return first == second
    return first == second or difflib.SequenceMatcher(None, first, second).ratio() >= DUPLICATE_RATIO


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


@dataclass(frozen=True)
class Score:
    """Which checks one variant passed; `relevance` is its cosine similarity to the brief (None: not measured)."""

    checks: dict[str, bool]
    relevance: float | None = None
    failed: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    @property
    def rank(self) -> float:
        """For choosing among candidates: checks passed first, relevance to break ties."""
        return sum(self.checks.values()) + (self.relevance or 0.0) * 0.5


def score_variant(
    text: str,
    kind: str,
    *,
    asks: Sequence[str] = (),
    relevance: float | None = None,
    others: Sequence[str] = (),
) -> Score:
    """Every check on one variant. `asks` are the instructions it was written from (echoes are meta-text);
    `others` the variants shown beside it (a near-copy is not distinct); relevance None skips on_topic."""
    checks = {
        "complete": is_complete(text, kind),
        "not_degenerate": not is_degenerate(text) and not repeats_lines(text),
        "no_meta": not has_meta(text, kind, asks),
        "format": has_format(text, kind),
        "on_topic": relevance is None or relevance >= ON_TOPIC_MIN,
        "distinct": not any(near_duplicate(text, other) for other in others),
    }
    return Score(checks, relevance, tuple(name for name, ok in checks.items() if not ok))


def repeats_lines(text: str) -> bool:
    """One line said three or more times and making up most of the text (a loop, not a chorus)."""
    lines = [_normalized(line) for line in _lines(text)]
    lines = [line for line in lines if line]
    if len(lines) < 3:
        return False
    most = max(lines.count(line) for line in set(lines))
    return most >= 3 and most * 2 > len(lines)
