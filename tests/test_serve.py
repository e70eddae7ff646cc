"""`chorus serve` over the FakeGenerator: OpenAI shapes, validation, auth, metrics, busy, disconnects, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from generation.fake import FakeGenerator, default_script, prompt_words
from generation.serve import build_app, parse_chat_request
from generation.types import (
    ChatMessage,
    Chunk,
    GenerationRequest,
    Health,
    ModelUnavailable,
    Priority,
)
from support import metric, wait_for_sync, wait_until

ROOT = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "Write a slogan for a coffee shop."}]
ERROR_FIELDS = {"message", "type", "param", "code"}


class RecordingGenerator:
    """A FakeGenerator wrapper that records abort calls and which streams have ended (however they ended)."""

    def __init__(self, inner: FakeGenerator) -> None:
        self.inner = inner
        self.aborted: list[str] = []
        self.ended: list[str] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        try:
            async for chunk in self.inner.stream(request):
                yield chunk
        finally:
            self.ended.append(request.request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        await self.inner.abort(request_id)

    async def health(self) -> Health:
        return await self.inner.health()

    async def close(self) -> None:
        await self.inner.close()


def sse_events(body: str) -> list[str]:
    """The data of each SSE event, in order; every event must be one `data:` line and a blank line."""
    assert body.endswith("\n\n"), body[-80:]
    events = body[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events), events
    return [event.removeprefix("data: ") for event in events]


@pytest.fixture
def fake() -> FakeGenerator:
    return FakeGenerator()


@pytest.fixture
async def client(fake: FakeGenerator) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(build_app(fake, model_name="fake"), host="127.0.0.1")) as client:
        yield client


async def test_completion_has_openai_shape_and_usage(client: TestClient, fake: FakeGenerator) -> None:
    response = await client.post("/v1/chat/completions", json={"model": "fake", "messages": HELLO})
    assert response.status == 200
    body = await response.json()
    expected = default_script(fake.requests[0])
    assert set(body) == {"id", "object", "created", "model", "system_fingerprint", "choices", "usage", "chorus"}
    assert body["id"] == f"chatcmpl-{fake.requests[0].request_id}"
    assert (body["object"], body["model"]) == ("chat.completion", "fake")
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": expected}, "logprobs": None, "finish_reason": "stop"}
    ]
    words = len(expected.split())
    prompt = prompt_words(fake.requests[0])
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}
    assert body["chorus"] == {"finish_reason": "stop", "tokens": words}


async def test_stream_is_openai_chunks_then_done(client: TestClient, fake: FakeGenerator) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    expected = default_script(fake.requests[0])
    assert {chunk["id"] for chunk in chunks} == {f"chatcmpl-{fake.requests[0].request_id}"}
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["model"] == "fake" for chunk in chunks)
    first, *content, final, usage = chunks
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in content) == expected
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in content)
    assert final["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    words = len(expected.split())
    assert final["chorus"] == {"finish_reason": "stop", "tokens": words}
    assert usage["choices"] == []
    prompt = prompt_words(fake.requests[0])
    assert usage["usage"] == {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}


async def test_stream_without_usage_ends_with_the_finish_chunk(client: TestClient) -> None:
    response = await client.post("/v1/chat/completions", json={"messages": HELLO, "stream": True, "max_tokens": 2})
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "length"
    assert "usage" not in final
    assert len(events) == 1 + 2 + 1 + 1  # role, two words, finish, [DONE]


async def test_queue_positions_are_chunks_with_empty_choices(client: TestClient, fake: FakeGenerator) -> None:
    fake.queued = 2
    body = {"messages": HELLO, "stream": True, "max_tokens": 1, "chorus": {}}  # a client that knows the extension
    response = await client.post("/v1/chat/completions", json=body)
    chunks = [json.loads(event) for event in sse_events(await response.text())[:-1]]
    notes = [chunk for chunk in chunks if "queue_position" in chunk.get("chorus", {})]
    assert [note["chorus"] for note in notes] == [
        {"queue_position": 2, "eta_s": 4.0},
        {"queue_position": 1, "eta_s": 2.0},
    ]
    assert all(note["choices"] == [] and note["object"] == "chat.completion.chunk" for note in notes)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize(
    ("options", "openai_reason", "chorus_reason"),
    [
        ({"max_tokens": 3}, "length", "length"),
        ({"chorus": {"time_budget_s": 0.03}}, "length", "time"),
    ],
)
async def test_length_and_time_both_finish_with_length(
    client: TestClient, fake: FakeGenerator, options: dict[str, Any], openai_reason: str, chorus_reason: str
) -> None:
    fake.delay_s = 0.02
    response = await client.post("/v1/chat/completions", json={"messages": HELLO, **options})
    body = await response.json()
    assert body["choices"][0]["finish_reason"] == openai_reason
    assert body["chorus"]["finish_reason"] == chorus_reason


async def test_extension_and_sampling_fields_reach_the_generator(client: TestClient, fake: FakeGenerator) -> None:
    body = {
        "model": "fake",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "cafe"}]},
            {"role": "assistant", "content": "ok"},
        ],
        "max_completion_tokens": 7,
        "max_tokens": 99,
        "temperature": 0.3,
        "top_p": 0.5,
        "stop": "END",
        "seed": 42,
        "n": 1,
        "repetition_penalty": 1.2,
        "chorus": {"priority": "scheduled", "conversation": "discord:guild:1", "time_budget_s": 9999},
    }
    assert (await client.post("/v1/chat/completions", json=body)).status == 200
    request = fake.requests[0]
    assert request.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "a cafe"),
        ChatMessage("assistant", "ok"),
    )
    assert (request.max_new_tokens, request.temperature, request.top_p) == (7, 0.3, 0.5)
    assert (request.stop, request.seed, request.repetition_penalty) == (("END",), 42, 1.2)
    assert (request.priority, request.conversation_key) == (Priority.SCHEDULED, "discord:guild:1")
    assert request.time_budget_s == 60.0  # capped at the server's budget


def test_defaults_follow_openai_and_the_server_limits() -> None:
    params = parse_chat_request({"messages": HELLO}, model_name="m", max_tokens_limit=300, time_budget_s=5.0)
    request = params.request
    assert (request.max_new_tokens, request.temperature, request.top_p) == (300, 1.0, 1.0)
    assert (request.stop, request.seed, request.time_budget_s) == ((), None, 5.0)
    assert request.repetition_penalty == 1.0  # no penalty unless asked
    assert (request.priority, params.stream, params.include_usage) == (Priority.INTERACTIVE, False, False)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": ["hello"]}, "messages[0]"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "messages[0].content[0]"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": -5}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": 2049}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": "10"}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": True}, "max_tokens"),
        ({"messages": HELLO, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({"messages": HELLO, "temperature": -0.1}, "temperature"),
        ({"messages": HELLO, "temperature": 2.5}, "temperature"),
        ({"messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"messages": HELLO, "top_p": 0}, "top_p"),
        ({"messages": HELLO, "top_p": 1.01}, "top_p"),
        ({"messages": HELLO, "repetition_penalty": 0}, "repetition_penalty"),
        ({"messages": HELLO, "repetition_penalty": "strong"}, "repetition_penalty"),
        ({"messages": HELLO, "n": 2}, "n"),
        ({"messages": HELLO, "stop": [1]}, "stop"),
        ({"messages": HELLO, "seed": 1.5}, "seed"),
        ({"messages": HELLO, "stream": "yes"}, "stream"),
        ({"messages": HELLO, "chorus": {"priority": "urgent"}}, "chorus"),
        ({"messages": HELLO, "chorus": {"time_budget_s": 0}}, "chorus"),
        ({"messages": HELLO, "model": 3}, "model"),
        ([HELLO], None),
    ],
)
async def test_invalid_requests_get_400_with_an_openai_error(
    client: TestClient, fake: FakeGenerator, body: object, param: str | None
) -> None:
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert set(error) == ERROR_FIELDS
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert fake.requests == []


async def test_n_above_one_is_unsupported(client: TestClient) -> None:
    error = (await (await client.post("/v1/chat/completions", json={"messages": HELLO, "n": 3})).json())["error"]
    assert error["code"] == "unsupported_value"
    assert "n must be 1" in error["message"]


async def test_malformed_json_is_400(client: TestClient) -> None:
    response = await client.post(
        "/v1/chat/completions", data=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert "could not parse the JSON body" in error["message"]


async def test_unknown_model_is_404_model_not_found(client: TestClient) -> None:
    response = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    assert response.status == 404
    assert (await response.json())["error"] == {
        "message": "The model `gpt-4o` does not exist. This server serves `fake`.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_unknown_route_and_wrong_method_answer_in_openai_format(client: TestClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "unknown_url"
    wrong = await client.get("/v1/chat/completions")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "POST"
    assert set((await wrong.json())["error"]) == ERROR_FIELDS


async def test_models_lists_the_served_model(client: TestClient) -> None:
    response = await client.get("/v1/models")
    body = await response.json()
    assert body["object"] == "list"
    [model] = body["data"]
    assert (model["id"], model["object"], model["owned_by"]) == ("fake", "model", "chorus")
    assert isinstance(model["created"], int)


async def test_health_follows_the_generator(client: TestClient, fake: FakeGenerator) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "model": "fake", "detail": "scripted output"}
    await fake.close()
    response = await client.get("/health")
    assert response.status == 503
    assert (await response.json())["status"] == "unavailable"


async def test_busy_generator_is_429_with_retry_after(client: TestClient, fake: FakeGenerator) -> None:
    fake.busy = True
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json={"messages": HELLO, "stream": stream})
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        error = (await response.json())["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")
        assert "busy" in error["message"]


async def test_unavailable_model_is_503(client: TestClient, fake: FakeGenerator) -> None:
    def missing_model(request: GenerationRequest) -> str:
        raise ModelUnavailable("The embedded model is not installed. Run: make model")

    fake.script = missing_model
    response = await client.post("/v1/chat/completions", json={"messages": HELLO})
    assert response.status == 503
    error = (await response.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "model_unavailable")
    assert error["message"] == "The embedded model is not installed. Run: make model"


async def test_error_before_any_text_is_500(client: TestClient, fake: FakeGenerator) -> None:
    fake.fail_after = 0
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json={"messages": HELLO, "stream": stream})
        assert response.status == 500
        error = (await response.json())["error"]
        assert error["message"] == "scripted failure"
        assert (error["type"], error["code"]) == ("server_error", "generation_failed")


async def test_error_after_some_text_keeps_the_text(client: TestClient, fake: FakeGenerator) -> None:
    fake.fail_after = 2
    body = await (await client.post("/v1/chat/completions", json={"messages": HELLO})).json()
    expected = default_script(fake.requests[0])
    assert body["choices"][0]["message"]["content"].split() == expected.split()[:2]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["chorus"] == {"finish_reason": "error", "tokens": 2, "error": "scripted failure"}

    response = await client.post("/v1/chat/completions", json={"messages": HELLO, "stream": True})
    assert response.status == 200
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2]) == {
        "error": {"message": "scripted failure", "type": "server_error", "param": None, "code": None}
    }
    content = [json.loads(event)["choices"][0]["delta"].get("content", "") for event in events[:-2]]
    assert "".join(content).split() == expected.split()[:2]


async def test_bearer_token_guards_v1_but_not_health_or_metrics() -> None:
    app = build_app(FakeGenerator(), model_name="fake", api_key="s3cret")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            response = await client.get("/v1/models", headers=headers)
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            error = (await response.json())["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
        response = await client.post("/v1/chat/completions", json={"messages": HELLO})
        assert response.status == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/models", headers=good)).status == 200
        response = await client.post("/v1/chat/completions", json={"messages": HELLO}, headers=good)
        assert response.status == 200
        assert (await client.get("/health")).status == 200
        metrics = await (await client.get("/metrics")).text()
        assert metric(metrics, "chorus_rejections_total", reason="unauthorized") == 4


async def test_metrics_are_prometheus_text_and_count_requests(client: TestClient, fake: FakeGenerator) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    before = await response.text()
    for name in (
        "chorus_queue_depth",
        "chorus_running_requests",
        "chorus_generated_tokens_total",
        "chorus_ttft_seconds",
        "chorus_itl_seconds",
        "chorus_requests_total",
        "chorus_rejections_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in before, name

    await client.post("/v1/chat/completions", json={"messages": HELLO, "stream": True})
    await client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 0})
    fake.busy = True
    await client.post("/v1/chat/completions", json={"messages": HELLO})
    after = await (await client.get("/metrics")).text()

    words = len(default_script(fake.requests[0]).split())
    assert metric(after, "chorus_generated_tokens_total") == words
    assert metric(after, "chorus_requests_total", status="200") == 1
    assert metric(after, "chorus_requests_total", status="400") == 1
    assert metric(after, "chorus_requests_total", status="429") == 1
    assert metric(after, "chorus_rejections_total", reason="invalid_request") == 1
    assert metric(after, "chorus_rejections_total", reason="queue_full") == 1
    assert metric(after, "chorus_finished_requests_total", reason="stop") == 1
    assert metric(after, "chorus_ttft_seconds_count") == 1
    assert metric(after, "chorus_itl_seconds_count") == words - 1
    assert metric(after, "chorus_running_requests") == 0


async def test_queue_depth_gauge_reads_the_generator() -> None:
    fake = FakeGenerator()
    fake.queue_depth = 7  # type: ignore[attr-defined]
    async with TestClient(TestServer(build_app(fake, model_name="fake"), host="127.0.0.1")) as client:
        assert metric(await (await client.get("/metrics")).text(), "chorus_queue_depth") == 7


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_aborts_the_generation(stream: bool) -> None:
    recorder = RecordingGenerator(FakeGenerator(delay_s=0.05))
    async with TestClient(TestServer(build_app(recorder, model_name="fake"), host="127.0.0.1")) as client:
        body = {"messages": HELLO, "max_tokens": 2000, "stream": stream}
        if stream:
            response = await client.post("/v1/chat/completions", json=body)
            assert (await response.content.readline()).startswith(b"data: ")
            response.close()
        else:
            task = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
            await wait_until(lambda: bool(recorder.inner.requests))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await wait_until(lambda: bool(recorder.ended))
        [request] = recorder.inner.requests
        assert recorder.aborted == [request.request_id]
        assert recorder.ended == [request.request_id]
        metrics = await (await client.get("/metrics")).text()
        assert metric(metrics, "chorus_finished_requests_total", reason="abort") == 1
        assert metric(metrics, "chorus_requests_total", status="499") == 1


# -- the command line ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chorus_serve_answers_and_chorus_run_generates_through_it(tmp_path: Path) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    port = free_port()
    server_env = base_env | {"CHORUS_HOME": str(tmp_path / "server"), "CHORUS_MODEL__SOURCE": "fake"}
    server = subprocess.Popen(
        [sys.executable, "-m", "chorus", "serve", "--port", str(port)],
        env=server_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def answered() -> httpx.Response | None:
            assert server.poll() is None, server.communicate()
            try:
                return httpx.get(f"{url}/health", timeout=1)
            except httpx.TransportError:
                return None

        health = wait_for_sync(answered, timeout_s=30, describe=lambda: "chorus serve did not answer /health")
        assert health.status_code == 200
        assert health.json()["model"] == "fake"

        # One candidate per variant, so the one slogan below is exactly one request to the server.
        client_env = base_env | {
            "CHORUS_HOME": str(tmp_path / "client"),
            "CHORUS_GENERATION__URL": f"{url}/v1",
            "CHORUS_GENERATION__BEST_OF": "1",
        }
        result = subprocess.run(
            [sys.executable, "-m", "chorus", "run"],
            input="/create slogan x\n",
            env=client_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "── slogan · v1 of 1 ──" in result.stdout
        assert "slogan for x" in result.stdout, result.stdout
        doctor = subprocess.run(
            [sys.executable, "-m", "chorus", "doctor"], env=client_env, cwd=ROOT, capture_output=True, text=True
        )
        assert f"  model:     remote {url}/v1: ok, serving fake" in doctor.stdout, doctor.stdout
        served = httpx.get(f"{url}/metrics", timeout=5).text
        assert metric(served, "chorus_requests_total", status="200") == 1
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert server.returncode == 0, err
    assert f"at {url}/v1" in out


# -- the official OpenAI client against `chorus serve` -------------------------------------------------------------


class SizedFake(FakeGenerator):
    """A fake that, like the batching engine, holds at most max_len tokens per request (prompt included)."""

    max_len = 40


class BusyAtFirst(FakeGenerator):
    """Refuses the first `refusals` requests as busy, then serves."""

    def __init__(self, refusals: int, **options: Any) -> None:
        super().__init__(**options)
        self.refusals = refusals
        self.attempts = 0

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.attempts += 1
        self.busy = self.attempts <= self.refusals
        return super().stream(request)


@contextlib.asynccontextmanager
async def openai_client(generator: Any, *, max_retries: int = 0) -> AsyncIterator[openai.AsyncOpenAI]:
    """The stock AsyncOpenAI client pointed at `chorus serve` over `generator` on 127.0.0.1."""
    async with TestServer(build_app(generator, model_name="fake"), host="127.0.0.1") as server:
        client = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key="unused", max_retries=max_retries, timeout=30
        )
        try:
            yield client
        finally:
            await client.close()


async def test_openai_client_without_max_tokens_gets_what_fits() -> None:
    fake = SizedFake()
    async with openai_client(fake) as client:
        completion = await client.chat.completions.create(model="fake", messages=HELLO)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == default_script(fake.requests[0])
        request = fake.requests[0]
        assert request.fit_max_new_tokens
        assert request.max_new_tokens < SizedFake.max_len, "the default leaves room for the prompt"

        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="fake", messages=HELLO, max_tokens=100)  # type: ignore[arg-type]
        assert refused.value.status_code == 400
        assert f"at most {SizedFake.max_len - 1}" in refused.value.message
        assert len(fake.requests) == 1


async def test_openai_client_sees_real_prompt_token_counts() -> None:
    fake = FakeGenerator()
    async with openai_client(fake) as client:
        completion = await client.chat.completions.create(model="fake", messages=HELLO)  # type: ignore[arg-type]
        prompt = prompt_words(fake.requests[0])
        assert prompt > 0
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == prompt
        assert completion.usage.total_tokens == prompt + completion.usage.completion_tokens

        stream = await client.chat.completions.create(
            model="fake",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
        assert [usage.prompt_tokens for usage in usages] == [prompt]


async def test_openai_client_retrieves_the_served_model() -> None:
    async with openai_client(FakeGenerator()) as client:
        model = await client.models.retrieve("fake")
        assert (model.id, model.object, model.owned_by) == ("fake", "model", "chorus")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("org/other-model")
        assert "does not exist" in missing.value.message


async def test_busy_answer_states_the_retry_after_it_sends() -> None:
    fake = FakeGenerator()
    fake.busy, fake.busy_retry_after_s = True, 7
    async with openai_client(fake) as client:
        with pytest.raises(openai.RateLimitError) as busy:
            await client.chat.completions.create(model="fake", messages=HELLO)  # type: ignore[arg-type]
    retry_after = busy.value.response.headers["Retry-After"]
    assert retry_after == "7"
    assert f"Try again in {retry_after} s" in busy.value.message


async def test_stock_client_retry_after_a_busy_answer_succeeds() -> None:
    fake = BusyAtFirst(refusals=1)
    async with openai_client(fake, max_retries=2) as client:
        completion = await client.chat.completions.create(model="fake", messages=HELLO)  # type: ignore[arg-type]
    assert fake.attempts == 2
    assert completion.choices[0].message.content == default_script(fake.requests[-1])


@pytest.mark.parametrize(
    "chorus",
    [
        b'{"priority": ["interactive"]}',
        b'{"priority": {"name": "interactive"}}',
        b'{"time_budget_s": NaN}',
        b'{"time_budget_s": Infinity}',
        b'{"time_budget_s": 1e999}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["priority-list", "priority-dict", "budget-nan", "budget-infinity", "budget-overflow", "nested-100k"],
)
async def test_malformed_extension_is_400_with_a_message(chorus: bytes) -> None:
    fake = FakeGenerator()
    async with openai_client(fake) as client:
        body = b'{"model": "fake", "messages": ' + json.dumps(HELLO).encode() + b', "chorus": ' + chorus + b"}"
        with pytest.raises(openai.BadRequestError) as refused:
            await client.post(
                "/chat/completions",
                cast_to=httpx.Response,
                content=body,
                options={"headers": {"Content-Type": "application/json"}},
            )
    assert refused.value.status_code == 400
    assert refused.value.message
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert fake.requests == []


@pytest.mark.slow
async def test_openai_client_on_the_real_engine_defaults_max_tokens_to_what_fits(embedded_spec: Any) -> None:
    from generation.engine import BatchingEngine

    engine = BatchingEngine(embedded_spec, max_batch=2, max_queue=2, max_seq_len=64)
    try:
        await engine.warmup()
        async with TestServer(build_app(engine, model_name="smol"), host="127.0.0.1") as server:
            client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
            story = [{"role": "user", "content": "Write a very long story about a dragon."}]
            completion = await client.chat.completions.create(model="smol", messages=story, temperature=0)  # type: ignore[arg-type]
            assert completion.choices[0].message.content
            assert completion.usage is not None
            assert completion.usage.prompt_tokens > 10
            assert completion.usage.total_tokens == 64 or completion.choices[0].finish_reason == "stop"

            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model="smol", messages=story, max_tokens=60)  # type: ignore[arg-type]
            assert refused.value.code == "context_length_exceeded"
            assert "64 tokens" in refused.value.message
            await client.close()
    finally:
        await engine.close()


# -- what stock OpenAI clients send and expect ---------------------------------------------------------------------


async def test_stock_stream_loop_never_meets_a_chunk_without_choices() -> None:
    """The SDK's own example reads `chunk.choices[0]` on every chunk: queue notes are for clients that send `chorus`."""
    fake = FakeGenerator(queued=2)
    async with openai_client(fake) as client:
        stream = await client.chat.completions.create(model="fake", messages=HELLO, stream=True)  # type: ignore[arg-type]
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        assert text == default_script(fake.requests[0])
        raw = await client.chat.completions.with_raw_response.create(model="fake", messages=HELLO, stream=True)  # type: ignore[arg-type]
        body = (await raw.http_response.aread()).decode()
        assert ": queue_position 2\n\n: queue_position 1\n\n" in body, "the wait stays visible as SSE comments"

        stream = await client.chat.completions.create(
            model="fake",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            extra_body={"chorus": {"priority": "interactive"}},
        )
        chunks = [chunk async for chunk in stream]
        notes = [chunk for chunk in chunks if not chunk.choices]
        assert [(chunk.model_extra or {})["chorus"]["queue_position"] for chunk in notes] == [2, 1]


