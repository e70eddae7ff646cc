"""A clean stop for every platform: generations in flight end at once with the text they have, and say so.

An adapter installs `Draining` around Chorus' generator when it starts and calls `drain()` on SIGTERM/SIGINT. Each
stream in flight is aborted and then fails with `ShuttingDown`, which the studio treats like any stopped
generation: the variants so far are stored as a partial version (so its Regenerate button works after the
restart) and delivered with the note below. New requests are refused with the same note.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from generation.types import Chunk, GenerationRequest, GeneratorBusy, Health

if TYPE_CHECKING:
    from bots.app import Chorus
    from generation.types import Generator

_log = logging.getLogger(__name__)

RESTART_NOTE = "Chorus restarted — press Regenerate."


class ShuttingDown(GeneratorBusy):
    """Chorus is stopping: the generation was cut short or not started. Shown to the user as it is."""


class Draining:
    """A Generator that passes everything through to `inner` until `drain()`, then ends every stream."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.draining = False
        self._running: set[str] = set()

    @classmethod
    def install(cls, chorus: Chorus) -> Draining:
        """Wrap `chorus.generator` (once) and return the wrapper."""
        generator = chorus.generator
        if not isinstance(generator, Draining):
            generator = cls(generator)
            chorus.generator = generator
        return generator

    @property
    def running(self) -> int:
        return len(self._running)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if self.draining:
            raise ShuttingDown(RESTART_NOTE)
        self._running.add(request.request_id)
        try:
            async for chunk in self.inner.stream(request):
                yield chunk
        finally:
            self._running.discard(request.request_id)
        if self.draining:
            raise ShuttingDown(RESTART_NOTE)

    async def drain(self) -> None:
        """Refuse new requests and abort the running ones; their streams end with ShuttingDown."""
        self.draining = True
        running = list(self._running)
        if running:
            _log.info("stopping: ending %d generation(s) in flight", len(running))
        for request_id in running:
            try:
                await self.inner.abort(request_id)
            except Exception:
                _log.exception("could not abort generation %s", request_id)

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def health(self) -> Health:
        return await self.inner.health()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """Anything else (engine statistics, say) is the wrapped generator's."""
        return getattr(self.inner, name)
