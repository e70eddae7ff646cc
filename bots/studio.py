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

from sqlalchemy.exc import SQLAlchemyError

from bots.reply import Reply, ReplyStream, Traceable
from bots.store import GenerationRecord
from config import KindSpec, Settings
from generation.moderation import StreamSanitizer, clean_output
from generation.prompts import Turn, build_messages, clean_variant, few_shot, refinement_demo, tidy_variant
from generation.scorecard import cosine, near_duplicate, repeats_lines, score_variant
from generation.text import is_degenerate, shorten_to, trim_to_complete
from generation.types import ChatMessage, Chunk, GenerationError, GenerationRequest, GeneratorBusy, Priority

if TYPE_CHECKING:
    from bots.inflight import Watch
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
    # Refinements rework each variant on its own: variant i sees only its own earlier texts, never a numbered
    # list of all of them (which a small model continues, "2. …", instead of answering).
    per_variant: bool = False
    parent: GenerationRecord | None = None
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    # Scheduled drops run below commands, so a user never waits behind a drop.
    priority: Priority = Priority.INTERACTIVE
    # The /create --length name, stored so refinements keep it; `spec` and `first_ask` already reflect it.
    length: str = ""
    # Refining one variant: its 0-based index; the others are copied from `keep` (the parent's variants).
    only: int | None = None
    keep: tuple[str, ...] = ()
    # "Shorter"/"longer": each new variant i must have fewer/more words than these (retried once if not).
    shorter_than: tuple[int, ...] = ()
    longer_than: tuple[int, ...] = ()
    # Per variant, texts a new candidate must not hand back (near-)unchanged: the variant it reworks, or for
    # "more" every variant already shown. A copy counts as a missed goal (retried once, ranked last).
    avoid: tuple[tuple[str, ...], ...] = ()
    # "shorter"/"longer": a worked example of that refinement, made from the kind's own examples, goes first.
    demo: str = ""
    # The retry of a variant that came back unchanged asks afresh, without the earlier answers a small model
    # copies: the first ask with the new tone or the user's instruction in it ("" keeps the conversation).
    fresh_ask: str = ""

    def fresh_messages(self) -> tuple[ChatMessage, ...]:
        return build_messages(self.spec, self.fresh_ask, examples=self.examples())

    def messages(self, index: int) -> tuple[ChatMessage, ...]:
        turns = self.turns
        if self.per_variant:
            turns = tuple(Turn(turn.ask, (_own(turn.answer, index),)) for turn in turns)
        return build_messages(self.spec, self.first_ask, turns, self.ask, examples=self.examples())

    def examples(self) -> tuple[Turn, ...]:
        """The kind's few-shot examples for this tone (those written for it first, then tone-free ones), and for
        "shorter"/"longer" a worked refinement with this draft's own ask."""
        shots = few_shot(self.spec, self.tone)
        if self.demo:
            shots += refinement_demo(self.spec, self.tone, self.demo, self.ask)
        return shots

    def avoided(self, index: int) -> tuple[str, ...]:
        return self.avoid[index] if index < len(self.avoid) else ()

    @property
    def indices(self) -> tuple[int, ...]:
        """Which variants are generated: all of them, or the one being refined."""
        return (self.only,) if self.only is not None else tuple(range(self.n))


def _own(answer: tuple[str, ...], index: int) -> str:
    """Variant `index` of an earlier answer, or its first usable variant when that one was blank or missing."""
    own = answer[index] if index < len(answer) else ""
    return own or next((text for text in answer if text), "")


@dataclass
class Candidate:
    """One finished generation for a variant, cleaned and trimmed, with how it ended."""

    text: str = ""
    finish: str = ""
    tokens: int = 0
    cut: bool = False
    failure: str = ""


@dataclass
class _Outcome:
    variants: list[str] = field(default_factory=list)
    finish: list[str] = field(default_factory=list)
    cut: list[bool] = field(default_factory=list)
    tokens: int = 0
    candidates: int = 0
    dropped: int = 0
    degenerate: int = 0
    retried: int = 0
    failure: str = ""


