"""What a brainstorm asks the model: seed ideas, theme names, "yes-and" ideas and next steps.

Each ask is one short request at `Priority.BRAINSTORM`, so commands in other channels go first. Answers are cleaned
(blocklist, mentions) and tidied; when the model gives nothing usable, a plain fallback keeps the session going.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence

from generation.moderation import Blocklist, clean_output
from generation.prompts import clean_variant
from generation.types import ChatMessage, GenerationError, GenerationRequest, Generator, Priority

_log = logging.getLogger(__name__)

LABEL_SYSTEM = "You name groups of ideas with a short category name of two to four words."
# Two worked examples: a small model copies their shape (a short noun phrase) far more reliably than it follows
# rules; answers that merely repeat an example are rejected.
LABEL_EXAMPLES = (
    ("- a bike repair workshop\n- guided cycling tours", "bike, cycling, tours", "Cycling trips"),
    ("- paint the office walls\n- new desks and chairs", "office, desks, walls", "Office makeover"),
)
IDEA_SYSTEM = (
    "You take part in a brainstorm. You answer with exactly one new idea in one sentence, under 25 words, "
    "and nothing else."
)
STEP_SYSTEM = "You help a team act on its brainstorm. You answer with one concrete next step in one sentence."
LABEL_IDEAS = 6
LABEL_IDEA_CHARS = 90
_PREFIX = re.compile(r"^\s*(?:title|theme|name|idea|answer|next step)\s*[:\-–]\s*", re.IGNORECASE)
_FILLER = (
    "a an the and or but for with from into onto our your their this that these those some more most very just "
    "also then than what when where which while about after before over under like make let lets get have has "
    "will would could should maybe really every each them they we you it its is are was be been being can do "
    "does not no yes all any one two three of to in on at by as so if up out off too"
)
_STOPWORDS = frozenset(_FILLER.split())


async def complete(
    generator: Generator,
    messages: Sequence[ChatMessage],
    *,
    blocklist: Blocklist,
    max_new_tokens: int,
    seed: int,
    temperature: float = 0.7,
    stop: Sequence[str] = ("\n",),
    conversation_key: str = "",
    time_budget_s: float = 30.0,
) -> str:
    """One cleaned completion at brainstorm priority; '' when the model fails or says nothing."""
    request = GenerationRequest(
        messages=tuple(messages),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=0.95,
        stop=tuple(stop),
        seed=seed,
        time_budget_s=time_budget_s,
        priority=Priority.BRAINSTORM,
        conversation_key=conversation_key,
    )
    parts: list[str] = []
    try:
        async for chunk in generator.stream(request):
            parts.append(chunk.text)
            if chunk.finish_reason == "error":
                _log.warning("brainstorm generation failed: %s", chunk.error)
                return ""
    except GenerationError as exc:
        _log.warning("brainstorm generation failed: %s", exc)
        return ""
    text = "".join(parts).strip().split("\n")[0]
    return clean_variant(clean_output(_PREFIX.sub("", text), blocklist))


def short(text: str, limit: int) -> str:
    """One line, at most `limit` characters, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def sentences(text: str, limit: int = 220) -> str:
    """Whole sentences up to `limit` characters (a small model rambles past what was asked); cut with an ellipsis
    only when the first sentence alone is longer."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", flat[: limit + 1])]
    return flat[: ends[-1]] if ends else short(flat, limit)


def tidy_label(text: str) -> str:
    """A model's title as 1–4 words, capitalised, without wrapping quotes or a trailing full stop."""
    words: list[str] = []
    for word in re.sub(r"[*_#`\"“”]", "", text).strip(" .,:;!-–").split():
        if word.lower().strip(",;:") not in {w.lower().strip(",;:") for w in words}:
            words.append(word)
    words = words[:4]
    while words and words[-1].lower().strip(",;:") in _STOPWORDS:
        words.pop()
    if not words:
        return ""
    label = " ".join(words).strip(" .,:;!-–")
    return label[:1].upper() + label[1:]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOPWORDS}


def theme_keywords(texts: Sequence[str], others: Sequence[str] = (), count: int = 3) -> list[str]:
    """The words that set this theme apart: frequent in its ideas, rare in the other themes' (class TF-IDF)."""
    inside: Counter[str] = Counter()
    for text in texts:
        inside.update(_words(text))
    outside: Counter[str] = Counter()
    for text in others:
        outside.update(_words(text))
    total = len(texts) + len(others)

    def score(word: str) -> float:
        return inside[word] / max(1, len(texts)) * math.log(1.0 + total / (inside[word] + outside[word]))

    ranked = sorted(inside, key=lambda w: (inside[w] < 2, -score(w), w))
    return ranked[:count]


def keyword_label(texts: Sequence[str], others: Sequence[str] = ()) -> str:
    """A fallback theme name from the theme's most distinctive words."""
    top = theme_keywords(texts, others, count=2)
    return " & ".join(top).capitalize() if top else "Other ideas"


