"""A torch-free Generator with scripted, deterministic output, for tests and `model.source = "fake"` demos."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable

from generation.types import Chunk, FinishReason, GenerationError, GenerationRequest, GeneratorBusy, Health

_log = logging.getLogger(__name__)

_OPENINGS = (
    "Here is a thought about",
    "A fresh take on",
    "Picture this, about",
    "One small idea for",
    "Try this angle on",
)
_ENDINGS = (
    "it hums like a bright new morning.",
    "the rest writes itself.",
    "every line finds its way home.",
    "quiet at first, then suddenly loud.",
    "simple, warm and a little strange.",
)


def default_script(request: GenerationRequest) -> str:
    """A short sentence built from the last user message; consecutive seeds always open differently."""
    prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    topic = " ".join(prompt.split()[:8]) or "nothing in particular"
    digest = hashlib.sha256(prompt.encode()).digest()
    seed = request.seed or 0
    return f"{_OPENINGS[(digest[0] + seed) % len(_OPENINGS)]} {topic}: {_ENDINGS[(digest[1] + seed) % len(_ENDINGS)]}"


def prompt_words(request: GenerationRequest) -> int:
    """The fake's prompt length in tokens: one per word of every message (it counts output in words too)."""
    return sum(len(message.content.split()) for message in request.messages)


class FakeGenerator:
    """Streams script(request) word by word, honouring max_new_tokens (words), stop strings, time budget and abort."""

    def __init__(
        self,
        script: Callable[[GenerationRequest], str] = default_script,
        *,
        delay_s: float = 0.0,
        fail_after: int | None = None,
        queued: int = 0,
        model: str = "fake",
    ) -> None:
        self.script = script
        self.delay_s = delay_s
        self.fail_after = fail_after
        # Pretend this many requests are ahead: emit queue-position chunks counting down before the text.
        self.queued = queued
        self.model = model
        self.busy = False
        # The wait a busy refusal states (its message and GeneratorBusy.retry_after_s).
        self.busy_retry_after_s = 1
        self.requests: list[GenerationRequest] = []
        self._running: set[str] = set()
        self._aborted: set[str] = set()
        self._closed = False

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the scripted words, then one final chunk."""
        if self._closed:
            raise GenerationError("The generator is closed.")
        if self.busy:
            wait = self.busy_retry_after_s
            raise GeneratorBusy(f"Chorus is busy (fake). Try again in {wait} s.", wait)
        self.requests.append(request)
        self._running.add(request.request_id)
        try:
            async for chunk in self._chunks(request):
                yield chunk
        finally:
            self._running.discard(request.request_id)
            self._aborted.discard(request.request_id)

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        rid = request.request_id
        prompt_tokens = prompt_words(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.time_budget_s
        for position in range(self.queued, 0, -1):
            yield Chunk(request_id=rid, queue_position=position, eta_s=position * 2.0)
        text = self.script(request)
        reason: FinishReason = "stop"
        cuts = [index for stop in request.stop if stop and (index := text.find(stop)) >= 0]
        if cuts:
            text = text[: min(cuts)]
        words = re.findall(r"\s*\S+\s*", text)
        if len(words) > request.max_new_tokens:
            words, reason = words[: max(request.max_new_tokens, 0)], "length"
        for count, word in enumerate(words, start=1):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if rid in self._aborted:
                yield Chunk(request_id=rid, finish_reason="abort", tokens=count - 1, prompt_tokens=prompt_tokens)
                return
            if loop.time() >= deadline:
                yield Chunk(request_id=rid, finish_reason="time", tokens=count - 1, prompt_tokens=prompt_tokens)
                return
            if self.fail_after is not None and count > self.fail_after:
                yield Chunk(request_id=rid, finish_reason="error", error="scripted failure", tokens=count - 1)
                return
            yield Chunk(request_id=rid, text=word, tokens=count)
        yield Chunk(request_id=rid, finish_reason=reason, tokens=len(words), prompt_tokens=prompt_tokens)

    async def abort(self, request_id: str) -> None:
        """Make a running stream end with 'abort' at its next word."""
        if request_id in self._running:
            self._aborted.add(request_id)

    async def health(self) -> Health:
        return Health(ok=not self._closed, detail="closed" if self._closed else "scripted output", model=self.model)

    async def close(self) -> None:
        self._closed = True
