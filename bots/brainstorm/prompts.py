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
from collections.abc import Callable, Sequence

import numpy as np

from bots.brainstorm.clustering import as_matrix
from generation.moderation import Blocklist, clean_output
from generation.prompts import clean_variant
from generation.text import is_degenerate, short, trim_to_complete
from generation.types import ChatMessage, Embedder, GenerationError, GenerationRequest, Generator, Priority

_log = logging.getLogger(__name__)

LABEL_SYSTEM = "You name groups of ideas with a short category name of two to four words."
# Two worked examples from everyday domains far from most brainstorms: a small model copies their shape (a short noun
# phrase naming the kind of idea, not one idea's words) far more reliably than it follows rules; answers that merely
# repeat an example are rejected.
LABEL_EXAMPLES = (
    (
        "- plant tomatoes along the fence\n- a compost bin behind the shed\n- raised beds for herbs and salad",
        "tomatoes, compost, raised beds",
        "Vegetable growing",
    ),
    (
        "- a bake sale at the school gate\n- a sponsored walk for the parents\n- a raffle with donated prizes",
        "bake sale, sponsored walk, raffle",
        "Fundraising events",
    ),
)
IDEA_SYSTEM = (
    "You take part in a brainstorm. You answer with exactly one new idea in one sentence, under 25 words, "
    "and nothing else."
)
STEP_SYSTEM = "You help a team act on its brainstorm. You answer with one concrete next step in one sentence."
LABEL_IDEAS = 4
LABEL_IDEA_CHARS = 80
MAX_LABEL_WORDS = 4
# How much nearer its theme (in cosine margin) a keyword name must be to beat the model's name: MiniLM favours names
# that repeat the ideas' words, while the model's ("Wellness retreat") more often names the kind of idea.
MODEL_NAME_ALLOWANCE = 0.15
_PREFIX = re.compile(r"^\s*(?:title|theme|name|idea|answer|next step)\s*[:\-–]\s*", re.IGNORECASE)
_FILLER = (
    "a an the and or but for with from into onto our your their this that these those some more most very just "
    "also then than what when where which while about after before over under like make let lets get have has "
    "will would could should maybe really every each them they we you it its is are was be been being can do "
    "does not no yes all any one two three of to in on at by as so if up out off too"
)
_STOPWORDS = frozenset(_FILLER.split())
# Words too general to name a theme by (they still count when matching a name to its ideas).
_GENERIC_WORDS = (
    "add feel feels new next big bigger small little lots lot good better best great nice use using want need put "
    "take give going come see try keep way thing things stuff something everyone everybody people person actually "
    "proper right maybe whole own sure instead"
)
_GENERIC = frozenset(_GENERIC_WORDS.split())
# Words that never name a theme on their own (general English, not any one topic): time words, general adjectives
# and adverbs, and light verbs. Inside a keyphrase they still count ("free trial", "opening hours", "local schools").
_LONE_WORDS = (
    "day days week weeks month months year years time times hour hours morning mornings evening evenings night "
    "nights weekend weekends daily weekly monthly yearly today tomorrow "
    "local old first last short long high low full real simple easy hard quick fast slow large huge extra different "
    "same special main awful bad lovely "
    "make making made get getting got giving start starting run running bring bringing show showing ask asking tell "
    "call done doing goes said say says along around away back together"
)
_LONE = frozenset(_LONE_WORDS.split())
# Nouns that end like an adverb.
_LY_NOUNS_WORDS = "family assembly supply butterfly monopoly anomaly reply jelly belly bully holly lily rally"
_LY_NOUNS = frozenset(_LY_NOUNS_WORDS.split())
# Contractions written without their apostrophe ("whats on", "doesnt") are filler too.
_NAMELESS_WORDS = "whats thats doesnt dont cant isnt wont didnt theyre youre ive weve hes shes theres"
_NAMELESS = frozenset(_NAMELESS_WORDS.split())
# Answers about the task instead of an idea: "combine these two ideas", "in a single sentence", "Here is an idea".
_META = re.compile(
    r"\b(?:(?:these|both|the|those) (?:two |2 )?ideas?\b|idea (?:1|2|one|two)\b|(?:a |one )?single sentence|"
    r"in one sentence|here(?:'s| is| are)\b|sure[,!]|as an ai\b|i (?:can|would|will|suggest)\b|"
    r"(?:new|concrete|one) idea\b|takes? it further|mix(?:es)? both|"
    r"combin\w* (?:them|it|this|both)\b|\bthis idea\b|\b(?:the|an?|this) (?:obvious |best |right |simple )?answer\b|"
    r"\bexample of how\b|\bin this (?:conversation|story|chat|thread)\b|"
    r"\b(?:in|of) (?:the|this|a) (?:[\w-]+ )?conversation\b|"
    r"\b(?:that|this|it)(?:'s|’s| is) (?:an?|the) (?:\w+ ){0,2}(?:idea|example|way|question)\b|"
    r"\b(?:is|be) an? (?:\w+ ){0,2}idea\b|\byour idea\b|\bthis raises\b|"
    # A story about oneself rather than a proposal: "I was recently in…", "My unexpected idea is…".
    r"^\W*(?:i|i'm|i’m|i've|i'd|i was|my)\b)",
    re.IGNORECASE,
)
# A sentence's end: . ! ? … with any closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
# Seed and yes-and answers asked for a second time when too few of the first could be used.
IDEA_TRIES = 2


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
    whole_sentences: bool = True,
) -> str:
    """One cleaned completion at brainstorm priority; '' when the model fails or says nothing. With
    `whole_sentences`, an answer a budget cut is trimmed to its complete sentences, or dropped."""
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
    finish = None
    try:
        async for chunk in generator.stream(request):
            parts.append(chunk.text)
            finish = chunk.finish_reason or finish
            if chunk.finish_reason == "error":
                _log.warning("brainstorm generation failed: %s", chunk.error)
                return ""
    except GenerationError as exc:
        _log.warning("brainstorm generation failed: %s", exc)
        return ""
    first, newline, _ = "".join(parts).strip().partition("\n")
    # A budget that ran out on the first line cut it: keep its complete sentences, or nothing.
    cut = whole_sentences and finish in ("length", "time") and not newline
    trimmed = trim_to_complete(first, stopped_early=cut)
    if trimmed.cut and trimmed.text == first.rstrip():
        _log.debug("brainstorm answer cut mid-sentence and dropped: %r", first)
        return ""
    if whole_sentences and is_heading(trimmed.text):
        _log.debug("brainstorm answer is a heading or lead-in, dropped: %r", first)
        return ""
    text = clean_variant(clean_output(_PREFIX.sub("", trimmed.text), blocklist))
    return "" if is_degenerate(text) else text


