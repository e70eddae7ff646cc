"""Checks and repairs on model text that every feature shares: did it end cleanly, has it degenerated.

Pure string work. A small model stops at its token budget mid-sentence and sometimes loops ("111111…"); the
studio, brainstorm and drops all trim and reject such text through these two functions, so they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends with . ! ? … (optionally followed by closing quotes/brackets) or an emoji-ish symbol.
_SENTENCE_END = re.compile(r"[.!?…](?:[\"'”’)\]]*)(?=\s|$)")
_CHAR_RUN = re.compile(r"(.)\1{7,}")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Trimmed:
    """`text` after trimming; `cut` is True when something unfinished was removed."""

    text: str
    cut: bool


def ends_cleanly(text: str) -> bool:
    """True when the last line is finished: it ends a sentence, or it is a short line such as a title or list item
    whose last word is complete (the caller knows the text was not stopped by a token budget)."""
    stripped = text.rstrip()
    if not stripped:
        return False
    return bool(_SENTENCE_END.search(stripped[-3:] + " ")) or stripped[-1] in "\"'”’)]*#"


def trim_to_complete(text: str, *, stopped_early: bool) -> Trimmed:
    """Trim text a budget stopped (`stopped_early`) back to its last complete sentence or line.

    Text that ended on its own is returned as it is. When nothing complete remains (one unfinished sentence), the
    text is kept whole rather than emptied, and `cut` still says it is unfinished.
    """
    text = text.rstrip()
    if not stopped_early or not text or ends_cleanly(text):
        return Trimmed(text, False)
    lines = text.split("\n")
    # Multi-line kinds (poems, lists, outlines): drop the unfinished last line when earlier lines exist.
    if len(lines) > 1:
        kept = "\n".join(lines[:-1]).rstrip()
        if kept:
            return Trimmed(kept, True)
    last_end = None
    for match in _SENTENCE_END.finditer(text):
        last_end = match.end()
    if last_end:
        return Trimmed(text[:last_end].rstrip(), True)
    return Trimmed(text, True)


def is_degenerate(text: str, *, max_repeat_share: float = 0.5) -> bool:
    """True for empty text, a run of one character ("11111111"), or text that is mostly one repeated phrase."""
    stripped = text.strip()
    if not _WORD.search(stripped):
        return True
    if _CHAR_RUN.search(stripped.replace(" ", "").replace(".", "")):
        return True
    words = [w.lower() for w in _WORD.findall(stripped)]
    if len(words) >= 12:
        trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
        most = max(trigrams.count(t) for t in set(trigrams))
        if most * 3 / len(words) > max_repeat_share:
            return True
    return False


def shorten_to(text: str, max_words: int) -> str:
    """Keep the complete sentences of text that fit in max_words (whole lines, for a poem or a list); a single
    sentence keeps its leading clauses that fit ("Fresh bread, warm coffee, five minutes from home." → "Fresh
    bread, warm coffee."). Text that cannot be cut at a line, sentence or clause stays whole."""
    if len(text.split()) <= max_words:
        return text
    lines = text.strip().split("\n")
    if sum(1 for line in lines if line.strip()) > 1:
        kept_lines: list[str] = []
        for line in lines:
            if len(" ".join([*kept_lines, line]).split()) > max_words:
                break
            kept_lines.append(line)
        shortened = "\n".join(kept_lines).strip()
        if shortened:
            return shortened
        # Even the first line is too long (a paragraph): its leading sentences, below.
    pieces = re.findall(r"[^\n.!?…]+[.!?…]+[\"'”’)]*|[^\n]+", text)
    kept = ""
    for piece in pieces:
        candidate = (kept + " " + piece.strip()).strip() if kept else piece.strip()
        if len(candidate.split()) > max_words:
            break
        kept = candidate
    if kept:
        return kept
    first = pieces[0].strip() if pieces else text.strip()
    end = first[-1] if first and first[-1] in ".!?…" else "."
    clauses = re.split(r"(?<=[,;:—–])\s+", first.rstrip(".!?… "))
    short = ""
    for clause in clauses:
        candidate = f"{short} {clause}".strip()
        if len(candidate.split()) > max_words:
            break
        short = candidate
    short = short.rstrip(",;:—– ")
    return short + end if short and len(short.split()) >= 2 else text


def short(text: str, limit: int) -> str:
    """One line, at most `limit` characters, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
