"""Trimming and degeneration checks shared by the studio, brainstorm and drops."""

import pytest

from generation.text import ends_cleanly, is_degenerate, trim_to_complete


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bold coffee for bright mornings. Fresh every day and", "Bold coffee for bright mornings."),
        ("Roses bloom\nUnder the moon\nAnd the night is", "Roses bloom\nUnder the moon"),
        ("Is it ready? Yes! And then the", "Is it ready? Yes!"),
    ],
)
def test_text_stopped_by_the_budget_is_trimmed_to_its_last_complete_sentence_or_line(text, expected):
    trimmed = trim_to_complete(text, stopped_early=True)
    assert (trimmed.text, trimmed.cut) == (expected, True)


def test_text_that_ended_on_its_own_is_kept_whole():
    assert trim_to_complete("Brew joy and", stopped_early=False).text == "Brew joy and"
    assert trim_to_complete("Brew joy.", stopped_early=True) == trim_to_complete("Brew joy.", stopped_early=False)
    assert not trim_to_complete("Brew joy.", stopped_early=True).cut


def test_one_unfinished_sentence_is_kept_but_marked_cut():
    assert trim_to_complete("Implement a weekly", stopped_early=True).cut
    assert trim_to_complete("Implement a weekly", stopped_early=True).text == "Implement a weekly"
    assert not ends_cleanly("Implement a weekly")


@pytest.mark.parametrize("text", ["", "   ", "The 1111111111111111", "go go go go go go go go go go go go go go"])
def test_degenerate_text_is_recognised(text):
    assert is_degenerate(text)


@pytest.mark.parametrize(
    "text",
    ["Wake up and smell the ambition.", "Roses are red,\nviolets are blue,\nsugar is sweet,\nand so are you."],
)
def test_ordinary_copy_is_not_degenerate(text):
    assert not is_degenerate(text)
