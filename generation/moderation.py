"""Input and output moderation: mention neutralizing and a configurable blocklist. Pure Python, no model.

Every reply passes through `neutralize_mentions`, so generated text can never ping @everyone, @here, a role or a user
on Discord, or <!channel>/<!here>/<@U…> on Slack, whatever the adapter's own safeguards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ZWSP = "\u200b"

# Discord: @everyone, @here, <@123>, <@!123>, <@&123>. Slack: <!channel>, <!here>, <!everyone>, <@U123>,
# <!subteam^S123>. A zero-width space after the trigger character keeps the text readable and inert.
_AT_WORD = re.compile(r"@(?=(everyone|here|channel)\b)", re.IGNORECASE)
_ANGLE = re.compile(r"<(?=[@!#]|/?(everyone|here|channel)\b)")
_FULLWIDTH_AT = re.compile("[\uff20\ufe6b]")


def neutralize_mentions(text: str) -> str:
    """Return text in which no mention syntax survives, on any platform."""
    text = _FULLWIDTH_AT.sub("@", text)
    text = _AT_WORD.sub("@" + ZWSP, text)
    return _ANGLE.sub("<" + ZWSP, text)


class Blocklist:
    """Words or phrases that are refused in prompts and redacted from output (case-insensitive, whole words)."""

    def __init__(self, phrases: Iterable[str]) -> None:
        cleaned = sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in cleaned) + r")(?!\w)", re.IGNORECASE)
            if cleaned
            else None
        )

    def find(self, text: str) -> str | None:
        """The first blocked phrase in text, or None."""
        if self._pattern is None:
            return None
        match = self._pattern.search(text)
        return match.group(0) if match else None

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: "█" * len(m.group(0)), text)


def clean_output(text: str, blocklist: Blocklist) -> str:
    return neutralize_mentions(blocklist.redact(text))


class StreamSanitizer:
    """Cleans streamed text without splitting a mention or a blocked word across two deltas.

    It holds back the trailing unfinished word (text after the last whitespace) until the word is complete, so
    `feed("@every")` then `feed("one ")` emits a neutralized `@everyone`.
    """

    HOLD_LIMIT = 64

    def __init__(self, blocklist: Blocklist) -> None:
        self._blocklist = blocklist
        self._pending = ""

    def feed(self, delta: str) -> str:
        self._pending += delta
        cut = max(self._pending.rfind(" "), self._pending.rfind("\n"), self._pending.rfind("\t")) + 1
        if len(self._pending) - cut > self.HOLD_LIMIT:
            cut = len(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return clean_output(ready, self._blocklist) if ready else ""

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return clean_output(ready, self._blocklist) if ready else ""
