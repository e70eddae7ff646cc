"""What callers of the generation core see: requests, streamed chunks, health, errors, and the Generator protocol.

This module imports neither torch nor transformers, so bots and adapters can depend on it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "time", "abort", "error"]


class Priority(IntEnum):
    """Lower runs first in the batching engine (commands, brainstorms, drops); the simple LocalGenerator is FIFO."""

    INTERACTIVE = 0
    BRAINSTORM = 1
    SCHEDULED = 2


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


def _new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class GenerationRequest:
    """One completion: a chat prompt plus sampling parameters and stop rules."""

    messages: tuple[ChatMessage, ...]
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    time_budget_s: float = 60.0
    request_id: str = field(default_factory=_new_request_id)
    priority: Priority = Priority.INTERACTIVE
    # Who asked, so the engine can take turns across conversations; opaque to it otherwise.
    conversation_key: str = ""
    # True: max_new_tokens is only a ceiling, lowered to what fits in the context after the prompt (an OpenAI
    # request without max_tokens). False: a request that does not fit is refused with RequestTooLarge.
    fit_max_new_tokens: bool = False
    # Above 1.0, tokens this request has already generated become less likely (CTRL's multiplicative penalty: a
    # positive logit is divided by it, a negative one multiplied), which breaks degenerate loops; 1.0 = no effect.
    # The prompt is not penalised, so a reply may still use the words it was asked about.
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output. The last chunk of a stream has finish_reason set and may carry no text."""

    request_id: str
    text: str = ""
    finish_reason: FinishReason | None = None
    error: str | None = None
    # Tokens generated so far, counting this chunk.
    tokens: int = 0
    # While a request waits its turn, engines may send text-less chunks saying where it stands (1 = next).
    queue_position: int | None = None
    eta_s: float | None = None
    # Tokens in the prompt as the model saw it (chat template included), on the final chunk; None when unknown.
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
    model: str = ""


class GenerationError(Exception):
    """The generator could not run a request; the message is safe to show to a user."""


class ModelUnavailable(GenerationError):
    """No model can be loaded: missing files, offline, or a bad path. The message says what to run."""


class GeneratorBusy(GenerationError):
    """The queue is full; try again later. retry_after_s, when known, is the wait the message states."""

    def __init__(self, message: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTooLarge(GenerationError):
    """The prompt plus the new tokens asked for do not fit in what the model holds; the message says the limit."""


@runtime_checkable
class Generator(Protocol):
    """The generation core as every caller sees it (after vLLM's EngineClient): stream, abort, health, close."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield chunks as text is produced; the last one has finish_reason set."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a running or queued request; its stream ends with finish_reason 'abort'."""
        ...

    async def health(self) -> Health: ...

    async def close(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings for clustering brainstorm ideas and keeping drops from repeating themselves."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


@runtime_checkable
class TextReader(Protocol):
    """A generator that can also say how its model reads texts (the in-process engine; a remote one cannot): brainstorm
    themes use it beside sentence embeddings."""

    async def read(self, texts: Sequence[str], *, skip_last: int = 2) -> list[list[float]]:
        """The model's hidden state at each text's last token after all but the last `skip_last` layers."""
        ...
