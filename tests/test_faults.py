"""Faults injected into the core: a generator that raises, a database that stops answering. Each test checks what
the user sees (a short message, their text kept, no stale stream) and that Chorus keeps working afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.exc import OperationalError

from bots.studio import NOT_SAVED
from generation.fake import FakeGenerator
from generation.types import Chunk, GenerationRequest
from support import make_bot, reply_text, settings_for


class RaisingGenerator(FakeGenerator):
    """Streams its first `words` words, then raises `exc` the way a device or a bug would (not an error chunk)."""

    def __init__(self, exc: BaseException, words: int) -> None:
        super().__init__()
        self.exc = exc
        self.words = words
        self.armed = True

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        sent = 0
        async for chunk in super().stream(request):
            if self.armed and sent >= self.words:
                raise self.exc
            sent += 1
            yield chunk


def _locked(*_args: object, **_kwargs: object) -> None:
    raise OperationalError("INSERT INTO generations", {}, Exception("database is locked"))


async def test_a_generator_that_raises_mid_stream_says_generation_failed_and_keeps_the_text(tmp_path: Path) -> None:
    generator = RaisingGenerator(RuntimeError("CUDA out of memory"), words=3)
    bot = await make_bot(settings_for(tmp_path), generator)
    try:
        reply = await bot.one("/create slogan a tea shop")
        # Before: the three words were shown and stored as a finished result, and nothing said it had failed.
        assert "Generation failed" in reply.footer and reply.parts[0]
        record = await bot.store.get_generation(reply.generation_id)
        assert record is not None and record.status == "partial"
        generator.armed = False
        assert (await bot.one("r")).generation_id, "Regenerate works on the partial version"
    finally:
        await bot.chorus.close()


async def test_a_generator_that_raises_before_any_text_says_generation_failed(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path), RaisingGenerator(MemoryError(), words=0))
    try:
        reply = await bot.one("/create slogan a tea shop")
        # Before: "The model returned nothing", as if the model had written nothing.
        assert "Generation failed" in reply_text(reply) and "returned nothing" not in reply_text(reply)
    finally:
        await bot.chorus.close()


async def test_a_database_that_fails_while_saving_shows_the_text_with_a_note_instead_of_a_stale_stream(
    tmp_path: Path,
) -> None:
    bot = await make_bot(settings_for(tmp_path))
    try:
        first = await bot.one("/create slogan a tea shop")
        add_generation = bot.store.add_generation
        bot.store.add_generation = _locked  # type: ignore[method-assign]
        replies = await bot.say("s")
        # Before: the stream was never finished (a stale "writing…" on Discord and Slack) and the user got only
        # "Something went wrong on our side"; the text written was lost.
        assert len(replies) == 1 and not replies[0].ephemeral
        stream = bot.responder.streams[-1]
        assert stream.final is replies[0], "the stream is finished, not left writing"
        assert replies[0].parts[0] and replies[0].footer == NOT_SAVED and not replies[0].actions
        bot.store.add_generation = add_generation  # type: ignore[method-assign]
        again = await bot.one("s")
        assert again.generation_id and again.title.startswith("slogan · v2"), "nothing half-stored in between"
        assert first.generation_id is not None
    finally:
        await bot.chorus.close()


async def test_a_database_that_fails_after_the_result_is_shown_does_not_tell_the_user_it_failed(
    tmp_path: Path,
) -> None:
    bot = await make_bot(settings_for(tmp_path))
    try:
        bot.store.set_message_ref = _locked  # type: ignore[method-assign]
        replies = await bot.say("/create slogan a tea shop")
        # Before: the result, then "Something went wrong on our side (ref …). Please try again."
        assert len(replies) == 1 and replies[0].generation_id and replies[0].actions
    finally:
        await bot.chorus.close()
