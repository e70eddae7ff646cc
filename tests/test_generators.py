"""One suite over every Generator: the scripted fake, the real embedded SmolLM2 through LocalGenerator, and
RemoteGenerator talking to `chorus serve` (over the fake) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from generation.engine import BatchingEngine
from generation.fake import FakeGenerator
from generation.local import IncrementalDetokenizer, LocalGenerator
from generation.models import MARKER_NAME, ModelSpec
from generation.remote import RemoteGenerator
from generation.serve import build_app
from generation.types import (
    ChatMessage,
    GenerationError,
    GenerationRequest,
    Generator,
    GeneratorBusy,
    ModelUnavailable,
)
from support import collect, wait_until

LONG = "Write a very long story about a dragon."
SHORT = "Write a slogan for a coffee shop."


def ask(text: str, **options: object) -> GenerationRequest:
    options.setdefault("temperature", 0.0)
    # Generous: a loaded CI machine must not turn a test about something else into a time-budget test.
    options.setdefault("time_budget_s", 600.0)
    return GenerationRequest(messages=(ChatMessage("user", text),), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def local_generator(embedded_spec: ModelSpec) -> Iterator[LocalGenerator]:
    generator = LocalGenerator(embedded_spec, max_queue=1)
    yield generator
    asyncio.run(generator.close())


@pytest.fixture(scope="session")
def engine_generator(embedded_spec: ModelSpec) -> Iterator[BatchingEngine]:
    generator = BatchingEngine(embedded_spec, max_batch=2, max_queue=1, prefill_chunk=64)
    yield generator
    asyncio.run(generator.close())


class ServedFake(RemoteGenerator):
    """A RemoteGenerator whose server is `chorus serve` over `backend`, so tests can reach the server's side."""

    backend: FakeGenerator


@pytest.fixture
async def remote_generator() -> AsyncIterator[ServedFake]:
    backend = FakeGenerator(delay_s=0.02)
    server = TestServer(build_app(backend, model_name=backend.model), host="127.0.0.1")
    await server.start_server()
    remote = ServedFake(str(server.make_url("/v1")))
    remote.backend = backend
    yield remote
    await remote.close()
    await server.close()


@pytest.fixture(
    params=[
        "fake",
        pytest.param("local", marks=pytest.mark.slow),
        pytest.param("engine", marks=pytest.mark.slow),
        "remote",
    ]
)
def generator(request: pytest.FixtureRequest) -> Generator:
    if request.param == "fake":
        return FakeGenerator(delay_s=0.02)
    return request.getfixturevalue(f"{request.param}_generator")


@contextlib.asynccontextmanager
async def saturated(generator: Generator) -> AsyncIterator[None]:
    """Fill the generator: the fake (also behind a server) by its switch, the local engine with one running and
    max_queue waiting."""
    fake = generator.backend if isinstance(generator, ServedFake) else generator
    if isinstance(fake, FakeGenerator):
        fake.busy = True
        try:
            yield
        finally:
            fake.busy = False
        return
    assert isinstance(generator, LocalGenerator)
    slots = generator.max_batch if isinstance(generator, BatchingEngine) else 1
    running = [generator.stream(ask(LONG, max_new_tokens=2000)) for _ in range(slots)]
    waiting = generator.stream(ask(LONG, max_new_tokens=2000))
    for stream in running:
        await anext(stream)
    first_waiting = asyncio.ensure_future(anext(waiting))
    try:
        await wait_until(lambda: generator.queue_depth == 1)
        yield
    finally:
        first_waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first_waiting
        for stream in running:
            await stream.aclose()
        await waiting.aclose()


async def test_implements_the_protocol_and_reports_health(generator: Generator) -> None:
    assert isinstance(generator, Generator)
    health = await generator.health()
    assert health.ok, health.detail
    assert health.model