async def test_include_usage_marks_every_other_chunk_with_null_usage(client: TestClient) -> None:
    """OpenAI: with include_usage, every chunk has a `usage` field, null until the last one; without, none has."""
    body = {"messages": HELLO, "stream": True, "max_tokens": 3, "stream_options": {"include_usage": True}}
    chunks = [
        json.loads(event)
        for event in sse_events(await (await client.post("/v1/chat/completions", json=body)).text())[:-1]
    ]
    *before, last = chunks
    assert all("usage" in chunk and chunk["usage"] is None for chunk in before)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    plain = {**body, "stream_options": None}
    chunks = [
        json.loads(event)
        for event in sse_events(await (await client.post("/v1/chat/completions", json=plain)).text())[:-1]
    ]
    assert all("usage" not in chunk for chunk in chunks)


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "tool"),
        ({"tool_choice": "required"}, "tool_choice", "tool"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions", "function"),
        ({"function_call": {"name": "f"}}, "function_call", "function"),
        ({"logprobs": True}, "logprobs", "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs", "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format", "json_object"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
            "response_format",
            "json_schema",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format", "yaml"),
        ({"logit_bias": {"50256": -100}}, "logit_bias", "logit_bias"),
        ({"logit_bias": {"50256": -101}}, "logit_bias", "logit_bias"),
        ({"presence_penalty": 2.5}, "presence_penalty", "between -2 and 2"),
        ({"frequency_penalty": -3}, "frequency_penalty", "between -2 and 2"),
        ({"frequency_penalty": "high"}, "frequency_penalty", "number"),
        ({"modalities": ["text", "audio"]}, "modalities", "audio"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "audio"),
    ],
)
async def test_unsupported_features_are_a_400_naming_them(options: dict[str, Any], param: str, words: str) -> None:
    """Tools, logprobs, JSON mode and the like would change what the client gets: refused, never silently ignored."""
    fake = FakeGenerator()
    async with openai_client(fake) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="fake", messages=HELLO, extra_body=options)  # type: ignore[arg-type]
    assert refused.value.param == param
    assert words in refused.value.message
    assert fake.requests == []


