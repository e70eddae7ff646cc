"""Blocked words are refused in prompts and redacted in output, also when a word arrives split across deltas.

Mentions are defused by each adapter (tests/test_discord_render.py, tests/test_slack_render.py)."""

from __future__ import annotations

from generation.moderation import Blocklist, StreamSanitizer, clean_output


def test_blocklist_matches_whole_words_case_insensitively_and_redacts() -> None:
    blocklist = Blocklist(["darn", "bad word"])
    assert blocklist.find("well DARN it") == "DARN"
    assert blocklist.find("darned good") is None
    assert clean_output("a Bad Word here", blocklist) == "a ████████ here"


def test_stream_sanitizer_catches_a_blocked_word_split_across_chunks() -> None:
    sanitizer = StreamSanitizer(Blocklist(["darn"]))
    pieces = ["Hey @every", "one, da", "rn it <!cha", "nnel> bye"]
    out = "".join(sanitizer.feed(piece) for piece in pieces) + sanitizer.flush()
    assert out == "Hey @everyone, ████ it <!channel> bye"  # mention syntax is the adapters' business
