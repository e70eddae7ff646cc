"""The scorecard's checks on copy a person would and would not use."""

from __future__ import annotations

import pytest

from generation.scorecard import has_format, has_meta, is_complete, near_duplicate, score_variant


@pytest.mark.parametrize(
    ("kind", "text", "complete"),
    [
        ("tweet", "Open at 6am from Monday. See you there!", True),
        ("tweet", "Open at 6am from Monday. See you there and", False),
        ("tweet", "New hours from Monday ☕", True),
        ("slogan", "Brew joy daily", True),
        ("slogan", "Brew joy and", False),
        ("poem", "Rain on the street\nsoft on my feet\nthe city is", False),
        ("poem", "Rain on the street\nsoft on my feet", True),
        ("names", "Brewline, Quillbean,", False),
    ],
)
def test_complete(kind: str, text: str, complete: bool) -> None:
    assert is_complete(text, kind) is complete


@pytest.mark.parametrize(
    ("kind", "text", "ok"),
    [
        ("slogan", "Brew joy daily.", True),
        ("slogan", "One two three four five six seven eight nine ten eleven twelve thirteen.", False),
        ("slogan", "Brew joy.\nSip calm.", False),
        ("tweet", "x" * 281, False),
        ("names", "Brewline, Quillbean, Steep & Story", True),
        ("names", "Brewline", False),
        ("names", "1. Brewline\n2. Quillbean\n3. Inkwell", True),
        ("outline", "- Intro\n- Tools\n- Recipes", True),
        ("outline", "- Intro\n- Tools", False),
        ("poem", "one\ntwo\nthree\nfour", True),
        ("poem", "one\ntwo\nthree", False),
    ],
)
def test_format(kind: str, text: str, ok: bool) -> None:
    assert has_format(text, kind) is ok


@pytest.mark.parametrize(
    "text",
    [
        "Here's a catchy slogan for your cafe: Brew joy.",
        "Sure! Brew joy.",
        "Slogan: Brew joy.",
        "Brew joy. (2 words)",
        "Visit [Your Company Name] today.",
    ],
)
def test_meta_text_is_caught(text: str) -> None:
    assert has_meta(text, "slogan")


def test_echoed_instructions_are_meta_but_ordinary_copy_is_not() -> None:
    ask = "Write one playful slogan for a cafe. Under 12 words."
    assert has_meta("Write one playful slogan for a cafe that sells books", "slogan", [ask])
    assert not has_meta("Here's to Mondays with good coffee.", "slogan", [ask])
    assert not has_meta("Verse 1:\nRoad ahead\nChorus:\nSing it loud", "lyrics")


def test_score_combines_checks_and_relevance() -> None:
    good = score_variant("Brew joy daily.", "slogan", relevance=0.5)
    assert good.passed and not good.failed
    off = score_variant("Brew joy daily.", "slogan", relevance=0.05)
    assert off.failed == ("on_topic",) and off.rank < good.rank
    copy = score_variant("Brew joy daily!", "slogan", others=["brew joy daily"])
    assert copy.failed == ("distinct",)
    assert near_duplicate("Brew joy daily", "Brew joy, daily.") and not near_duplicate("Brew joy", "Sip calm")
    assert score_variant("go go go go go go go go go go go go go", "slogan").checks["not_degenerate"] is False