def label_messages(texts: Sequence[str], keywords: Sequence[str]) -> tuple[ChatMessage, ...]:
    messages = [ChatMessage("system", LABEL_SYSTEM)]
    for ideas, words, answer in LABEL_EXAMPLES:
        messages.append(ChatMessage("user", f"Ideas:\n{ideas}\nKey words: {words}\nCategory:"))
        messages.append(ChatMessage("assistant", answer))
    ideas = "\n".join(f"- {short(text, LABEL_IDEA_CHARS)}" for text in texts[:LABEL_IDEAS])
    messages.append(ChatMessage("user", f"Ideas:\n{ideas}\nKey words: {', '.join(keywords)}\nCategory:"))
    return tuple(messages)


def _grounded(label: str, texts: Sequence[str]) -> bool:
    """Does the label share a word stem (first 4 letters) with the ideas? Guards against invented names."""
    stems = {w[:4] for text in texts for w in _words(text)}
    return any(w[:4] in stems for w in _words(label)) and label not in {a for _, _, a in LABEL_EXAMPLES}


async def label_candidates(
    generator: Generator,
    texts: Sequence[str],
    *,
    others: Sequence[str] = (),
    blocklist: Blocklist,
    count: int = 3,
    seed: int = 0,
    key: str = "",
) -> list[str]:
    """Distinct 1–4 word names for one theme: the model's usable answers (one careful, the rest freer), or a name
    from the theme's distinctive words when none is usable."""
    keywords = theme_keywords(texts, others)
    messages = label_messages(texts, keywords)
    answers = await asyncio.gather(
        *(
            complete(
                generator,
                messages,
                blocklist=blocklist,
                max_new_tokens=12,
                temperature=0.2 if n == 0 else 0.8,
                seed=seed * 7 + n,
                conversation_key=key,
            )
            for n in range(count)
        )
    )
    names: list[str] = []
    for answer in answers:
        label = tidy_label(answer)
        if label and _grounded(label, texts) and label.lower() not in {name.lower() for name in names}:
            names.append(label)
    return names or [keyword_label(texts, others)]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def distinct_ideas(candidates: Sequence[str], avoid: Sequence[str]) -> list[str]:
    """Drop repeats, echoes of the topic or of the ideas built on, and answers too short to be an idea."""
    seen = {_norm(text) for text in avoid}
    kept: list[str] = []
    for text in candidates:
        norm = _norm(text)
        if len(norm) >= 8 and norm not in seen:
            seen.add(norm)
            kept.append(text)
    return kept


async def seed_ideas(
    generator: Generator, topic: str, count: int, *, blocklist: Blocklist, seed: int, key: str = ""
) -> list[str]:
    """Up to `count` different opening ideas for the topic, asked for together (a batching engine runs them at once)."""
    angles = ("a practical", "a surprising", "a low-cost", "an ambitious", "a playful")
    asks = [
        (ChatMessage("system", IDEA_SYSTEM), ChatMessage("user", f"Topic: {topic}\nGive {angles[i % 5]} idea."))
        for i in range(count)
    ]
    answers = await asyncio.gather(
        *(
            complete(generator, ask, blocklist=blocklist, max_new_tokens=48, seed=seed + i, conversation_key=key)
            for i, ask in enumerate(asks)
        )
    )
    return distinct_ideas([sentences(a) for a in answers if a], (topic,))


async def yes_and_ideas(
    generator: Generator,
    topic: str,
    top: Sequence[str],
    count: int,
    *,
    blocklist: Blocklist,
    seed: int,
    key: str = "",
) -> list[str]:
    """Up to `count` ideas that build on or combine the top-voted ones ("yes, and…")."""
    if not top:
        return []
    asks = []
    for i in range(count):
        first = top[i % len(top)]
        second = top[(i + 1) % len(top)] if len(top) > 1 and i % 2 else ""
        basis = (
            f"Combine these two ideas: 1) {short(first, 200)} 2) {short(second, 200)}"
            if second
            else (f"Build on this idea and take it further: {short(first, 300)}")
        )
        asks.append((ChatMessage("system", IDEA_SYSTEM), ChatMessage("user", f"Topic: {topic}\n{basis}")))
    answers = await asyncio.gather(
        *(
            complete(generator, ask, blocklist=blocklist, max_new_tokens=48, seed=seed + i, conversation_key=key)
            for i, ask in enumerate(asks)
        )
    )
    return distinct_ideas([sentences(a) for a in answers if a], (*top, topic))


async def next_steps(
    generator: Generator, topic: str, top: Sequence[str], *, blocklist: Blocklist, seed: int, key: str = ""
) -> list[str]:
    """One concrete next step for each of the top ideas; a plain suggestion where the model gives none."""
    asks = [
        (
            ChatMessage("system", STEP_SYSTEM),
            ChatMessage("user", f"Topic: {topic}\nChosen idea: {short(idea, 300)}\nWhat is the first next step?"),
        )
        for idea in top
    ]
    answers = await asyncio.gather(
        *(
            complete(generator, ask, blocklist=blocklist, max_new_tokens=40, seed=seed + i, conversation_key=key)
            for i, ask in enumerate(asks)
        )
    )
    steps: list[str] = []
    for idea, answer in zip(top, answers, strict=True):
        fallback = f"Pick an owner for “{short(idea, 60)}” and agree a first small test."
        answer = sentences(answer, 200)
        steps.append(answer if answer and answer not in steps else fallback)
    return steps