class Studio:
    def __init__(self, app) -> None:
        self.app = app

    async def run(self, ctx: Context, draft: Draft) -> GenerationRecord | None:
        """Stream draft.n variants into one message, store the version, and finish with the feedback actions."""
        # Charged here, when something is about to be generated: a typo or a refused option costs nothing.
        ctx.charge_quota()
        # Every generation acknowledges first: platforms give an interaction about 3 s before it expires.
        await ctx.responder.defer()
        version = 1
        if draft.parent is not None:
            version = max(r.version for r in await self.app.store.versions(draft.parent.root_id)) + 1
        title = _title(draft, version)
        stream = ctx.responder.stream(title)
        in_flight = getattr(self.app, "in_flight", None)
        if in_flight is None or not isinstance(stream, Traceable):
            return await self._run(ctx, draft, stream, version, None)
        watch = in_flight.watch(ctx, title)
        stream.on_posted(watch.posted)
        try:
            return await self._run(ctx, draft, stream, version, watch)
        finally:
            # Whatever the outcome, the message is final now (or the adapter finishes it); a kill skips this.
            await watch.close()

    async def _run(
        self, ctx: Context, draft: Draft, stream: ReplyStream, version: int, watch: Watch | None
    ) -> GenerationRecord | None:
        from bots.feedback import result_actions

        started = time.monotonic()
        outcome = await self._generate(ctx, draft, stream)
        elapsed = time.monotonic() - started
        if not any(outcome.variants):
            if outcome.failure:
                text = outcome.failure
            elif outcome.degenerate:
                text = "The model only produced unusable text (it repeated itself). Try again, or rephrase."
            else:
                text = "The model returned nothing. Try again."
            await stream.finish(Reply(parts=(f"⚠ {text}",)))
            return None
        status = "ok" if not outcome.failure else "partial"
        event = ctx.event
        try:
            record = await self._save(ctx, draft, outcome, status, elapsed)
        except SQLAlchemyError:
            # The text is shown rather than lost; without a stored version its buttons would lead nowhere.
            _log.exception("could not store a generation for %s", event.conversation.key)
            await stream.finish(Reply(parts=tuple(outcome.variants), title=_title(draft, version), footer=NOT_SAVED))
            return None
        if watch is not None:
            await watch.stored(record.id)
        notes = []
        if outcome.failure:
            notes.append(f"⚠ {outcome.failure} Above is what was produced before it stopped.")
        if any(outcome.cut):
            notes.append(CUT_NOTE)
        reply = Reply(
            parts=tuple(outcome.variants),
            title=_title(draft, record.version),
            footer=" ".join(notes),
            actions=result_actions(record.id, len(outcome.variants)),
            generation_id=record.id,
        )
        message_ref = await stream.finish(reply)
        if message_ref:
            try:
                await self.app.store.set_message_ref(record.id, message_ref)
            except SQLAlchemyError:  # the result is shown and its buttons work; only reactions on it go uncounted
                _log.exception("could not store the message of generation %s", record.id)
        return record

    async def _save(
        self, ctx: Context, draft: Draft, outcome: _Outcome, status: str, elapsed: float
    ) -> GenerationRecord:
        settings = self.app.settings
        event = ctx.event
        return await self.app.store.add_generation(
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
                "n": len(outcome.variants),
                "seed": draft.seed,
                "temperature": settings.generation.temperature,
                "top_p": settings.generation.top_p,
                "max_new_tokens": draft.spec.max_new_tokens,
                "length": draft.length,
                "best_of": self._best_of(draft),
                "finish_reasons": outcome.finish,
                "cut": outcome.cut,
                "candidates": outcome.candidates,
                "dropped": outcome.dropped,
                "retried": outcome.retried,
                "only": draft.only,
                "tokens": outcome.tokens,
                "elapsed_s": round(elapsed, 3),
            },
        )

    def _best_of(self, draft: Draft) -> int:
        return max(1, getattr(self.app.settings.generation, "best_of", 1))

    def _request(
        self, ctx: Context, draft: Draft, index: int, attempt: int = 0, *, fresh: bool = False
    ) -> GenerationRequest:
        settings = self.app.settings
        return GenerationRequest(
            messages=draft.fresh_messages() if fresh else draft.messages(index),
            max_new_tokens=draft.spec.max_new_tokens,
            temperature=settings.generation.temperature,
            top_p=settings.generation.top_p,
            stop=tuple(draft.spec.stop),
            # Candidate 0 of variant i keeps the seed it always had; later candidates and retries get their own.
            seed=draft.seed + index + attempt * max(draft.n, 1) * 7919,
            time_budget_s=settings.generation.time_budget_s,
            priority=draft.priority,
            conversation_key=ctx.event.conversation.key,
            # A long refinement chain can outgrow the context: its budget shrinks to fit rather than fail.
            fit_max_new_tokens=draft.parent is not None,
        )

    async def _generate(self, ctx: Context, draft: Draft, stream: ReplyStream) -> _Outcome:
        """Run every candidate of every variant at once (a batching engine decodes them together) and show the
        variants in order. With one candidate per variant the one on screen streams live; with several, each
        variant appears when its best candidate is chosen. A failure stops the variants still running."""
        outcome = _Outcome()
        k = self._best_of(draft)
        indices = draft.indices
        feeds: dict[int, list[asyncio.Queue[Chunk | GenerationError | None]]] = {
            index: [asyncio.Queue() for _ in range(k)] for index in indices
        }
        pumps = [
            asyncio.create_task(self._pump(self._request(ctx, draft, index, attempt), feed))
            for index in indices
            for attempt, feed in enumerate(feeds[index])
        ]
        chosen: dict[int, str] = {}
        try:
            if k > 1:
                # Before the first part, so a terminal prints it on a line of its own, not inside "1. ".
                await stream.status(f"Writing {k} drafts of each variant and keeping the best…")
            for index in indices:
                total = draft.n if draft.only is None else len(draft.keep)
                await stream.begin_part(index + 1, total)
                if k == 1:
                    candidates = [await self._read(draft, feeds[index][0], stream, outcome, live=True)]
                else:
                    candidates = list(
                        await asyncio.gather(
                            *(
                                self._read(draft, feed, stream, outcome, live=i == 0)
                                for i, feed in enumerate(feeds[index])
                            )
                        )
                    )
                outcome.candidates += len(candidates)
                best = await self._pick(draft, index, candidates, list(chosen.values()), outcome)
                if best is not None and not self._meets_goal(draft, index, best.text):
                    outcome.retried += 1
                    retry = await self._retry(ctx, draft, index, k, stream, outcome)
                    outcome.candidates += len(retry)
                    best = await self._pick(draft, index, [best, *retry], list(chosen.values()), outcome)
                if best is None:
                    outcome.dropped += 1
                else:
                    text = self._enforce_goal(draft, index, best.text)
                    chosen[index] = text
                    outcome.finish.append(best.finish)
                    outcome.cut.append(best.cut)
                    if k > 1:
                        await stream.write(text)
                if outcome.failure:
                    _log.warning("generation stopped at variant %d/%d: %s", index + 1, draft.n, outcome.failure)
                    break
        finally:
            for pump in pumps:
                pump.cancel()  # closing a generator's stream aborts its request
            await asyncio.gather(*pumps, return_exceptions=True)
        if draft.only is not None:
            if draft.only in chosen:
                keep = list(draft.keep)
                keep[draft.only] = chosen[draft.only]
                outcome.variants = keep
        else:
            outcome.variants = [chosen[index] for index in indices if index in chosen]
        return outcome

    async def _retry(
        self, ctx: Context, draft: Draft, index: int, k: int, stream: ReplyStream, outcome: _Outcome
    ) -> list[Candidate]:
        """One more round for a variant that missed its goal (a "shorter" that came out longer, a rewrite that came
        back unchanged: that one asks afresh, see Draft.fresh_ask)."""
        feeds: list[asyncio.Queue[Chunk | GenerationError | None]] = [asyncio.Queue() for _ in range(k)]
        pumps = [
            asyncio.create_task(
                self._pump(self._request(ctx, draft, index, k + attempt, fresh=bool(draft.fresh_ask)), feed)
            )
            for attempt, feed in enumerate(feeds)
        ]
        try:
            return list(await asyncio.gather(*(self._read(draft, feed, stream, outcome, live=False) for feed in feeds)))
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    def _meets_goal(self, draft: Draft, index: int, text: str) -> bool:
        """Does a refinement do what it says: shorter is shorter, longer is longer, and it is not a copy."""
        words = len(text.split())
        shorter = draft.shorter_than[index] if index < len(draft.shorter_than) else 0
        longer = draft.longer_than[index] if index < len(draft.longer_than) else 0
        if (shorter and words >= shorter) or (longer and words <= longer):
            return False
        return not any(near_duplicate(text, old) for old in draft.avoided(index))

    def _enforce_goal(self, draft: Draft, index: int, text: str) -> str:
        """A "shorter" that is still not shorter after its retry keeps only its complete sentences that fit."""
        if index >= len(draft.shorter_than) or not draft.shorter_than[index]:
            return text
        return shorten_to(text, draft.shorter_than[index] - 1)

    async def _pick(
        self,
        draft: Draft,
        index: int,
        candidates: list[Candidate],
        others: list[str],
        outcome: _Outcome | None = None,
    ) -> Candidate | None:
        """The best usable candidate by the scorecard's checks (and relevance, when an embedder is set up);
        None when every candidate is empty or degenerate. Among equals the earliest wins."""
        usable = [c for c in candidates if c.text and not is_degenerate(c.text) and not repeats_lines(c.text)]
        if outcome is not None:
            outcome.degenerate += sum(1 for c in candidates if c.text and c not in usable)
        if len(usable) <= 1:
            return usable[0] if usable else None
        relevance: list[float | None] = [None] * len(usable)
        embedder = getattr(self.app, "embedder", None)
        if embedder is not None:
            try:
                brief, *vectors = await embedder.embed([draft.prompt, *(c.text for c in usable)])
                relevance = [cosine(brief, vector) for vector in vectors]
            except Exception as exc:  # relevance only breaks ties; a missing embedding model must not fail a reply
                _log.warning("relevance for best-of could not be computed: %s", exc)
        asks = (draft.spec.system, draft.first_ask.replace(draft.prompt, " "), draft.ask)
        ranked = []
        for order, (candidate, rel) in enumerate(zip(usable, relevance, strict=True)):
            score = score_variant(candidate.text, draft.kind, asks=asks, relevance=rel, others=others)
            goal = 1.0 if self._meets_goal(draft, index, candidate.text) else 0.0
            ranked.append((score.rank + goal - (0.5 if candidate.cut else 0.0), -order, candidate))
        return max(ranked, key=lambda item: (item[0], item[1]))[2]

    async def _pump(self, request: GenerationRequest, feed: asyncio.Queue[Chunk | GenerationError | None]) -> None:
        try:
            async for chunk in self.app.generator.stream(request):
                feed.put_nowait(chunk)
        except GenerationError as exc:
            feed.put_nowait(exc)
        except Exception:  # a generator that raised instead of ending its stream with an error chunk
            _log.exception("generation %s failed", request.request_id)
            feed.put_nowait(GenerationError(UNEXPECTED_FAILURE))
        finally:
            feed.put_nowait(None)

    async def _read(
        self,
        draft: Draft,
        feed: asyncio.Queue[Chunk | GenerationError | None],
        stream: ReplyStream,
        outcome: _Outcome,
        *,
        live: bool,
    ) -> Candidate:
        """Collect one candidate's chunks (writing them to the stream as they come when `live`); clean, tidy and
        trim it: text a budget stopped is cut back to its last complete sentence or line."""
        sanitizer = StreamSanitizer(self.app.blocklist)
        raw: list[str] = []
        shown = False
        streaming = live and self._best_of(draft) == 1
        candidate = Candidate()
        while (item := await feed.get()) is not None:
            if isinstance(item, GeneratorBusy):
                outcome.failure = str(item) or "Chorus is busy right now. Try again in a minute."
                continue
            if isinstance(item, GenerationError):
                outcome.failure = f"Generation failed: {item}"
                continue
            if item.queue_position is not None and live:
                await stream.status(queue_note(item.queue_position, item.eta_s))
            if item.text:
                raw.append(item.text)
                if streaming:
                    safe = sanitizer.feed(item.text)
                    if not shown:
                        safe = safe.lstrip()
                    if safe:
                        shown = True
                        await stream.write(safe)
            if item.finish_reason is not None:
                outcome.tokens += item.tokens
                candidate.tokens = item.tokens
                candidate.finish = item.finish_reason
                if item.finish_reason == "error":
                    outcome.failure = f"Generation failed: {item.error or 'unknown error'}."
        if streaming:
            tail = sanitizer.flush()
            if tail and (shown or tail.strip()):
                await stream.write(tail if shown else tail.lstrip())
        text = clean_variant(clean_output("".join(raw), self.app.blocklist))
        tidied = tidy_variant(text, draft.kind)
        # Only text that runs to where the model stopped can be unfinished ("Slogan\nWhy it works: the" is not).
        reaches_end = text.rstrip().endswith(tidied.rstrip()[-24:])
        trimmed = trim_to_complete(tidied, stopped_early=candidate.finish in STOPPED_EARLY and reaches_end)
        candidate.text, candidate.cut = trimmed.text, trimmed.cut
        return candidate


CUT_NOTE = "✂ Cut at the length limit — `l` for longer."
NOT_SAVED = "⚠ Not saved: the database did not answer, so this result has no buttons. Try again in a minute."
UNEXPECTED_FAILURE = "the model stopped with an unexpected error."
STOPPED_EARLY = frozenset({"length", "time"})


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
