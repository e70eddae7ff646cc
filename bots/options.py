"""Typed command options: what a platform with structured options (Discord) needs to build a command's form.

Types, requiredness, choices and bounds are declared here, on the command, so an adapter never guesses them from an
option's name. A plain `(name, description)` pair is still accepted: an optional text option.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

OptionType = Literal["text", "integer"]
# Where an option's allowed values come from in the settings: the content kinds, the tones, the length names.
ChoiceSource = Literal["", "kinds", "tones", "lengths"]
# Which setting bounds an option: the number of variants (integer, 1..max) or the prompt length (text, 1..max chars).
Bound = Literal["", "variants", "prompt_chars"]


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    type: OptionType = "text"
    required: bool = False
    choices: ChoiceSource = ""
    bound: Bound = ""


def typed_options(options: Iterable[Option | tuple[str, str]]) -> tuple[Option, ...]:
    """Every option as an Option; a bare (name, description) pair is an optional text option."""
    return tuple(option if isinstance(option, Option) else Option(*option) for option in options)
