"""The prompt's line editor: keys in, finished lines out, with history on the up and down arrows.

A plain state machine over the characters the terminal sends (no terminal I/O here), so the loop never blocks on
input and Ctrl-C stays the loop's own (the terminal still turns it into SIGINT). It keeps the keys people expect
from readline: arrows, Home/End, Delete, Backspace, Ctrl-A/E/B/F/K/U/W/P/N, and Ctrl-D (end of input on an empty
line, otherwise delete). Only printable characters enter a line. Text pasted while the terminal marks pastes
(bracketed paste) is one line: its line breaks become spaces, so a pasted paragraph is not several commands.
"""

from __future__ import annotations

HISTORY_LIMIT = 1000  # lines kept for the up arrow

# What a line-editing key does, by the characters the terminal sends for it.
_KEYS = {
    "\x01": "home",
    "\x02": "left",
    "\x05": "end",
    "\x06": "right",
    "\x08": "backspace",
    "\x0b": "kill_end",
    "\x0e": "down",
    "\x10": "up",
    "\x15": "kill_start",
    "\x17": "kill_word",
    "\x7f": "backspace",
}
_SEQUENCES = {
    "[A": "up",
    "[B": "down",
    "[C": "right",
    "[D": "left",
    "[H": "home",
    "[F": "end",
    "OA": "up",
    "OB": "down",
    "OC": "right",
    "OD": "left",
    "OH": "home",
    "OF": "end",
    "[1~": "home",
    "[7~": "home",
    "[4~": "end",
    "[8~": "end",
    "[3~": "delete",
    "[200~": "paste_start",
    "[201~": "paste_end",
}
# Sent to the terminal: mark pasted text with ESC[200~ … ESC[201~ (terminals that do not know it ignore these).
BRACKETED_PASTE_ON, BRACKETED_PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l"

END_OF_INPUT = None


class LineEditor:
    """The line being typed (`text`, `cursor`) and the lines typed before it (`history`, oldest first)."""

    def __init__(self, history_limit: int = HISTORY_LIMIT) -> None:
        self.text = ""
        self.cursor = 0
        self.history: list[str] = []
        self.history_limit = history_limit
        self._browsing: int | None = None  # index into history while the arrows walk it
        self._draft = ""  # the line being typed before the up arrow was pressed
        self._escape: str | None = None  # an escape sequence not complete yet (split across reads)
        self._after_cr = False
        self._pasting = False

    def feed(self, keys: str) -> list[str | None]:
        """Apply what the terminal sent; returns the lines it finished, and END_OF_INPUT for Ctrl-D on an empty
        line (nothing after it is read)."""
        finished: list[str | None] = []
        for key in keys:
            if self._escape is not None:
                self._escape += key
                if self._sequence_done():
                    self._do(_SEQUENCES.get(self._escape[1:], ""))
                    self._escape = None
                continue
            after_cr, self._after_cr = self._after_cr, False
            if key == "\x1b":
                self._escape = key
            elif key in "\r\n":
                if key == "\n" and after_cr:
                    continue  # \r\n is one Enter
                self._after_cr = key == "\r"
                if self._pasting:
                    self._insert(" ")
                else:
                    finished.append(self._enter())
            elif key == "\x04":
                if not self.text:
                    finished.append(END_OF_INPUT)
                    return finished
                self._do("delete")
            elif key in _KEYS:
                self._do(_KEYS[key])
            elif key == "\t":
                self._insert(" ")
            elif key.isprintable():
                self._insert(key)
        return finished

    def clear(self) -> None:
        """Ctrl-C: drop the line being typed (it is not kept in the history)."""
        self.text, self.cursor = "", 0
        self._browsing, self._draft, self._escape = None, "", None

    def _sequence_done(self) -> bool:
        sequence = self._escape or ""
        if len(sequence) < 2:
            return False
        if sequence[1] not in "[O":
            return True  # Alt+key: ignored
        if len(sequence) < 3:
            return False
        # CSI ends with a byte in @..~; SS3 is one character after the O.
        return sequence[1] == "O" or "@" <= sequence[-1] <= "~"

    def _enter(self) -> str:
        line = self.text
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[: -self.history_limit]
        self.clear()
        return line

    def _insert(self, text: str) -> None:
        self.text = self.text[: self.cursor] + text + self.text[self.cursor :]
        self.cursor += len(text)

    def _show(self, text: str) -> None:
        self.text, self.cursor = text, len(text)

    def _do(self, action: str) -> None:
        text, cursor = self.text, self.cursor
        if action == "left":
            self.cursor = max(0, cursor - 1)
        elif action == "right":
            self.cursor = min(len(text), cursor + 1)
        elif action == "home":
            self.cursor = 0
        elif action == "end":
            self.cursor = len(text)
        elif action == "backspace" and cursor:
            self.text, self.cursor = text[: cursor - 1] + text[cursor:], cursor - 1
        elif action == "delete":
            self.text = text[:cursor] + text[cursor + 1 :]
        elif action == "kill_end":
            self.text = text[:cursor]
        elif action == "kill_start":
            self.text, self.cursor = text[cursor:], 0
        elif action == "kill_word":
            start = len(text[:cursor].rstrip())
            start = text.rfind(" ", 0, start) + 1
            self.text, self.cursor = text[:start] + text[cursor:], start
        elif action in ("paste_start", "paste_end"):
            self._pasting = action == "paste_start"
        elif action == "up" and self.history and self._browsing != 0:
            if self._browsing is None:
                self._draft, self._browsing = text, len(self.history)
            self._browsing -= 1
            self._show(self.history[self._browsing])
        elif action == "down" and self._browsing is not None:
            self._browsing += 1
            if self._browsing == len(self.history):
                self._browsing = None
                self._show(self._draft)
            else:
                self._show(self.history[self._browsing])
