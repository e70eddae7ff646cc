"""The studio turns a Draft (what to write, with what context) into streamed variants and a stored version.

Every command that generates goes through here, so streaming, output moderation, partial failures and storage
behave the same for /create, /remix and every refinement.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bots.reply import Reply, ReplyStream
from bots.store import GenerationRecord
from config import KindSpec, Settings
from generation.moderation import StreamSanitizer, clean_output
from generation.prompts import Turn, build_messages, clean_variant
from generation.types import ChatMessage, Chunk, GenerationError, GenerationRequest, GeneratorBusy, Priority

if TYPE_CHECKING:
    from bots.router import Context

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """Everything needed to generate one version and to store it."""

    kind: str
    tone: str
    prompt: str
    spec: KindSpec
    first_ask: str
    n: int
    instruction: str = ""
    turns: tuple[Turn, ...] = ()
    ask: str = ""
    # Refinements such as "shorter" rework each variant on its own: variant i sees only its own last text.
    per_variant: bool = False
    parent: GenerationRecord | None = None
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    # Scheduled drops run below commands, so a user never waits behind a drop.
    priority: Priority = Priority.INTERACTIVE
    # The /create --length name, stored so refinements keep it; `spec` and `first_ask` already reflect it.
    length: str = ""

    def messages(self, index: int) -> tuple[ChatMessage, ...]:
        turns = self.turns
        if self.per_variant and turns:
            last = turns[-1]
            own = last.answer[index] if index < len(last.answer) else last.answer[-1]
            turns = (*turns[:-1], Turn(last.ask, (own,)))
        return build_messages(self.spec, self.first_ask, turns, self.ask)


@dataclass
class _Outcome:
    variants: list[str] = field(default_factory=list)
    finish: list[str] = field(default_factory=list)
    tokens: int = 0
    failure: str = ""


class Studio:
    def __init__(self, app) -> None:
        self.app = app

    async def run(self, ctx: Context, draft: Draft) -> GenerationRecord | None:
        """Stream draft.n variants into one message, store the version, and finish with the feedback actions."""
        from bots.feedback import result_actions

        settings = self.app.settings
        # Every generation acknowledges first: platforms give an interaction about 3 s before it expires.
        await ctx.responder.defer()
        version = 1
        if draft.parent is not None:
            version = max(r.version for r in await self.app.store.versions(draft.parent.root_id)) + 1
        stream = ctx.responder.stream(_title(draft, version))
        started = time.monotonic()
        outcome = await self._generate(ctx, draft, stream)
        elapsed = time.monotonic() - started
        if not any(outcome.variants):
            await stream.finish(Reply(parts=(f"⚠ {outcome.failure or 'The model returned nothing. Try again.'}",)))
            return None
        status = "ok" if not outcome.failure else "partial"
        event = ctx.event
        record = await self.app.store.add_generation(
            event.conversation,
            event.user,
            kind=draft.kind,
            tone=draft.tone,
            prompt=draft.prompt,
            variants=outcome.variants,
            instruction=draft.instruction,
            parent=draft.parent,
            status=status,
            params={
                "n": draft.n,
                "seed": draft.seed,
                "temperature": settings.generation.temperature,
                "top_p": settings.generation.top_p,
                "max_new_tokens": draft.spec.max_new_tokens,
                "length": draft.length,
                "finish_reasons": outcome.finish,
                "tokens": outcome.tokens,
                "elapsed_s": round(elapsed, 3),
            },
        )
        footer = f"⚠ {outcome.failure} Above is what was produced before it stopped." if outcome.failure else ""
        reply = Reply(
            parts=tuple(outcome.variants),
            title=_title(draft, record.version),
            footer=footer,
            actions=result_actions(record.id),
            generation_id=record.id,
        )
        message_ref = await stream.finish(reply)
        if message_ref:
            await self.app.store.set_message_ref(record.id, message_ref)
        return record

    def _request(self, ctx: Context, draft: Draft, index: int) -> GenerationRequest:
        settings = self.app.settings
        return GenerationRequest(
            messages=draft.messages(index),
            max_new_tokens=draft.spec.max_new_tokens,
            temperature=settings.generation.temperature,
            top_p=settings.generation.top_p,
            stop=tuple(draft.spec.stop),
            seed=draft.seed + index,
            time_budget_s=settings.generation.time_budget_s,
            priority=draft.priority,
            conversation_key=ctx.event.conversation.key,
        )

    async def _generate(self, ctx: Context, draft: Draft, stream: ReplyStream) -> _Outcome:
        """Run all variants at once (a batching engine decodes them together) and show them in order: the one on
        screen streams live, later ones catch up from their buffers. A failure stops the variants still running."""
        outcome = _Outcome()
        feeds: list[asyncio.Queue[Chunk | GenerationError | None]] = [asyncio.Queue() for _ in range(draft.n)]
        pumps = [
            asyncio.create_task(self._pump(self._request(ctx, draft, index), feed)) for index, feed in enumerate(feeds)
        ]
        try:
            for index, feed in enumerate(feeds):
                await stream.begin_part(index + 1, draft.n)
                text = await self._show(feed, stream, outcome)
                if text:
                    outcome.variants.append(text)
                if outcome.failure:
                    _log.warning("generation stopped at variant %d/%d: %s", index + 1, draft.n, outcome.failure)
                    break
        finally:
            for pump in pumps:
                pump.cancel()  # closing a generator's stream aborts its request
            await asyncio.gather(*pumps, return_exceptions=True)
        return outcome

    async def _pump(self, request: GenerationRequest, feed: asyncio.Queue[Chunk | GenerationError | None]) -> None:
        try:
            async for chunk in self.app.generator.stream(request):
                feed.put_nowait(chunk)
        except GenerationError as exc:
            feed.put_nowait(exc)
        finally:
            feed.put_nowait(None)

    async def _show(
        self, feed: asyncio.Queue[Chunk | GenerationError | None], stream: ReplyStream, outcome: _Outcome
    ) -> str:
        """Write one variant's chunks to the stream as they come; return its cleaned text."""
        sanitizer = StreamSanitizer(self.app.blocklist)
        raw: list[str] = []
        shown = False
        while (item := await feed.get()) is not None:
            if isinstance(item, GeneratorBusy):
                outcome.failure = str(item) or "Chorus is busy right now. Try again in a minute."
                continue
            if isinstance(item, GenerationError):
                outcome.failure = f"Generation failed: {item}"
                continue
            if item.queue_position is not None:
                await stream.status(queue_note(item.queue_position, item.eta_s))
            if item.text:
                raw.append(item.text)
                safe = sanitizer.feed(item.text)
                if not shown:
                    safe = safe.lstrip()
                if safe:
                    shown = True
                    await stream.write(safe)
            if item.finish_reason is not None:
                outcome.tokens += item.tokens
                outcome.finish.append(item.finish_reason)
                if item.finish_reason == "error":
                    outcome.failure = f"Generation failed: {item.error or 'unknown error'}."
        tail = sanitizer.flush()
        if tail and (shown or tail.strip()):
            await stream.write(tail if shown else tail.lstrip())
        return clean_variant(clean_output("".join(raw), self.app.blocklist))