async def test_fields_real_clients_send_are_accepted() -> None:
    """What frameworks put in an ordinary request: neutral values of unsupported features, names, parts, extras."""
    fake = FakeGenerator()
    async with openai_client(fake) as client:
        completion = await client.chat.completions.create(
            model="fake",
            messages=[
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "name": "ana", "content": [{"type": "text", "text": "Write a slogan."}]},
            ],
            max_completion_tokens=5,
            temperature=0,
            top_p=1,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            logit_bias={},
            logprobs=False,
            response_format={"type": "text"},
            tool_choice="none",
            stop=["<a>", "<b>", "<c>", "<d>"],
            seed=7,
            user="ana",
            n=1,
            store=False,
            metadata={"team": "cafe"},
            modalities=["text"],
            extra_body={"a_field_from_the_future": {"x": 1}},
        )
    assert completion.choices[0].finish_reason == "length"
    [request] = fake.requests
    assert request.messages == (ChatMessage("system", "Be brief."), ChatMessage("user", "Write a slogan."))
    assert (request.max_new_tokens, request.seed, request.stop) == (5, 7, ("<a>", "<b>", "<c>", "<d>"))


async def test_an_image_part_is_a_400_that_says_so() -> None:
    fake = FakeGenerator()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    async with openai_client(fake) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
            )
    assert refused.value.param == "messages[0].content[1]"
    assert "image_url" in refused.value.message and "text" in refused.value.message


