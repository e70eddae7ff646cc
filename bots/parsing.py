"""Parse command text the same way on every platform: `slogan a bookstore cafe --tone playful --n 3`.

Options can sit anywhere in the text; everything else is the prompt. Discord hands options over already split, and
those win over the text. Every mistake becomes a UserError with a one-line, fixable message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bots.errors import UserError
from config import Settings


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """' Did you mean 'slogan'?' for the closest choice, or '' when nothing is close. With a prefix: '/create'."""
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" Did you mean {prefix}{close[0]}?" if prefix else f" Did you mean {close[0]!r}?"


def split_options(text: str, allowed: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Pull `--name value` / `--name=value` pairs out of text; the rest, in order, is the free text."""
    allowed = tuple(allowed)
    words = text.split()
    rest: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and len(word) > 2:
            name, _, value = word[2:].partition("=")
            name = name.lower()
            if name not in allowed:
                flags = ", ".join(f"--{a}" for a in allowed) or "none"
                raise UserError(f"Unknown option --{name}.{did_you_mean(name, allowed)} Options: {flags}.")
            if not value:
                if i + 1 >= len(words) or words[i + 1].startswith("--"):
                    raise UserError(f"--{name} needs a value, e.g. --{name} {_EXAMPLES.get(name, 'x')}.")
                i += 1
                value = words[i]
            options[name] = value
        else:
            rest.append(word)
        i += 1
    return " ".join(rest), options


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


def parse_tone(value: str | None, settings: Settings) -> str:
    if value is None or value == "":
        return settings.tones[0]
    tone = value.lower()
    if tone not in settings.tones:
        raise UserError(
            f"Unknown tone {value!r}.{did_you_mean(tone, settings.tones)} Tones: {', '.join(settings.tones)}."
        )
    return tone


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
    top = settings.limits.max_variants
    if value is None or value == "":
        return 1
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= top:
        raise UserError(f"--n must be a whole number from 1 to {top} (got {value!r}).")
    return n


def check_prompt(prompt: str, settings: Settings, usage: str) -> str:
    prompt = prompt.strip()
    if not prompt:
        raise UserError(f"Tell me what to write about: {usage}")
    limit = settings.limits.max_prompt_chars
    if len(prompt) > limit:
        raise UserError(f"That prompt is {len(prompt)} characters; the limit is {limit}. Shorten it and try again.")
    return prompt


CREATE_USAGE = "/create <kind> <what it is about> [--tone <tone>] [--length short|medium|long] [--n 1-5]"
REMIX_USAGE = "/remix <text to rewrite> [--tone <tone>] [--n 1-5]"


def parse_create(text: str, options: Mapping[str, str], settings: Settings) -> CreateArgs:
    free, found = split_options(text, ("tone", "length", "n"))
    found.update({k: v for k, v in options.items() if k in ("tone", "length", "n", "kind", "prompt")})
    kind = found.pop("kind", "")
    prompt = found.pop("prompt", "")
    if not kind:
        kind, _, rest = free.partition(" ")
        prompt = prompt or rest
    kind = kind.lower()
    kinds = list(settings.kinds)
    if not kind:
        raise UserError(f"Say what to create: {CREATE_USAGE}. Kinds: {', '.join(kinds)}.")
    if kind not in settings.kinds:
        raise UserError(f"Unknown kind {kind!r}.{did_you_mean(kind, kinds)} Kinds: {', '.join(kinds)}.")
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
    body = options.get("text") or free
    tone = found.get("tone")
    if not tone:
        raise UserError(f"Say which tone to rewrite it in: {REMIX_USAGE}. Tones: {', '.join(settings.tones)}.")
    return RemixArgs(
        text=check_prompt(body, settings, REMIX_USAGE),
        tone=parse_tone(tone, settings),
        n=parse_n(found.get("n"), settings),
    )