async def test_streams_text_then_exactly_one_final_chunk(generator: Generator) -> None:
    request = ask(SHORT, max_new_tokens=16)
    text, chunks = await collect(generator.stream(request))
    finals = [chunk for chunk in chunks if chunk.finish_reason is not None]
    assert finals == [chunks[-1]]
    assert chunks[-1].finish_reason in ("stop", "length")
    assert text.strip()
    assert all(chunk.text for chunk in chunks[:-1])
    assert {chunk.request_id for chunk in chunks} == {request.request_id}
    counts = [chunk.tokens for chunk in chunks]
    assert counts == sorted(counts)
    assert 1 <= chunks[-1].tokens <= 16


async def test_max_new_tokens_ends_with_length(generator: Generator) -> None:
    text, chunks = await collect(generator.stream(ask(LONG, max_new_tokens=4)))
    assert chunks[-1].finish_reason == "length"
    assert 1 <= chunks[-1].tokens <= 4
    assert text.strip()


async def test_stop_string_and_what_follows_are_not_streamed(generator: Generator) -> None:
    reference, _ = await collect(generator.stream(ask(LONG, max_new_tokens=24)))
    words = reference.split()
    assert len(words) >= 6, reference
    stop = " ".join(words[3:5])

    text, chunks = await collect(generator.stream(ask(LONG, max_new_tokens=24, stop=(stop,))))

    assert chunks[-1].finish_reason == "stop"
    assert text == reference[: reference.index(stop)]
    assert stop not in text


async def test_abort_ends_a_running_stream_within_a_second(generator: Generator) -> None:
    request = ask(LONG, max_new_tokens=2000)
    stream = generator.stream(request)
    try:
        first = await anext(stream)
        assert first.finish_reason is None
        await generator.abort(request.request_id)
        async with asyncio.timeout(1.0):  # bounds the wait; a 2000-token story would take far longer
            _, rest = await collect(stream)
        assert rest[-1].finish_reason == "abort"
        assert rest[-1].tokens < 2000
    finally:
        await stream.aclose()


async def test_leaving_a_stream_early_frees_the_generator(generator: Generator) -> None:
    stream = generator.stream(ask(LONG, max_new_tokens=2000))
    await anext(stream)
    await stream.aclose()
    async with asyncio.timeout(5.0):
        text, chunks = await collect(generator.stream(ask(SHORT, max_new_tokens=4)))
    assert chunks[-1].finish_reason in ("stop", "length")
    assert text.strip()


async def test_two_requests_in_a_row_both_complete(generator: Generator) -> None:
    first, first_chunks = await collect(generator.stream(ask(SHORT, max_new_tokens=8)))
    second, second_chunks = await collect(generator.stream(ask(LONG, max_new_tokens=8)))
    assert first.strip()
    assert second.strip()
    assert first != second
    assert first_chunks[-1].finish_reason in ("stop", "length")
    assert second_chunks[-1].finish_reason in ("stop", "length")


async def test_same_seed_same_text_other_seed_other_text(generator: Generator) -> None:
    def sampled(seed: int) -> GenerationRequest:
        return ask(SHORT, max_new_tokens=16, temperature=1.0, top_p=0.95, seed=seed)

    one, _ = await collect(generator.stream(sampled(1)))
    again, _ = await collect(generator.stream(sampled(1)))
    two, _ = await collect(generator.stream(sampled(2)))
    assert one == again
    assert one != two


async def test_time_budget_ends_with_time(generator: Generator) -> None:
    async with asyncio.timeout(60):  # bounds the wait only
        _, chunks = await collect(generator.stream(ask(LONG, max_new_tokens=2000, time_budget_s=0.05)))
    assert chunks[-1].finish_reason == "time"
    assert chunks[-1].tokens < 2000


async def test_full_generator_refuses_at_once_and_recovers(generator: Generator) -> None:
    async with saturated(generator):
        with pytest.raises(GeneratorBusy):
            async with asyncio.timeout(5.0):  # refused at once, not after the running requests
                await anext(generator.stream(ask(SHORT, max_new_tokens=4)))
    async with asyncio.timeout(5.0):
        text, _ = await collect(generator.stream(ask(SHORT, max_new_tokens=4)))
    assert text.strip()