async def test_a_base_url_without_v1_gets_a_404_that_says_where_the_api_is() -> None:
    async with TestServer(build_app(FakeGenerator(), model_name="fake"), host="127.0.0.1") as server:
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/")), api_key="unused", max_retries=0)
        try:
            with pytest.raises(openai.NotFoundError) as missing:
                await client.chat.completions.create(model="fake", messages=HELLO)  # type: ignore[arg-type]
        finally:
            await client.close()
    assert missing.value.code == "unknown_url"
    assert "/v1/chat/completions" in missing.value.message


async def test_legacy_completions_is_a_404_pointing_at_chat_completions() -> None:
    async with openai_client(FakeGenerator()) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.completions.create(model="fake", prompt="Once upon a time")
    assert missing.value.code == "unknown_url"
    assert "/v1/chat/completions" in missing.value.message


async def test_a_wrong_api_key_is_an_authentication_error_for_the_stock_client() -> None:
    async with TestServer(build_app(FakeGenerator(), model_name="fake", api_key="s3cret"), host="127.0.0.1") as server:
        for key, ok in (("wrong", False), ("s3cret", True)):
            client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key=key, max_retries=0)
            try:
                if ok:
                    assert (await client.models.list()).data[0].id == "fake"
                    continue
                with pytest.raises(openai.AuthenticationError) as refused:
                    await client.chat.completions.create(model="fake", messages=HELLO)  # type: ignore[arg-type]
                assert refused.value.code == "invalid_api_key" and "Bearer" in refused.value.message
            finally:
                await client.close()


