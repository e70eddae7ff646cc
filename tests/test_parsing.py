"""Command text parsing: every mistake gets a one-line message the user can act on."""

from __future__ import annotations

import pytest

from bots.errors import UserError
from bots.parsing import parse_create, parse_remix
from config import Settings, load_settings


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(env={})


def test_options_anywhere_and_the_rest_is_the_prompt(settings: Settings) -> None:
    args = parse_create("slogan a bookstore --tone playful that is also a cafe --n=3", {}, settings)
    assert (args.kind, args.prompt, args.tone, args.n) == ("slogan", "a bookstore that is also a cafe", "playful", 3)


def test_length_from_text_or_options_and_medium_by_default(settings: Settings) -> None:
    assert parse_create("slogan a cafe", {}, settings).length == "medium"
    assert parse_create("story a lighthouse --length LONG", {}, settings).length == "long"
    assert parse_create("", {"kind": "poem", "prompt": "rain", "length": "short"}, settings).length == "short"


def test_structured_options_win(settings: Settings) -> None:
    args = parse_create("", {"kind": "poem", "prompt": "rain", "tone": "warm", "n": "2"}, settings)
    assert (args.kind, args.prompt, args.tone, args.n) == ("poem", "rain", "warm", 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slgan a cafe", r"Unknown kind 'slgan'\. Did you mean 'slogan'\? Kinds: slogan, tagline, tweet"),
        ("", r"Say what to create: /create <kind>"),
        ("slogan", r"Tell me what to write about: /create slogan <what it is about>"),
        ("slogan a cafe --n 6", r"--n must be a whole number from 1 to 5 \(got '6'\)"),
        ("slogan a cafe --n 0", r"--n must be a whole number from 1 to 5"),
        ("slogan a cafe --n three", r"--n must be a whole number from 1 to 5"),
        ("slogan a cafe --tone playfull", r"Unknown tone 'playfull'\. Did you mean 'playful'\? Tones: neutral"),
        ("slogan a cafe --tone", r"--tone needs a value, e\.g\. --tone playful"),
        ("slogan a cafe --colour red", r"Unknown option --colour\. Options: --tone, --length, --n"),
        (
            "slogan a cafe --length shrot",
            r"Unknown length 'shrot'\. Did you mean 'short'\? Lengths: short, medium, long",
        ),
        ("slogan a cafe --length", r"--length needs a value, e\.g\. --length short"),
        ("slogan a cafe --lenght short", r"Unknown option --lenght\. Did you mean 'length'\?"),
    ],
)
def test_bad_create_input(text: str, message: str, settings: Settings) -> None:
    with pytest.raises(UserError, match=message):
        parse_create(text, {}, settings)


def test_over_long_prompt_names_the_limit_from_config() -> None:
    settings = load_settings(env={"CHORUS_LIMITS__MAX_PROMPT_CHARS": "20"})
    with pytest.raises(UserError, match="That prompt is 30 characters; the limit is 20"):
        parse_create("slogan " + "x" * 30, {}, settings)


def test_remix_needs_a_tone_and_text(settings: Settings) -> None:
    assert parse_remix("we are open late --tone formal", {}, settings).text == "we are open late"
    with pytest.raises(UserError, match="Say which tone"):
        parse_remix("we are open late", {}, settings)
    with pytest.raises(UserError, match="Tell me what to write about: /remix"):
        parse_remix("--tone formal", {}, settings)
    # With nothing at all, the text is what is missing first; the usage shows the tone as required, as it is.
    with pytest.raises(UserError, match=r"Tell me what to write about: /remix <text to rewrite> --tone <tone> \["):
        parse_remix("", {}, settings)
