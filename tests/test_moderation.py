"""Generated text never pings anyone; blocked words are refused in prompts and redacted in output."""

from __future__ import annotations

import pytest

from generation.moderation import Blocklist, StreamSanitizer, clean_output, neutralize_mentions

PINGS = ["@everyone", "@here", "@Everyone", "<@123456>", "<@!123>", "<@&987>", "<!channel>", "<!here>",
         "<!everyone>", "<@U024BE7LH>", "<!subteam^S123>", "＠everyone"]  # fmt: skip


@pytest.mark.parametrize("ping", PINGS)
def test_no_mention_syntax_survives(ping: str) -> None:
    cleaned = neutralize_mentions(f"hello {ping} and welcome")
    assert ping not in cleaned
    assert "\u200b" in cleaned
    assert cleaned.replace("\u200b", "").replace("@", "＠") == f"hello {ping} and welcome".replace("@", "＠")


def test_ordinary_text_is_untouched() -> None:
    text = "Email me@example.com, 3 < 4 > 2, see you @ noon"
    assert neutralize_mentions(text) == text


def test_blocklist_matches_whole_words_case_insensitively_and_redacts() -> None:
    blocklist = Blocklist(["darn", "bad word"])
    assert blocklist.find("well DARN it") == "DARN"
    assert blocklist.find("darned good") is None
    assert clean_output("a Bad Word here", blocklist) == "a ████████ here"


def test_stream_sanitizer_catches_a_mention_split_across_chunks() -> None:
    sanitizer = StreamSanitizer(Blocklist(["darn"]))
    pieces = ["Hey @every", "one, da", "rn it <!cha", "nnel> bye"]
    out = "".join(sanitizer.feed(piece) for piece in pieces) + sanitizer.flush()
    assert "@everyone" not in out and "<!channel>" not in out and "darn" not in out
    assert out.replace("\u200b", "") == "Hey @everyone, ████ it <!channel> bye"
