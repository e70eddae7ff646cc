"""Command text parsing: every mistake gets a one-line message the user can act on."""

from __future__ import annotations

import pytest

from bots.errors import UserError
from bots.parsing import CreateRequest, create_request, parse_create, parse_remix, parse_tone
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
        ("slogan a cafe --lenght short", r"Unknown option --lenght\. Did you mean --length\?"),
    ],
)
def test_bad_create_input(text: str, message: str, settings: Settings) -> None:
    with pytest.raises(UserError, match=message):
        parse_create(text, {}, settings)


@pytest.mark.parametrize(
    ("text", "kind", "prompt"),
    [
        ("a poem about the sea", "poem", "the sea"),
        ("an ad for running shoes", "ad", "running shoes"),
        ("me a slogan for my bakery", "slogan", "my bakery"),
        ("The tagline for a tea shop", "tagline", "a tea shop"),
        ("ad a new bakery", "ad", "a new bakery"),
    ],
)
def test_an_article_before_the_kind_is_skipped(text: str, kind: str, prompt: str, settings: Settings) -> None:
    args = parse_create(text, {}, settings)
    assert (args.kind, args.prompt) == (kind, prompt)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("slogan for my bakery", "my bakery"),  # the template says "slogan for {prompt}"
        ("poem about the sea", "the sea"),  # "poem about {prompt}"
        ("slogan about coffee", "coffee"),  # "about" never needs keeping
        ("description of my shop", "my shop"),
        ("story for kids who love dragons", "for kids who love dragons"),  # "story about for kids" is theirs
        ("poem about", "about"),  # a prompt of one word is left alone
    ],
)
def test_a_preposition_the_template_already_has_is_not_doubled(text: str, prompt: str, settings: Settings) -> None:
    assert parse_create(text, {}, settings).prompt == prompt


def test_variants_is_another_name_for_n(settings: Settings) -> None:
    assert parse_create("poem the sea --variants 3", {}, settings).n == 3
    assert parse_create("poem the sea —variants=2", {}, settings).n == 2
    with pytest.raises(UserError, match=r"Unknown option --varients\. Did you mean --n\? Options: --tone"):
        parse_create("poem the sea --varients 3", {}, settings)
    with pytest.raises(UserError, match=r"--n must be a whole number from 1 to 5 \(got '9'\)"):
        parse_create("poem the sea --variants 9", {}, settings)


def test_quoted_option_values_are_the_value_inside(settings: Settings) -> None:
    args = parse_create('poem "the sea" --tone \'witty\' --length=“short” --n "2"', {}, settings)
    assert (args.prompt, args.tone, args.length, args.n) == ('"the sea"', "witty", "short", 2)


def test_over_long_prompt_names_the_limit_from_config() -> None:
    settings = load_settings(env={"CHORUS_LIMITS__MAX_PROMPT_CHARS": "20"})
    with pytest.raises(UserError, match="That prompt is 30 characters; the limit is 20"):
        parse_create("slogan " + "x" * 30, {}, settings)


def test_remix_needs_a_tone_and_text(settings: Settings) -> None:
    assert parse_remix("we are open late --tone formal", {}, settings).text == "we are open late"
    with pytest.raises(UserError, match="Say which tone"):
        parse_remix("we are open late", {}, settings)
    # Remix rewrites a text: it used to ask "Tell me what to write about", as /create does.
    with pytest.raises(UserError, match="Give the text to rewrite: /remix"):
        parse_remix("--tone formal", {}, settings)
    # With nothing at all, the text is what is missing first; the usage shows the tone as required, as it is.
    with pytest.raises(UserError, match=r"Give the text to rewrite: /remix <text to rewrite> --tone <tone> \["):
        parse_remix("", {}, settings)
    with pytest.raises(UserError, match="That text is 1001 characters; the limit is 1000"):
        parse_remix("x" * 1001 + " --tone formal", {}, settings)


def test_a_tone_is_found_whatever_its_case_and_a_mood_word_points_to_the_closest_tones(settings: Settings) -> None:
    operator = load_settings(env={"CHORUS_TONES": '["Playful", "Formal", "Very Corporate"]'})
    assert parse_tone("playful", operator) == "Playful" and parse_tone("FORMAL", operator) == "Formal"
    assert {parse_tone(typed, operator) for typed in ("very-corporate", "very_corporate", "VeryCorporate")} == {
        "Very Corporate"
    }
    with pytest.raises(UserError, match=r"Unknown tone 'funny'\. Closest in mood: witty or playful\. Tones: neutral"):
        parse_tone("funny", settings)
    with pytest.raises(UserError, match=r"Unknown tone 'zany'\. Tones: neutral"):
        parse_tone("zany", settings)


def test_an_option_given_twice_with_different_values_is_refused_not_silently_overwritten(settings: Settings) -> None:
    with pytest.raises(UserError, match=r"--n is given twice \(2 and 3\): give it once\."):
        parse_create("poem the sea --n 2 --n 3", {}, settings)
    assert parse_create("poem the sea --n 2 --n=2", {}, settings).n == 2


@pytest.mark.parametrize(
    ("said", "bare", "expected"),
    [
        ("write a slogan for our bake sale", False, CreateRequest("slogan for our bake sale")),
        ("hey chorus, can you please make 3 taglines for my café?", False, CreateRequest("tagline for my café", "3")),
        ("/create poem the sea --tone witty", False, CreateRequest("poem the sea --tone witty")),
        ("give me two stories about a lost umbrella", False, CreateRequest("story about a lost umbrella", "2")),
        ("a poem about the sea", True, CreateRequest("poem about the sea")),
        ("a poem about the sea", False, None),  # without a verb, only where nothing could be changed
        ("make a poem out of it", False, None),  # points back at the result: a change
        ("write a shorter one", False, None),
        ("make it rhyme", True, None),
        ("write a poem", False, None),  # no topic
    ],
)
def test_a_request_in_words_is_the_create_it_names(
    settings: Settings, said: str, bare: bool, expected: CreateRequest | None
) -> None:
    assert create_request(said, settings, bare=bare) == expected