# -- the local engine only -----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_abort_of_a_queued_request_ends_it_without_running_it(local_generator: LocalGenerator) -> None:
    running = local_generator.stream(ask(LONG, max_new_tokens=2000))
    queued_request = ask(LONG, max_new_tokens=2000)
    queued = local_generator.stream(queued_request)
    try:
        await anext(running)
        first = asyncio.ensure_future(anext(queued))
        await wait_until(lambda: local_generator.queue_depth == 1)
        await local_generator.abort(queued_request.request_id)
        async with asyncio.timeout(0.5):
            chunk = await first
        assert chunk.finish_reason == "abort"
        assert chunk.tokens == 0
        assert local_generator.queue_depth == 0
        assert (await anext(running)).finish_reason is None
    finally:
        await running.aclose()
        await queued.aclose()


@pytest.mark.slow
async def test_worker_error_ends_that_stream_and_the_worker_keeps_serving(
    local_generator: LocalGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_forward = local_generator._forward
    calls = 0

    def flaky_forward(input_ids: object, past: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("CUDA error: device-side assert triggered\nlong torch traceback text")
        return real_forward(input_ids, past)

    # An aborted stream from an earlier test may still be finishing its last decode step.
    await wait_until(lambda: local_generator.queue_depth == 0 and not local_generator._jobs)
    monkeypatch.setattr(local_generator, "_forward", flaky_forward)
    _, chunks = await collect(local_generator.stream(ask(LONG, max_new_tokens=16)))
    assert chunks[-1].finish_reason == "error"
    assert chunks[-1].error == "RuntimeError: CUDA error: device-side assert triggered"
    assert chunks[-1].tokens == 2

    monkeypatch.undo()
    text, chunks = await collect(local_generator.stream(ask(SHORT, max_new_tokens=4)))
    assert chunks[-1].finish_reason in ("stop", "length")
    assert text.strip()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "engine"])
