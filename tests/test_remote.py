"""RemoteGenerator against a real `chorus serve` app on 127.0.0.1 (over the FakeGenerator), and plain OpenAI servers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from generation.fake import FakeGenerator, default_script, prompt_words
from generation.remote import RemoteGenerator
from generation.serve import build_app
from generation.types import (
    ChatMessage,
    GenerationError,
    GenerationRequest,
    GeneratorBusy,
    ModelUnavailable,
    Priority,
)
from support import collect, metric, wait_until

PROMPT = "Write a slogan for a coffee shop."


def ask(text: str = PROMPT, **options: object) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", text),), **options)  # type: ignore[arg-type]


@dataclass
class Served:
    """A chorus serve app on 127.0.0.1 over `fake`, and its /v1 URL."""

    fake: FakeGenerator
    server: TestServer
    url: str

    async def metric(self, name: str, **labels: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(str(self.server.make_url("/metrics")))).text
        return metric(text, name, **labels)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    fake = FakeGenerator(delay_s=0.01)
    server = TestServer(build_app(fake, model_name="fake", api_key="k3y"), host="127.0.0.1")
    await server.start_server()
    yield Served(fake, server, str(server.make_url("/v1")))
    await server.close()


@pytest.fixture
async def remote(served: Served) -> AsyncIterator[RemoteGenerator]:
    generator = RemoteGenerator(served.url, api_key="k3y", backoff_s=0.01)
    yield generator
    await generator.close()


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts every request httpx tries to send, connection attempts included."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_text_and_request_fields_round_trip(remote: RemoteGenerator, served: Served) -> None:
    request = ask(
        max_new_tokens=50,
        temperature=0.4,
        top_p=0.9,
        stop=("never-there",),
        seed=3,
        priority=Priority.BRAINSTORM,
        conversation_key="slack:T1:C2",
        time_budget_s=30.0,
        repetition_penalty=1.3,
    )
    text, chunks = await collect(remote.stream(request))
    [seen] = served.fake.requests
    assert text == default_script(seen)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].tokens == len(text.split())
    assert {chunk.request_id for chunk in chunks} == {request.request_id}
    assert remote.model == "fake"  # discovered from /v1/models
    assert seen.messages == request.messages
    assert (seen.max_new_tokens, seen.temperature, seen.top_p, seen.stop, seen.seed) == (50, 0.4, 0.9, request.stop, 3)
    assert (seen.priority, seen.conversation_key, seen.time_budget_s) == (Priority.BRAINSTORM, "slack:T1:C2", 30.0)
    assert seen.repetition_penalty == 1.3
    # The prompt's size comes back from the server's usage event: only the server knows its tokenizer.
    assert chunks[-1].prompt_tokens == prompt_words(seen) > 0


async def test_finish_reasons_come_back_as_chorus_reasons(remote: RemoteGenerator, served: Served) -> None:
    _, chunks = await collect(remote.stream(ask(max_new_tokens=2)))
    assert (chunks[-1].finish_reason, chunks[-1].tokens) == ("length", 2)
    served.fake.delay_s = 0.05
    _, chunks = await collect(remote.stream(ask(max_new_tokens=100, time_budget_s=0.12)))
    assert chunks[-1].finish_reason == "time"


async def test_queue_positions_arrive_as_chunks(remote: RemoteGenerator, served: Served) -> None:
    served.fake.queued = 3
    text, chunks = await collect(remote.stream(ask(max_new_tokens=2)))
    assert [(chunk.queue_position, chunk.eta_s) for chunk in chunks[:3]] == [(3, 6.0), (2, 4.0), (1, 2.0)]
    assert not any(chunk.text for chunk in chunks[:3])
    assert text.split() == default_script(served.fake.requests[0]).split()[:2]


async def test_many_concurrent_streams_each_get_their_own_text(remote: RemoteGenerator, served: Served) -> None:
    requests = [ask(f"Write a slogan for shop number {index}.", max_new_tokens=50) for index in range(60)]
    async with asyncio.timeout(20):
        results = await asyncio.gather(*(collect(remote.stream(request)) for request in requests))
    by_prompt = {request.messages[0].content: request for request in served.fake.requests}
    for request, (text, chunks) in zip(requests, results, strict=True):
        assert text == default_script(by_prompt[request.messages[0].content])
        assert {chunk.request_id for chunk in chunks} == {request.request_id}
        assert chunks[-1].finish_reason == "stop"
    assert await served.metric("chorus_requests_total", status="200") == 60


async def test_busy_server_raises_generator_busy_with_its_message(remote: RemoteGenerator, served: Served) -> None:
    served.fake.busy = True
    served.fake.busy_retry_after_s = 7
    with pytest.raises(GeneratorBusy, match=r"Chorus is busy \(fake\)") as refused:
        await anext(remote.stream(ask()))
    assert refused.value.retry_after_s == 7  # the server's Retry-After, for the caller to wait that long


@pytest.mark.parametrize(
    ("header", "expected"),
    [("12", 12.0), ("0", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None), (None, None)],
)
async def test_retry_after_of_a_plain_server_is_read_in_both_forms(header: str | None, expected: float | None) -> None:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def completions(request: web.Request) -> web.Response:
        headers = {} if header is None else {"Retry-After": header}
        return web.json_response({"error": {"message": "rate limited"}}, status=429, headers=headers)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    async with TestServer(app, host="127.0.0.1") as server:
        generator = RemoteGenerator(str(server.make_url("/v1")))
        try:
            with pytest.raises(GeneratorBusy, match="rate limited") as refused:
                await anext(generator.stream(ask()))
        finally:
            await generator.close()
    assert refused.value.retry_after_s == expected


async def test_a_proxys_html_error_page_becomes_its_status_in_words() -> None:
    """nginx in front of a restarting vLLM answers 502 with an HTML page; users saw 300 characters of that markup."""
    page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def completions(request: web.Request) -> web.Response:
        return web.Response(text=page + "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>", status=502)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    async with TestServer(app, host="127.0.0.1") as server:
        generator = RemoteGenerator(str(server.make_url("/v1")))
        try:
            with pytest.raises(GenerationError) as failed:
                await anext(generator.stream(ask()))
        finally:
            await generator.close()
    assert str(failed.value).endswith("failed (HTTP 502): Bad Gateway")


async def test_failure_mid_stream_keeps_the_text_and_the_error(remote: RemoteGenerator, served: Served) -> None:
    served.fake.fail_after = 2
    text, chunks = await collect(remote.stream(ask()))
    assert len(text.split()) == 2
    assert (chunks[-1].finish_reason, chunks[-1].error) == ("error", "scripted failure")


async def test_client_errors_carry_the_server_message(served: Served) -> None:
    generator = RemoteGenerator(served.url, model="gpt-4o", api_key="k3y")
    try:
        with pytest.raises(GenerationError, match=r"HTTP 404\): The model `gpt-4o` does not exist"):
            await anext(generator.stream(ask()))
        generator.model = "fake"
        with pytest.raises(GenerationError, match="max_tokens is too large: 5000"):
            await anext(generator.stream(ask(max_new_tokens=5000)))
    finally:
        await generator.close()


async def test_wrong_api_key_is_a_clear_error(served: Served) -> None:
    generator = RemoteGenerator(served.url, model="fake", api_key="wrong")
    try:
        with pytest.raises(GenerationError, match="refused the API key"):
            await anext(generator.stream(ask()))
    finally:
        await generator.close()


async def test_abort_ends_the_stream_and_the_server_aborts_too(remote: RemoteGenerator, served: Served) -> None:
    served.fake.delay_s = 0.05
    request = ask(max_new_tokens=2000)
    stream = remote.stream(request)
    try:
        assert (await anext(stream)).text
        await remote.abort(request.request_id)
        async with asyncio.timeout(1.0):
            _, rest = await collect(stream)
    finally:
        await stream.aclose()
    assert rest[-1].finish_reason == "abort"
    assert rest[-1].request_id == request.request_id
    await wait_until(lambda: not served.fake._running)
    assert await served.metric("chorus_finished_requests_total", reason="abort") == 1


async def test_server_down_is_model_unavailable_after_the_retries() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    transport = CountingTransport()
    generator = RemoteGenerator(url, model="fake", connect_retries=2, backoff_s=0.01, transport=transport)
    try:
        with pytest.raises(ModelUnavailable) as caught:
            await anext(generator.stream(ask()))
        assert transport.attempts == 3  # the first try and two retries
        message = str(caught.value)
        assert f"Cannot reach the generation server at {url} (connection refused)" in message
        assert "chorus serve" in message
        health = await generator.health()
        assert not health.ok
        assert url in health.detail
    finally:
        await generator.close()


async def test_a_request_that_reached_the_server_is_never_retried(served: Served) -> None:
    transport = CountingTransport()
    generator = RemoteGenerator(served.url, model="fake", api_key="k3y", transport=transport)
    served.fake.busy = True
    try:
        with pytest.raises(GeneratorBusy):
            await anext(generator.stream(ask()))
        assert transport.attempts == 1
    finally:
        await generator.close()


async def test_a_silent_server_times_out_with_a_clear_error(served: Served) -> None:
    served.fake.delay_s = 5.0
    generator = RemoteGenerator(served.url, model="fake", api_key="k3y", timeout_s=0.2)
    try:
        with pytest.raises(GenerationError, match=r"did not answer within 0.2 s \(read timeout\)"):
            await anext(generator.stream(ask()))
    finally:
        await generator.close()


async def test_health_reports_the_served_model(remote: RemoteGenerator) -> None:
    health = await remote.health()
    assert health.ok, health.detail
    assert health.model == "fake"


async def test_closed_generator_refuses_new_streams(remote: RemoteGenerator) -> None:
    await remote.close()
    with pytest.raises(GenerationError, match="closed"):
        await anext(remote.stream(ask()))
    assert not (await remote.health()).ok


# -- a plain OpenAI-compatible server: no /health, no `chorus` extensions ------------------------------------------


def plain_openai_app(words: list[str], finish: str) -> web.Application:
    """What vLLM-like servers send: standard chunks only, and no /health route."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "org/plain-model", "object": "model"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["model"] == "org/plain-model"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        deltas = [{"role": "assistant"}] + [{"content": word} for word in words] + [{}]
        for index, delta in enumerate(deltas):
            reason = finish if index == len(deltas) - 1 else None
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            await response.write(b": keep-alive\n\n" + f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.mark.parametrize(("finish", "expected"), [("length", "length"), ("stop", "stop"), ("content_filter", "stop")])
async def test_plain_openai_server_maps_finish_reasons_and_counts_deltas(finish: str, expected: str) -> None:
    async with TestServer(plain_openai_app(["Hel", "lo", " there"], finish), host="127.0.0.1") as server:
        generator = RemoteGenerator(str(server.make_url("/v1")))
        try:
            text, chunks = await collect(generator.stream(ask()))
            health = await generator.health()
        finally:
            await generator.close()
    assert text == "Hello there"
    assert [chunk.tokens for chunk in chunks] == [1, 2, 3, 3]
    assert chunks[-1].finish_reason == expected
    assert health.ok, health.detail
    assert health.model == "org/plain-model"  # /health is missing, so /v1/models answered