def at_length(spec: KindSpec, first_ask: str, length: str, settings: Settings) -> tuple[KindSpec, str]:
    """The kind's spec and first ask at a /create --length: max_new_tokens scaled (capped), its instruction added."""
    lengths = settings.lengths
    if length not in lengths.names:
        return spec, first_ask
    sized = spec.model_copy(update={"max_new_tokens": lengths.tokens(length, spec.max_new_tokens)})
    instruction = lengths.get(length).instruction.strip()
    return sized, f"{first_ask} {instruction}" if instruction else first_ask


def _title(draft: Draft, version: int) -> str:
    """'slogan · v3 of 3 · shorter': the kind, where this version stands in its lineage, and what made it. A new
    version is numbered after the lineage's newest (store.add_generation), so when it is posted it is the last."""
    title = f"{draft.kind} · v{version} of {version}"
    if draft.instruction:
        title += f" · {draft.instruction}"
    return title


def queue_note(position: int, eta_s: float | None) -> str:
    """'Queued: 3rd in line, about 12 s' — shown while a request waits for the model."""
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(position % 10 if position % 100 not in (11, 12, 13) else 0, "th")
    eta = f", about {max(1, round(eta_s))} s" if eta_s is not None else ""
    return f"Queued: {position}{suffix} in line{eta}"