async def test_time_budget_covers_tokenizing_and_prefill(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt whose tokenizing alone outlasts the budget ends with "time" before the model runs on it."""
    generator: LocalGenerator = request.getfixturevalue(f"{kind}_generator")
    await generator.warmup()
    await wait_until(lambda: generator.queue_depth == 0 and not generator._jobs)
    real_encode, real_forward = generator._encode, generator._forward
    forwards = 0

    def slow_encode(generation_request: GenerationRequest) -> object:
        encoded = real_encode(generation_request)
        spent_until = time.monotonic() + 2 * generation_request.time_budget_s
        while time.monotonic() < spent_until:  # a tokenizer slower than the budget (on the worker thread)
            time.sleep(0.01)
        return encoded

    def counting_forward(*args: object) -> object:
        nonlocal forwards
        forwards += 1
        return real_forward(*args)

    monkeypatch.setattr(generator, "_encode", slow_encode)
    monkeypatch.setattr(generator, "_forward", counting_forward)
    _, chunks = await collect(generator.stream(ask(LONG, max_new_tokens=64, time_budget_s=0.2)))
    assert chunks[-1].finish_reason == "time"
    assert chunks[-1].tokens == 0
    assert forwards == 0, "the prompt was prefilled after its time budget had run out"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "engine"])
@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 0.0])
async def test_a_time_budget_that_is_not_a_positive_number_is_refused(
    kind: str, budget: float, request: pytest.FixtureRequest
) -> None:
    generator: LocalGenerator = request.getfixturevalue(f"{kind}_generator")
    with pytest.raises(GenerationError, match="time_budget_s must be a positive, finite number"):
        await anext(generator.stream(ask(SHORT, time_budget_s=budget)))


@pytest.mark.slow
def test_embedded_model_is_converted_into_a_plain_hf_directory(embedded_spec: ModelSpec) -> None:
    assert embedded_spec.name == "SmolLM2-135M-Instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json", MARKER_NAME):
        assert (embedded_spec.path / name).is_file(), name
    assert not list(embedded_spec.path.parent.glob(".*.partial-*"))


@pytest.mark.slow
def test_real_tokenizer_streams_multibyte_text_without_broken_characters(embedded_spec: ModelSpec) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_spec.path, local_files_only=True)
    text = "Café ☕ – 日本語のテキスト 🎉🐉 naïve"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # some characters span several tokens
    detokenizer = IncrementalDetokenizer(lambda part: tokenizer.decode(part, skip_special_tokens=True))
    deltas = [detokenizer.add(token) for token in ids]
    deltas.append(detokenizer.flush())
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)


async def test_local_generator_with_no_model_raises_model_unavailable(tmp_path: Path) -> None:
    generator = LocalGenerator(ModelSpec(path=tmp_path / "missing", name="missing"))
    try:
        health = await generator.health()
        assert not health.ok
        with pytest.raises(ModelUnavailable):
            await anext(generator.stream(ask(SHORT)))
        assert not (await generator.health()).ok
    finally:
        await generator.close()


# -- the fake only -------------------------------------------------------------------------------------------------


async def test_fake_fails_mid_stream_when_told_to() -> None:
    generator = FakeGenerator(fail_after=2)
    request = ask(LONG)
    text, chunks = await collect(generator.stream(request))
    assert [chunk.finish_reason for chunk in chunks] == [None, None, "error"]
    assert chunks[-1].error
    assert text
    assert generator.requests == [request]


# -- incremental detokenization, on a byte-level stand-in for a tokenizer ------------------------------------------


def byte_decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def feed(detokenizer: IncrementalDetokenizer, text: str) -> list[str]:
    return [detokenizer.add(byte) for byte in text.encode()]


def test_detokenizer_never_splits_a_character() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode)
    deltas = feed(detokenizer, "añ日🎉!")
    assert [delta for delta in deltas if delta] == ["a", "ñ", "日", "🎉", "!"]
    assert detokenizer.flush() == ""


def test_detokenizer_work_per_token_does_not_grow_with_the_answer() -> None:
    """A long answer streams as fast at its end as at its start: each token decodes a short window of ids, not
    everything so far (which made a 1000-token answer decode half a million ids)."""
    decoded: list[int] = []

    def counting_decode(ids: list[int]) -> str:
        decoded.append(len(ids))
        return byte_decode(ids)

    text = "Dragons 🐉 über alles, 日本語も。 " * 60
    detokenizer = IncrementalDetokenizer(counting_decode, stop=("THE END",))
    streamed = "".join(feed(detokenizer, text)) + detokenizer.flush()
    assert streamed == text
    assert sum(decoded) <= 12 * len(text.encode())


def test_detokenizer_keeps_spaces_a_tokenizer_drops_at_the_start_of_a_decode() -> None:
    """SentencePiece-style tokenizers drop the leading space of the first piece they decode; decoding a window must
    not lose the spaces between words."""
    pieces = ["▁Once", "▁upon", "▁a", "▁time", ",", "▁a", "▁dragon", "."]

    def sentencepiece_decode(ids: list[int]) -> str:
        return "".join(pieces[i] for i in ids).replace("▁", " ").removeprefix(" ")

    detokenizer = IncrementalDetokenizer(sentencepiece_decode)
    deltas = [detokenizer.add(index) for index in range(len(pieces))]
    assert "".join(deltas) + detokenizer.flush() == "Once upon a time, a dragon."


def test_detokenizer_cuts_at_a_stop_string_and_holds_back_possible_starts() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode, stop=("\n\n", "END"))
    deltas = feed(detokenizer, "one EN")
    assert "".join(deltas) == "one "  # "EN" may become "END"
    deltas = feed(detokenizer, "D two")
    assert detokenizer.stopped
    assert "".join(deltas) == ""
    assert detokenizer.text == "one "


def test_detokenizer_releases_a_false_alarm() -> None:
    detokenizer = IncrementalDetokenizer(byte_decode, stop=("END",))
    assert "".join(feed(detokenizer, "ENDLESS"[:2])) == ""
    assert "".join(feed(detokenizer, "X")) == "ENX"
    assert "".join(feed(detokenizer, " E")) == " "
    assert detokenizer.flush() == "E"
    assert not detokenizer.stopped
