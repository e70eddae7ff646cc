"""Input and output moderation: a configurable blocklist. Pure Python, no model.

Mentions are not this module's business: each adapter defuses its own platform's mention syntax when it renders
(adapters/discord/render.py `sanitize`, adapters/slack/render.py `escape`), so the stored text stays as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


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
    """Generated text with blocked phrases redacted."""
    return blocklist.redact(text)


class StreamSanitizer:
    """Cleans streamed text without splitting a blocked word across two deltas.

    It holds back the trailing unfinished word (text after the last whitespace) until the word is complete, so
    `feed("da")` then `feed("rn ")` emits a redacted `darn`.
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