def sentences(text: str, limit: int = 220) -> str:
    """Whole sentences up to `limit` characters (a small model rambles past what was asked); '' when the first
    sentence alone is longer, since half a sentence is no idea."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", flat[: limit + 1])]
    return flat[: ends[-1]] if ends else ""


def tidy_label(text: str) -> str:
    """A model's title as 1–4 words, capitalised, without wrapping quotes or a trailing full stop."""
    words: list[str] = []
    for word in re.sub(r"[*_#`\"“”]", "", text).strip(" .,:;!-–").split():
        if word.lower().strip(",;:") not in {w.lower().strip(",;:") for w in words}:
            words.append(word)
    words = words[:MAX_LABEL_WORDS]
    while words and words[-1].lower().strip(",;:") in _STOPWORDS:
        words.pop()
    if not words:
        return ""
    label = " ".join(words).strip(" .,:;!-–")
    return label[:1].upper() + label[1:]


def stem(word: str) -> str:
    """A crude stem so 'libraries', 'library' and 'librarian' count as one word when matching names to ideas."""
    word = word.lower()
    for suffix in ("ians", "ian", "ies", "ing", "ers", "es", "ed", "er", "s", "y"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """The words of a text that carry meaning (three letters or more, not filler), lower-cased, in order."""
    return [w for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOPWORDS]


def _words(text: str) -> set[str]:
    return set(content_words(text))


def topic_stems(topic: str) -> frozenset[str]:
    """The stems of the topic's own words: every idea shares them, so they neither group nor name a theme."""
    return frozenset(stem(word) for word in content_words(topic))


def _is_lone_word(word: str) -> bool:
    """A word too general to name a theme by itself: a time word, a general adjective or adverb, a light verb."""
    return word in _LONE or (len(word) > 5 and word.endswith("ly") and word not in _LY_NOUNS)


def idea_terms(text: str, excluded: frozenset[str] = frozenset()) -> dict[str, str]:
    """An idea's terms, each once: the stem of every content word and of every two adjacent content words
    ("free trial", "opening hours"), mapped to how the idea writes it. Topic words and filler are left out, and a
    two-word term never spans punctuation."""
    terms: dict[str, str] = {}
    lowered = text.lower()
    previous: re.Match[str] | None = None
    for match in re.finditer(r"[^\W\d_]+", lowered):
        word = match[0]
        usable = len(word) >= 3 and word not in _STOPWORDS and word not in _NAMELESS and stem(word) not in excluded
        if not usable:
            previous = None
            continue
        root = stem(word)
        if word not in _GENERIC:
            terms.setdefault(root, word)
        if previous is not None and not lowered[previous.end() : match.start()].strip():
            first = previous[0]
            if not (_is_lone_word(first) or first in _GENERIC) or not (_is_lone_word(word) or word in _GENERIC):
                terms.setdefault(f"{stem(first)} {root}", f"{first} {word}")
        previous = match
    return terms


def class_keywords(groups: Sequence[Sequence[str]], *, topic: str = "", count: int = 4) -> list[list[str]]:
    """The terms that set each group apart, as BERTopic's class-based TF-IDF does: a term's share of the group's
    terms times log(1 + average terms per group / its count over all groups), each idea counting a term once. Topic
    words never count. A two-word keyphrase that most uses of its words belong to ("author talks") stands in for
    them; a time word, general adjective or light verb ("day", "local") is never a keyword on its own."""
    excluded = topic_stems(topic)
    counts: list[Counter[str]] = []
    surface: dict[str, Counter[str]] = {}
    first_seen: list[dict[str, int]] = []
    for texts in groups:
        counter: Counter[str] = Counter()
        seen: dict[str, int] = {}
        for position, text in enumerate(texts):
            for root, written in idea_terms(text, excluded).items():
                counter[root] += 1
                seen.setdefault(root, position)
                surface.setdefault(root, Counter())[written] += 1
        counts.append(counter)
        first_seen.append(seen)
    totals: Counter[str] = Counter()
    for counter in counts:
        totals.update(counter)
    average = sum(totals.values()) / max(1, len(groups))
    keywords = []
    for counter, seen in zip(counts, first_seen, strict=True):
        size = max(1, sum(counter.values()))
        score = {root: (n / size) * math.log(1.0 + average / totals[root]) for root, n in counter.items()}
        # A phrase most of whose words' uses it accounts for names them better than either word alone.
        phrases = {
            root: root.split()
            for root, n in counter.items()
            if " " in root and n >= 2 and all(2 * n > counter[part] for part in root.split())
        }
        stands_for = {part: phrase for phrase, parts in phrases.items() for part in parts}
        candidates = {
            root: score[stands_for[root]] if root in stands_for else score[root]
            for root in counter
            if (" " not in root and not _is_lone_word(surface[root].most_common(1)[0][0])) or root in phrases
        }
        # A term one idea uses once describes that idea, not the theme: terms shared by two or more come first; among
        # the rest, those of the theme's most typical ideas (the groups come most typical first).
        ranked = sorted(candidates, key=lambda root: (counter[root] < 2, -candidates[root], seen[root], root))
        chosen: list[str] = []
        used: set[str] = set()
        for root in ranked:
            term = stands_for.get(root, root)
            # No word twice: "author talks" and "talks" (or "monthly email" beside "email newsletter") say one thing.
            if used.intersection(term.split()):
                continue
            chosen.append(term)
            used.update(term.split())
            if len(chosen) == count:
                break
        keywords.append([surface[root].most_common(1)[0][0] for root in chosen])
    return keywords


def theme_keywords(texts: Sequence[str], others: Sequence[str] = (), count: int = 3, topic: str = "") -> list[str]:
    """The words that set this theme apart from the other ideas (class TF-IDF over the two classes)."""
    return class_keywords([texts, others], topic=topic, count=count)[0]


def join_naturally(words: Sequence[str]) -> str:
    """'coffee', 'snacks', 'tea' -> 'Coffee, snacks and tea'."""
    words = [w for w in words if w]
    if not words:
        return ""
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return text[:1].upper() + text[1:]


def keyword_label(texts: Sequence[str], others: Sequence[str] = (), topic: str = "") -> str:
    """A fallback theme name from the theme's most distinctive words, joined as a person would write them."""
    return keyword_name(theme_keywords(texts, others, count=2, topic=topic))


def keyword_name(keywords: Sequence[str]) -> str:
    return join_naturally(list(keywords)[:2]) or "Other ideas"


def label_messages(texts: Sequence[str], keywords: Sequence[str]) -> tuple[ChatMessage, ...]:
    messages = [ChatMessage("system", LABEL_SYSTEM)]
    for ideas, words, answer in LABEL_EXAMPLES:
        messages.append(ChatMessage("user", f"Ideas:\n{ideas}\nKey words: {words}\nCategory:"))
        messages.append(ChatMessage("assistant", answer))
    ideas = "\n".join(f"- {short(text, LABEL_IDEA_CHARS)}" for text in texts[:LABEL_IDEAS])
    messages.append(ChatMessage("user", f"Ideas:\n{ideas}\nKey words: {', '.join(keywords)}\nCategory:"))
    return tuple(messages)


def _grounded(label: str, texts: Sequence[str]) -> bool:
    """Does the label share a word stem with the ideas? Guards against invented names."""
    stems = {stem(w) for text in texts for w in _words(text)}
    return any(stem(w) in stems for w in _words(label)) and label not in {a for _, _, a in LABEL_EXAMPLES}


def name_from_list(answer: str) -> str:
    """A small model often answers with a list ('Food, cooking, meals, meals,'): its first two different items of
    at most three words, joined naturally ('Food and cooking'). Any other answer is returned as it is."""
    if "," not in answer:
        return answer
    items: list[str] = []
    for part in answer.split(","):
        item = re.sub(r"[*_#`\"“”]", "", part).strip(" .;:!-–")
        if item and len(item.split()) <= 3 and item.lower() not in {i.lower() for i in items}:
            items.append(item)
        elif items:
            break
    return join_naturally([items[0], items[1].lower()] if len(items) > 1 else items[:1])


def name_problem(answer: str, texts: Sequence[str], topic: str = "") -> str:
    """Why a model's theme name cannot be used ('' when it can): a fragment (cut, or ending on a filler word), no
    word shared with its ideas (invented), or a topic word (every theme is about the topic)."""
    bare = re.sub(r"[*_#`\"“”]", "", answer).strip(" .,:;!-–")
    words = bare.split()
    if not words:
        return "empty"
    if len(words) > MAX_LABEL_WORDS:
        return "too long: it would be cut into a fragment"
    if words[-1].lower().strip(",;:&") in _STOPWORDS or words[-1] in {"&", "-", "–"}:
        return "a fragment"
    if not _grounded(bare, texts):
        return "shares no word with its ideas"
    # A word of the examples' answers ("office") was copied from the prompt unless the ideas use it too.
    example_stems = {stem(w) for _, _, example in LABEL_EXAMPLES for w in content_words(example)}
    idea_stems = {stem(w) for text in texts for w in _words(text)}
    if any(stem(w) in example_stems and stem(w) not in idea_stems for w in content_words(bare)):
        return "copies a word from the prompt's examples"
    excluded = topic_stems(topic)
    if any(stem(word) in excluded for word in content_words(bare)):
        return "contains a topic word"
    return ""


def head_phrase(answer: str) -> str:
    """The name at the front of an answer too long to use whole: its words up to the first filler word ("Chess club
    for all ages on weekends" -> "Chess club"); '' when that leaves nothing usable."""
    words = re.sub(r"[*_#`\"“”]", "", answer).strip(" .,:;!-–").split()
    head: list[str] = []
    for word in words:
        if word.lower().strip(",;:") in _STOPWORDS or word in {"&", "-", "–"}:
            break
        head.append(word.strip(",;:"))
        if word.endswith((",", ";", ":")):
            break
    return " ".join(head) if 0 < len(head) <= MAX_LABEL_WORDS and len(head) < len(words) else ""


def usable_name(answer: str, texts: Sequence[str], topic: str = "") -> str:
    """The model's theme name tidied, or the name at its front when it is too long; '' when neither passes
    `name_problem`."""
    for option in (answer, head_phrase(answer)):
        problem = name_problem(option, texts, topic) if option else "empty"
        if not problem:
            return tidy_label(option)
        if option:
            _log.debug("theme name %r rejected (%s)", option, problem)
    return ""


def shared_keywords(keywords: Sequence[str], texts: Sequence[str], topic: str = "") -> set[str]:
    """The keywords that two or more of the ideas use: only those speak for a theme rather than for one idea."""
    excluded = topic_stems(topic)
    uses: Counter[str] = Counter()
    for text in texts:
        uses.update(idea_terms(text, excluded).keys())
    return {word for word in keywords if uses[" ".join(stem(part) for part in word.split())] >= 2}


def name_candidates(model_name: str, keywords: Sequence[str], shared: set[str]) -> list[str]:
    """Names a theme could take: the model's (when usable), then the theme's top keywords in pairs with at least one
    `shared` keyword, and its keyphrases alone. All come from the ideas' own words; with nothing usable, the two top
    keywords."""
    candidates = [model_name] if model_name else []
    top = list(keywords)[:3]
    pairs = [[top[i], top[j]] for i in range(len(top)) for j in range(i + 1, len(top))]
    # A lone word is too little to tell themes apart by; a keyphrase ("author talks") can stand alone.
    for words in (*pairs, *([word] for word in top if " " in word)):
        name = keyword_name(words)
        if (
            shared.intersection(words)
            and len(name.split()) <= MAX_LABEL_WORDS
            and name.lower() not in {c.lower() for c in candidates}
        ):
            candidates.append(name)
    return candidates or [keyword_name(keywords)]


def nearest_names(
    candidates: Sequence[Sequence[str]],
    vectors: Sequence[Sequence[Sequence[float]]],
    centres: Sequence[Sequence[float]],
    model_named: Sequence[bool],
) -> list[str]:
    """Each theme's candidate a reader would most likely match to it among all the themes: the one whose sentence
    vector is nearest its own theme's centre by the widest margin over the nearest other theme's centre. The
    model's name (first, where `model_named`) wins within `MODEL_NAME_ALLOWANCE` of the best keyword name."""
    centre = as_matrix(centres)
    chosen = []
    for number, (names, rows, by_model) in enumerate(zip(candidates, vectors, model_named, strict=True)):
        similar = as_matrix(rows) @ centre.T
        others = np.delete(similar, number, axis=1)
        margin = similar[:, number] - others.max(axis=1)
        if by_model:
            margin[0] += MODEL_NAME_ALLOWANCE
        _log.debug("theme name candidates %s", [f"{n} {m:+.3f}" for n, m in zip(names, margin, strict=True)])
        chosen.append(names[int(np.argmax(margin))])  # argmax keeps the first of equals: identical input, same name
    return chosen


async def theme_names(
    generator: Generator,
    groups: Sequence[Sequence[str]],
    *,
    topic: str = "",
    blocklist: Blocklist,
    key: str = "",
    embedder: Embedder | None = None,
    centres: Sequence[Sequence[float]] | None = None,
) -> list[str]:
    """One name per group, asked for all at once (a batching engine runs them together), greedy so identical ideas
    get identical names. A name the model gets wrong (see `name_problem`) gives way to the group's keywords. With an
    `embedder` and each group's `centres` (the mean of its ideas' vectors), the model's name and the keyword names
    compete: the one nearest its own theme and farthest from the others wins."""
    keywords = class_keywords(groups, topic=topic)
    answers = await asyncio.gather(
        *(
            complete(
                generator,
                label_messages(texts, words),
                blocklist=blocklist,
                max_new_tokens=12,
                temperature=0.0,
                seed=0,
                conversation_key=key,
                whole_sentences=False,
            )
            for texts, words in zip(groups, keywords, strict=True)
        )
    )
    model_names = [
        usable_name(name_from_list(answer), texts, topic) for texts, answer in zip(groups, answers, strict=True)
    ]
    candidates = [
        name_candidates(name, words, shared_keywords(words, texts, topic))
        for name, words, texts in zip(model_names, keywords, groups, strict=True)
    ]
    # One theme has no other to be told apart from: the first candidate stands.
    if embedder is not None and centres is not None and len(centres) == len(groups) > 1:
        flat = [name for names in candidates for name in names]
        try:
            embedded = await embedder.embed(flat)
        except GenerationError as exc:
            _log.warning("theme names not compared with their ideas: %s", exc)
        else:
            rows, start = [], 0
            for names in candidates:
                rows.append(embedded[start : start + len(names)])
                start += len(names)
            return nearest_names(candidates, rows, centres, [bool(name) for name in model_names])
    return [names[0] for names in candidates]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def is_heading(text: str) -> bool:
    """A heading or a lead-in rather than a sentence: it ends on a colon or a comma ("This idea combines both:"),
    or it has a label's colon and no sentence end ("Aim: team-offsite ideas", "Next step: meetup planning"). A
    small model writes these when it means to go on in a list on the next line, which a one-line answer never
    shows."""
    stripped = text.rstrip()
    if stripped.endswith((":", ";", ",", "-", "–", "—")):
        return True
    return ":" in stripped and not _SENTENCE_END.search(stripped)


def echoes(text: str, others: Sequence[str]) -> bool:
    """Says (almost) nothing that one of `others` does not: most of its content words are that text's and it adds
    at most two of its own ("How to get more people to come to the monthly meetup event." for the topic "how do we
    get more ppl to come to the monthly meetup"), or nearly all of them are."""
    mine = {stem(word) for word in content_words(text)}
    if not mine:
        return False
    for other in others:
        shared = len(mine & {stem(word) for word in content_words(other)})
        share = shared / len(mine)
        if share >= 0.8 or (share >= 0.6 and len(mine) - shared <= 2):
            return True
    return False


def is_meta(text: str) -> bool:
    """Talk about the task rather than an idea: 'You can combine these two ideas into a single sentence.'"""
    return bool(_META.search(text))


def distinct_ideas(candidates: Sequence[str], avoid: Sequence[str]) -> list[str]:
    """Drop repeats and near-repeats, echoes of the topic or of the ideas built on, talk about the task, and
    answers too short to be an idea."""
    seen = {_norm(text) for text in avoid}
    kept: list[str] = []
    for text in candidates:
        norm = _norm(text)
        if len(norm) >= 8 and norm not in seen and not is_meta(text) and not echoes(text, (*avoid, *kept)):
            seen.add(norm)
            kept.append(text)
    return kept


async def _ideas(
    generator: Generator,
    ask: Callable[[int], tuple[ChatMessage, ...]],
    count: int,
    avoid: Sequence[str],
    *,
    blocklist: Blocklist,
    seed: int,
    key: str,
) -> list[str]:
    """Up to `count` usable ideas from `ask(i)`, asked for together (a batching engine runs them at once); when too
    few can be used (cut, meta, a repeat), the missing ones are asked for once more, with other asks and seeds."""
    kept: list[str] = []
    for attempt in range(IDEA_TRIES):
        missing = count - len(kept)
        if missing <= 0:
            break
        first = attempt * count
        answers = await asyncio.gather(
            *(
                complete(generator, ask(i), blocklist=blocklist, max_new_tokens=64, seed=seed + i, conversation_key=key)
                for i in range(first, first + missing)
            )
        )
        kept += distinct_ideas([sentences(a) for a in answers if a], (*avoid, *kept))
    return kept[:count]


async def seed_ideas(
    generator: Generator, topic: str, count: int, *, blocklist: Blocklist, seed: int, key: str = ""
) -> list[str]:
    """Up to `count` different opening ideas for the topic, asked for together (a batching engine runs them at once)."""
    angles = ("a practical", "a surprising", "a low-cost", "an ambitious", "a playful")

    def ask(i: int) -> tuple[ChatMessage, ...]:
        return (ChatMessage("system", IDEA_SYSTEM), ChatMessage("user", f"Topic: {topic}\nGive {angles[i % 5]} idea."))

    return await _ideas(generator, ask, count, (topic,), blocklist=blocklist, seed=seed, key=key)


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

    def ask(i: int) -> tuple[ChatMessage, ...]:
        first = top[i % len(top)]
        second = top[(i + 1) % len(top)] if len(top) > 1 and i % 2 else ""
        basis = (
            f"People liked:\n- {short(first, 200)}\n- {short(second, 200)}\nSuggest one new, concrete idea that "
            "mixes both."
            if second
            else f"People liked: {short(first, 300)}\nSuggest one new, concrete idea that takes it further."
        )
        return (ChatMessage("system", IDEA_SYSTEM), ChatMessage("user", f"Topic: {topic}\n{basis}"))

    return await _ideas(generator, ask, count, (*top, topic), blocklist=blocklist, seed=seed, key=key)


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
            complete(generator, ask, blocklist=blocklist, max_new_tokens=56, seed=seed + i, conversation_key=key)
            for i, ask in enumerate(asks)
        )
    )
    steps: list[str] = []
    for idea, answer in zip(top, answers, strict=True):
        fallback = f"Pick an owner for “{short(idea, 60)}” and agree a first small test."
        answer = sentences(answer, 200)
        usable = answer and answer not in steps and not is_meta(answer)
        steps.append(answer if usable else fallback)
    return steps
