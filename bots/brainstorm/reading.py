"""How the embedded model reads each brainstorm idea, as a second view beside MiniLM's sentence vectors.

The ideas of one theme differ in wording but share a purpose ("a café corner" and "a vending machine for snacks" are
both food). MiniLM places a sentence mostly by its words; the chat model, asked for a suggestion's category, holds
in its hidden state something closer to the purpose. The prompt asks for the category and the state is taken at the
quote where the answer would start, two layers before the last (bench/brainstorm_llm_features.py measured this
view on the three labelled sets; docs/brainstorm.md has the figures). No tokens are generated.

Each idea is read once, when it arrives (`prefetch`), so ending a round only reads ideas the process has not seen
(after a restart, or Chorus' own ideas); results are kept per (topic, idea) in a bounded cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from generation.types import Generator, TextReader

_log = logging.getLogger(__name__)

TEMPLATE = 'Question: {topic}\nSuggestion: {idea}\nThe category of this suggestion in one word is: "'
# The part of an idea and of the topic the model reads (the prompt stays short; the state is at its end).
IDEA_CHARS = 400
TOPIC_CHARS = 300
# Hidden state after all but this many layers (the last layers already lean towards the next word's spelling).
SKIP_LAST = 2
CACHE_SIZE = 4096


def prompt(topic: str, idea: str) -> str:
    return TEMPLATE.format(topic=" ".join(topic.split())[:TOPIC_CHARS], idea=" ".join(idea.split())[:IDEA_CHARS])


class IdeaReader:
    """The model's reading of ideas, cached; `available` is False for generators that cannot read (remote ones)."""

    def __init__(self, generator: Generator, cache_size: int = CACHE_SIZE) -> None:
        self._reader = generator if isinstance(generator, TextReader) else None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, asyncio.Future[np.ndarray | None]] = {}
        self._cache_size = cache_size
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def available(self) -> bool:
        return self._reader is not None

    def prefetch(self, topic: str, ideas: Sequence[str]) -> None:
        """Read these ideas in the background (an idea just posted), so the round's end finds them read."""
        if self._reader is None:
            return
        task = asyncio.get_running_loop().create_task(self._quietly(topic, ideas))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, topic: str, ideas: Sequence[str]) -> None:
        try:
            await self.vectors(topic, ideas)
        except Exception:  # a failed early read is retried when the round ends
            _log.debug("reading ideas ahead failed", exc_info=True)

    async def vectors(self, topic: str, ideas: Sequence[str]) -> np.ndarray | None:
        """One row per idea, in order; None when the model cannot read them (the caller uses MiniLM alone)."""
        if self._reader is None:
            return None
        keys = [prompt(topic, idea) for idea in ideas]
        got: dict[str, np.ndarray] = {}
        waits: dict[str, asyncio.Future[np.ndarray | None]] = {}
        missing: list[str] = []
        for key in dict.fromkeys(keys):
            if key in self._cache:
                got[key] = self._cache[key]
                self._cache.move_to_end(key)
            elif key in self._pending:
                waits[key] = self._pending[key]
            else:
                missing.append(key)
        if missing:
            loop = asyncio.get_running_loop()
            futures = {key: loop.create_future() for key in missing}
            self._pending.update(futures)
            try:
                rows = await self._reader.read(missing, skip_last=SKIP_LAST)
                for key, values in zip(missing, rows, strict=True):
                    futures[key].set_result(np.asarray(values, dtype=np.float32))
            finally:
                for key in missing:
                    self._pending.pop(key, None)
                    if not futures[key].done():
                        futures[key].set_result(None)  # those waiting on a failed read fall back, not hang
            for key in missing:
                got[key] = futures[key].result()  # type: ignore[assignment]
                self._remember(key, got[key])
        for key, future in waits.items():
            read = await asyncio.shield(future)
            if read is None:
                return None  # that read failed; fall back rather than wait again
            got[key] = read
        return np.vstack([got[key] for key in keys])

    def _remember(self, key: str, row: np.ndarray) -> None:
        self._cache[key] = row
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):  # closing: whatever the read did, it is over
                await task