class VectorEmbedder:
    """Three-number vectors from the text's length, so answers are checkable; fails on the text 'boom'."""

    model_name = "vectors"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if "boom" in texts:
            raise RuntimeError("embedder crashed")
        return [[float(len(text)), 0.5, -1.25] for text in texts]


async def test_stock_client_embeddings_decode_from_its_default_base64() -> None:
    """openai-python asks for base64 unless told otherwise, and decodes it to floats itself."""
    async with TestServer(
        build_app(FakeGenerator(), model_name="fake", embedder=VectorEmbedder()), host="127.0.0.1"
    ) as server:
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
        try:
            default = await client.embeddings.create(model="vectors", input=["ab", "abcd"])
            assert [item.embedding for item in default.data] == [[2.0, 0.5, -1.25], [4.0, 0.5, -1.25]]
            floats = await client.embeddings.create(model="vectors", input="abc", encoding_format="float")
            assert floats.data[0].embedding == [3.0, 0.5, -1.25]
            with pytest.raises(openai.BadRequestError) as refused:
                await client.embeddings.create(model="vectors", input="abc", dimensions=2)
            assert refused.value.param == "dimensions" and "3" in refused.value.message
            with pytest.raises(openai.BadRequestError) as refused:
                await client.embeddings.create(model="vectors", input=[[15496, 995]])
            assert "token" in refused.value.message
            with pytest.raises(openai.InternalServerError) as failed:
                await client.embeddings.create(model="vectors", input="boom")
            assert failed.value.body is not None and failed.value.type == "server_error"
        finally:
            await client.close()
