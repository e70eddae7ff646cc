"""Parse command text the same way on every platform: `slogan a bookstore cafe --tone playful --n 3`.

Options can sit anywhere in the text; everything else is the prompt. Discord hands options over already split, and
those win over the text. Every mistake becomes a UserError with a one-line, fixable message.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bots.errors import UserError
from config import Settings


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """' Did you mean 'slogan'?' for the closest choice, or '' when nothing is close. With a prefix: '/create'."""
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" Did you mean {prefix}{close[0]}?" if prefix else f" Did you mean {close[0]!r}?"


# Keyboards turn `--` into an em or en dash (macOS, iOS, Slack, Word); people type `-n` for `--n`.
_DASHES = re.compile(r"^(?:--|—|–|−−|‐‐|―)(?=\w)")


# Other names people give an option: the replies and /help call them variants, so `--variants 3` means `--n 3`.
OPTION_ALIASES = {"variants": "n", "variant": "n"}


def _option_name(word: str, allowed: Sequence[str]) -> str | None:
    """The option a word names (`--tone`, `—tone`, `–tone=x`, `-n`, `--variants` for `--n`), or None when it is
    not an option."""
    match = _DASHES.match(word)
    if match:
        name = word[match.end() :].partition("=")[0].lower()
        alias = OPTION_ALIASES.get(name, "")
        return alias if alias in allowed else name
    if word.startswith("-") and len(word) > 1 and not word[1].isdigit():
        name = word[1:].partition("=")[0].lower()
        name = OPTION_ALIASES.get(name, name)
        if name in allowed:
            return name
    return None


def _unknown_option(name: str, allowed: Sequence[str]) -> str:
    """'Unknown option --varients. Did you mean --n? Options: …', matching aliases too (`--varients` is `--n`)."""
    names = {option: option for option in allowed}
    names.update({alias: option for alias, option in OPTION_ALIASES.items() if option in allowed})
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    hint = f" Did you mean --{names[close[0]]}?" if close else ""
    flags = ", ".join(f"--{a}" for a in allowed) or "none"
    return f"Unknown option --{name}.{hint} Options: {flags}."


_QUOTES = "\"'“”‘’«»`"


def _unquote(value: str) -> str:
    """`--tone 'witty'` and `--tone “witty”` as `witty`: people quote values, and phones curl the quotes."""
    stripped = value.strip(_QUOTES)
    return stripped or value


def split_options(
    text: str | Sequence[str], allowed: Iterable[str], *, strict: bool = False, usage: str = ""
) -> tuple[str, dict[str, str]]:
    """Pull `--name value` / `--name=value` pairs out of text (or pre-split words); the rest, in order, is the free
    text. `—name` and `–name` count as `--name`, and `-name` for a known option. `strict` refuses free words."""
    allowed = tuple(allowed)
    words = text.split() if isinstance(text, str) else list(text)
    rest: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name = _option_name(word, allowed)
        if name is None:
            if strict:
                raise UserError(f"Unexpected {word!r}. {usage}".strip())
            rest.append(word)
            i += 1
            continue
        value = word.lstrip("-—–−‐―").partition("=")[2]
        if name not in allowed:
            raise UserError(_unknown_option(name, allowed))
        if not value:
            if i + 1 >= len(words) or _option_name(words[i + 1], allowed) is not None:
                if usage:
                    raise UserError(f"--{name} needs a value. {usage}")
                raise UserError(f"--{name} needs a value, e.g. --{name} {_EXAMPLES.get(name, 'x')}.")
            i += 1
            value = words[i]
        value = _unquote(value)
        if name in options and options[name].lower() != value.lower():
            raise UserError(f"--{name} is given twice ({options[name]} and {value}): give it once.")
        options[name] = value
        i += 1
    return " ".join(rest), options


def parse_bounded(
    value: str | None,
    option: str,
    *,
    low: float,
    high: float,
    default: float,
    whole: bool = True,
    unit: str = "",
) -> float:
    """A number option within bounds: whole numbers from low to high, or (whole=False) above low and at most high.
    One definition, so --n, --minutes and --rounds explain a mistake alike."""
    if value is None or value == "":
        return default
    try:
        number = float(int(value)) if whole else float(value)
    except ValueError:
        number = math.nan
    if whole and not low <= number <= high:
        raise UserError(f"--{option} must be a whole number from {low:g} to {high:g} (got {value!r}).")
    if not whole and not low < number <= high:
        of = f" of {unit}" if unit else ""
        raise UserError(f"--{option} must be a number{of} above {low:g}, at most {high:g} (got {value!r}).")
    return number


_EXAMPLES = {"tone": "playful", "n": "3", "length": "short"}


@dataclass(frozen=True)
class CreateArgs:
    kind: str
    prompt: str
    tone: str
    n: int
    length: str = "medium"


@dataclass(frozen=True)
class RemixArgs:
    text: str
    tone: str
    n: int


# Words people reach for that are not tone names, and the default tones closest in mood (only configured ones are
# suggested).
_TONE_MOODS = {
    "funny": ("witty", "playful"), "humorous": ("witty", "playful"), "fun": ("playful",), "silly": ("playful",),
    "sarcastic": ("witty",), "clever": ("witty",), "casual": ("playful", "warm"), "friendly": ("warm",),
    "cute": ("playful", "warm"), "romantic": ("poetic", "warm"), "serious": ("formal", "professional"),
    "corporate": ("professional", "formal"), "business": ("professional",), "epic": ("dramatic", "bold"),
    "intense": ("dramatic", "bold"), "hype": ("bold",), "excited": ("bold", "playful"), "sad": ("poetic", "dramatic"),
    "simple": ("minimal",), "short": ("minimal",), "plain": ("neutral", "minimal"), "lyrical": ("poetic",),
}  # fmt: skip


_SEPARATORS = re.compile(r"[\s_-]+")


def parse_tone(value: str | None, settings: Settings) -> str:
    """The configured tone `value` names, whatever its case (a configured "Playful" is picked by typing playful) and
    however its words are joined."""
    if value is None or value == "":
        return settings.tones[0]
    by_lower = {tone.lower(): tone for tone in settings.tones}
    typed = value.strip().lower()
    if typed in by_lower:
        return by_lower[typed]
    # A tone of several words ("very formal") arrives as one word: very-formal, very_formal or veryformal.
    joined = {_SEPARATORS.sub("", tone): original for tone, original in by_lower.items()}
    found = joined.get(_SEPARATORS.sub("", typed))
    if found is not None:
        return found
    close = difflib.get_close_matches(typed, list(by_lower), n=1, cutoff=0.6)
    moods = [by_lower[tone] for tone in _TONE_MOODS.get(typed, ()) if tone in by_lower]
    if close:
        hint = f" Did you mean {by_lower[close[0]]!r}?"
    elif moods:
        hint = f" Closest in mood: {' or '.join(moods)}."
    else:
        hint = ""
    raise UserError(f"Unknown tone {value!r}.{hint} Tones: {', '.join(settings.tones)}.")


def parse_length(value: str | None, settings: Settings) -> str:
    lengths = settings.lengths
    if value is None or value == "":
        return lengths.default
    length = value.lower()
    if length not in lengths.names:
        raise UserError(
            f"Unknown length {value!r}.{did_you_mean(length, lengths.names)} Lengths: {', '.join(lengths.names)}."
        )
    return length


def parse_n(value: str | None, settings: Settings) -> int:
    return int(parse_bounded(value, "n", low=1, high=settings.limits.max_variants, default=1))


def check_prompt(
    prompt: str, settings: Settings, usage: str, *, missing: str = "Tell me what to write about", what: str = "prompt"
) -> str:
    prompt = prompt.strip()
    if not prompt:
        raise UserError(f"{missing}: {usage}")
    limit = settings.limits.max_prompt_chars
    if len(prompt) > limit:
        raise UserError(f"That {what} is {len(prompt)} characters; the limit is {limit}. Shorten it and try again.")
    return prompt


CREATE_USAGE = "/create <kind> <what it is about> [--tone <tone>] [--length short|medium|long] [--n 1-5]"
REMIX_USAGE = "/remix <text to rewrite> --tone <tone> [--n 1-5]"


_ARTICLES = ("a", "an", "the", "me a", "me an", "me some", "some")


def _skip_article(free: str, settings: Settings) -> str:
    """`a poem about the sea` and `me an ad for shoes` as `poem …` and `ad …`: the words people put before a kind."""
    lowered = free.lower()
    for article in sorted(_ARTICLES, key=len, reverse=True):
        rest = free[len(article) :].lstrip()
        if lowered.startswith(article + " ") and rest.partition(" ")[0].lower() in settings.kinds:
            return rest
    return free


_TOPIC_WORD = re.compile(r"\b(about|for|of|on)\s+\{prompt\}")


def _drop_repeated_preposition(prompt: str, template: str) -> str:
    """`slogan for my bakery` asks for a slogan "for my bakery", not "for for my bakery": a leading word the kind's
    template already puts before the prompt, or a leading "about", is dropped."""
    before = _TOPIC_WORD.search(template)
    first, _, rest = prompt.partition(" ")
    if before is not None and rest.strip() and first.lower() in {before.group(1), "about"}:
        return rest.strip()
    return prompt


def parse_create(text: str, options: Mapping[str, str], settings: Settings) -> CreateArgs:
    free, found = split_options(text, ("tone", "length", "n"))
    found.update({k: v for k, v in options.items() if k in ("tone", "length", "n", "kind", "prompt")})
    kind = found.pop("kind", "")
    prompt = found.pop("prompt", "")
    if not kind:
        kind, _, rest = _skip_article(free, settings).partition(" ")
        prompt = prompt or rest
    kind = kind.lower()
    kinds = list(settings.kinds)
    if not kind:
        raise UserError(f"Say what to create: {CREATE_USAGE}. Kinds: {', '.join(kinds)}.")
    if kind not in settings.kinds:
        raise UserError(f"Unknown kind {kind!r}.{did_you_mean(kind, kinds)} Kinds: {', '.join(kinds)}.")
    prompt = _drop_repeated_preposition(prompt.strip(), settings.kinds[kind].template)
    return CreateArgs(
        kind=kind,
        prompt=check_prompt(prompt, settings, f"/create {kind} <what it is about>"),
        tone=parse_tone(found.get("tone"), settings),
        n=parse_n(found.get("n"), settings),
        length=parse_length(found.get("length"), settings),
    )


def parse_remix(text: str, options: Mapping[str, str], settings: Settings) -> RemixArgs:
    free, found = split_options(text, ("tone", "n"))
    found.update({k: v for k, v in options.items() if k in ("tone", "n")})
    text = check_prompt(
        options.get("text") or free, settings, REMIX_USAGE, missing="Give the text to rewrite", what="text"
    )
    tone = found.get("tone")
    if not tone:
        raise UserError(f"Say which tone to rewrite it in: {REMIX_USAGE}. Tones: {', '.join(settings.tones)}.")
    return RemixArgs(text=text, tone=parse_tone(tone, settings), n=parse_n(found.get("n"), settings))


@dataclass(frozen=True)
class VariantRef:
    """A message about one variant: `2 s`, `#3 make it rhyme`, "make the second one rhyme" (index is 0-based)."""

    index: int
    instruction: str


_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4, "5th": 4,
    "one": 0, "two": 1, "three": 2, "four": 3, "five": 4,
}  # fmt: skip
# Variant numbers run to limits.max_variants (at most 10); a leading 0 is read as one too, so that it is refused
# ("pick one from 1 to 3") instead of becoming an instruction.
_LEADING_REF = re.compile(r"^\s*#?(10|\d)\s*[.):\-–—]?\s+(\S.*)$")
_NAMED_REF = re.compile(
    r"\b(?:the\s+)?(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th)(?:\s+(?:one|variant|version|option|idea))?\b"
    r"|\b(?:variant|version|option|number|no\.?)\s*#?\s*(10|[1-9]|one|two|three|four|five)\b|#(10|[1-9])\b",
    re.IGNORECASE,
)


def parse_variant_ref(text: str) -> VariantRef | None:
    """Which variant a refinement is about, and the instruction without the reference ("make it rhyme")."""
    leading = _LEADING_REF.match(text)
    if leading:
        return VariantRef(int(leading.group(1)) - 1, leading.group(2).strip())
    match = _NAMED_REF.search(text)
    if match is None:
        return None
    word = next(group for group in match.groups() if group)
    index = int(word) - 1 if word.isdigit() else _ORDINALS[word.lower()]
    rest = (text[: match.start()] + "it" + text[match.end() :]).strip()
    rest = re.sub(r"^it\s*[:,\-–—]?\s*", "", rest) if rest.lower().startswith("it") and rest != "it" else rest
    rest = re.sub(r"\s+", " ", rest).strip(" :,")
    return VariantRef(index, rest) if rest and rest.lower() != "it" else None


_ACKS = frozenset(
    [
        "y",
        "ya",
        "yes",
        "yeah",
        "yep",
        "yup",
        "ok",
        "okay",
        "k",
        "kk",
        "oki",
        "okey",
        "cool",
        "nice",
        "great",
        "good",
        "awesome",
        "perfect",
        "thanks",
        "thank",
        "thx",
        "ty",
        "tysm",
        "you",
        "much",
        "lol",
        "haha",
        "hah",
        "ha",
        "wow",
        "love",
        "it",
        "this",
        "that",
        "sure",
        "no",
        "nope",
        "n",
        "nah",
        "hmm",
        "hm",
        "np",
        "sweet",
        "neat",
        "amazing",
        "excellent",
        "fine",
        "alright",
        "right",
        "got",
        "gotcha",
        "done",
        "thanks!",
        "merci",
        "gracias",
        "danke",
        "ta",
        "cheers",
        "wonderful",
        "brilliant",
        "hi",
        "hello",
        "hey",
        "hiya",
        "there",
        "bye",
        "goodbye",
    ]
)
_KEYS = frozenset("rmslt+-")


def chatter_hint(text: str) -> str:
    """A friendly hint for short chatter ("ok", "thanks!", "++", a lone emoji, "r r") that should not make a new
    version; "" for a message that asks for a change."""
    stripped = text.strip()
    words = re.findall(r"[\w']+", stripped.lower())
    if not words:
        # Only punctuation or emoji: "++", "!!", "👍", "🔥🔥".
        if "+" in stripped or "👍" in stripped:
            return "Glad you like it! Press 👍 to rate it, or type r, m, s, l or t <tone> to change it."
        return CHATTER_HINT
    if len(words) <= 4 and _HELP_WORDS & set(words) and all(word in _HELP_WORDS | _HELP_FILLER for word in words):
        return HELP_HINT
    if " ".join(words) in _UNDO:
        return UNDO_HINT
    if len(words) <= 8 and _ABOUT_CHORUS.search(" ".join(words)):
        return HELP_HINT
    if len(words) <= 4 and all(word in _ACKS for word in words):
        return CHATTER_HINT
    if len(words) >= 2 and all(word in _KEYS for word in words):
        return f"One key at a time: type {words[0]} alone (or `2 {words[0]}` for the second variant)."
    if len(words) == 1 and words[0].isdigit():
        return f"Which change for variant {words[0]}? e.g. `{words[0]} s` for shorter or `{words[0]} make it rhyme`."
    return ""


# "help", "commands", "help me please": a question about Chorus, never an instruction for a new version.
_HELP_WORDS = frozenset(["help", "commands", "command", "usage", "menu"])
_HELP_FILLER = frozenset(["me", "pls", "please", "plz", "what", "are", "the", "show", "list"])
HELP_HINT = (
    "Type /help for the commands, kinds and tones, e.g. /create slogan my bakery --n 3. After a result, type "
    "r (regenerate), m (more like this), s (shorter), l (longer) or t <tone>, or say what to change."
)

# "how do I use this?", "what can you do": a question about Chorus itself, not a change to the result.
_ABOUT_CHORUS = re.compile(
    r"^(?:(?:hey|hi|so|ok|chorus)\s+)*(?:how\s+(?:do|can|should)\s+i\s+(?:use|work)|how\s+(?:does|do)\s+(?:this|"
    r"it|you|chorus)\s+work|how\s+to\s+use|what\s+can\s+(?:you|i|chorus)\s+do|what\s+do\s+i\s+do|what\s+are\s+"
    r"you|who\s+are\s+you)\b"
)

# "undo", "go back": there is no undo, and asking the model to "undo" writes a new version about undoing.
_UNDO = frozenset(
    ["undo", "undo that", "undo it", "go back", "back", "revert", "revert it", "previous", "previous version",
     "the previous one", "ctrl z", "restore", "take it back"]
)  # fmt: skip
UNDO_HINT = (
    "Nothing is lost: every change is a new version, /history lists them all and /history 1 shows the first in "
    "full. There is no undo; say what to change instead, e.g. `s` for shorter or `make it rhyme`."
)

CHATTER_HINT = (
    "👋 To change the result, type r (regenerate), m (more like this), s (shorter), l (longer) or t <tone>, "
    "`2 s` for just the second variant, or say what to change."
)


@dataclass(frozen=True)
class CreateRequest:
    """A message that asks in words for something new ("write a slogan for our bake sale"): the /create text it
    stands for, and a number of variants when the message gave one ("3 slogans")."""

    text: str
    n: str = ""


# What people put before a request when they mention a bot or DM it: greetings, "please", "can you".
_POLITE = re.compile(
    r"^(?:(?:hey|hi|hello|yo|ok|okay|so|@?chorus|please|pls|plz)\b[\s,:!.-]*"
    r"|(?:can|could|would|will)\s+(?:you|u)\s+(?:please\s+)?)+",
    re.I,
)
_ASK_VERB = re.compile(
    r"^/?(?:create|write|make|draft|generate|compose|suggest|give\s+(?:me|us)|come\s+up\s+with|"
    r"i\s+(?:need|want)|we\s+(?:need|want)|need)\b\s*",
    re.I,
)
_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# Words that point back at a result already shown ("make a poem out of it"): a change to that, not a new request.
_BACK_REFERENCES = frozenset(
    ["it", "this", "that", "them", "these", "those", "instead", "again", "above", "previous", "same", "one", "ones"]
)


def _kind_named(word: str, settings: Settings) -> tuple[str, bool] | None:
    """(kind, plural) for a configured kind as written, or its plural ("slogans", "stories")."""
    word = word.lower().strip(",:;")
    if word in settings.kinds:
        return word, False
    for kind in settings.kinds:
        if word in (kind + "s", kind + "es", kind[:-1] + "ies" if kind.endswith("y") else ""):
            return kind, True
    return None


def create_request(text: str, settings: Settings, *, bare: bool = False) -> CreateRequest | None:
    """The /create a message asks for in words: "write a slogan for our bake sale", "can you make 3 taglines for my
    café", "/create poem the sea". With `bare`, a request without a verb counts too ("a poem about the sea"): only
    where there is no result it could change. None when the message does not name a kind and what it is about, or
    points back at a result ("make a poem out of it"), which is a change to that result."""
    rest = _POLITE.sub("", text.strip()).strip()
    verb = _ASK_VERB.match(rest)
    if verb is None and not bare:
        return None
    words = rest[verb.end() :].split() if verb is not None else rest.split()
    count = ""
    while words and words[0].lower() in ("a", "an", "the", "me", "us", "some", "few", "couple", "of"):
        words = words[1:]
    if words and (words[0].isdecimal() or words[0].lower() in _COUNT_WORDS):
        count = words[0] if words[0].isdecimal() else str(_COUNT_WORDS[words[0].lower()])
        words = words[1:]
    if len(words) < 2:
        return None
    named = _kind_named(words[0], settings)
    if named is None:
        if verb is not None and difflib.get_close_matches(words[0].lower(), list(settings.kinds), n=1, cutoff=0.8):
            # "write a slgan for …": a request with a misspelt kind, answered with the closest one.
            return CreateRequest(" ".join(words))
        return None
    topic = words[1:]
    if _BACK_REFERENCES & {word.lower().strip(".,!?;:") for word in topic}:
        return None
    return CreateRequest(f"{named[0]} {' '.join(topic)}".rstrip(".!?"), count)
