"""Clicks being worked on: the same person pressing the same button on the same result twice (a double click, or an
impatient second press while "thinking…" shows) gets one new version, not two."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bots.events import Action

ALREADY_ON_IT = "Already on it: that version is being written now. One click is enough."

ClickKey = tuple[str, str, str, int | None, str, str]


def click_key(action: Action) -> ClickKey:
    """Who clicked what: platform, workspace, person, result, button and its value."""
    conversation = action.conversation
    return (
        conversation.platform,
        conversation.workspace,
        action.user.id,
        action.target_id,
        action.action_id,
        action.value,
    )


class Clicks:
    """The generating clicks in progress. Bounded by what is in flight: each key is released when its work ends."""

    def __init__(self) -> None:
        self._running: set[ClickKey] = set()

    def __len__(self) -> int:
        return len(self._running)

    def busy(self, action: Action) -> bool:
        """Is the same click from the same person still being worked on?"""
        return click_key(action) in self._running

    @contextmanager
    def hold(self, action: Action) -> Iterator[bool]:
        """Mark this click as in progress for the block; yields False (and marks nothing) when it already was."""
        key = click_key(action)
        if key in self._running:
            yield False
            return
        self._running.add(key)
        try:
            yield True
        finally:
            self._running.discard(key)
