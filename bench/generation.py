"""Throughput and latency of the generation core against its peers, on the embedded SmolLM2-135M, in one run.

Every system gets the same requests: a fixed mix of content kinds (slogan, tweet, story, poem) rendered with each
kind's system prompt and template, 64 or 256 new tokens, temperature 0.8, the configured top_p, fixed seeds and no
stop strings (EOS may end a request early; the tables count the tokens actually produced). Each system runs in a
fresh subprocess so its peak RSS is its own:

1. naive Hugging Face `model.generate`, one request at a time (concurrency 1 only);
2. transformers' continuous batching, `model.generate_batch`, given all N requests at once (per-token timestamps
   give TTFT and ITL; it cannot stream);
3. llama.cpp through llama-cpp-python on the same GGUF (Q4_1 weights), one request at a time, token by token;
4. the Chorus BatchingEngine (float32 and bfloat16, max_batch=32) at concurrency 1, 4, 16 and 32 (closed loop);
   bfloat16 on a CPU with native bfloat16 runs oneDNN-packed weights, which is what engine.dtype = "auto" picks.

Scenario 2: 32 scheduled "drop" requests (256 tokens) running on the default engine config (max_batch=16,
interactive_reserve=4), then 8 interactive requests (64 tokens) arrive, all at once and spread one per second.
Scenario 3: `chorus serve` (build_app over a default BatchingEngine, in its own process) under an httpx load
generator: a closed-loop row comparable with the in-process engine, then Poisson arrivals at fixed rates, with goodput.

Run:  .venv/bin/python bench/generation.py [--quick] [--out-dir bench/results]
      (writes generation-cpu-2core.json and .md there; --quick writes generation-quick.*).
      --only llama_cpp,engine,interactive --concurrency 32 --dtypes bfloat16 runs just what the target ratios need.
llama.cpp needs the optional extra: .venv/bin/pip install -e '.[bench]' (it compiles for several minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
# `python bench/generation.py` puts bench/ first on sys.path, where this file would shadow the `generation` package:
# look in the repository root first and in bench/ (for local_generator) last.
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR), str(BENCH_DIR)]

from local_generator import PROMPT_MIX, TEMPERATURE, OtherLoad, machine_info, peak_rss_mb, percentile  # noqa: E402

_log = logging.getLogger(__name__)

RESULT_PREFIX = "BENCH_RESULT "
URL_PREFIX = "BENCH_URL "
DISTURBED_CORES = 0.25
CONCURRENCY = (1, 4, 16, 32)
ENGINE_DTYPES = ("float32", "bfloat16")
LLAMA_CPP_NO_EXTRA_BUFFERS = True
ENGINE_MAX_BATCH = 32
SLO_TTFT_S = 2.0
SLO_MEAN_ITL_S = 0.25
RSS_LIMIT_BYTES = 1.5e9
MIB = 1024 * 1024
# Batch-1 targets: decode speed against llama.cpp one request at a time, and TTFT for a short chat message.
SHORT_PROMPT = "Write a slogan for a coffee shop."
SHORT_PROMPT_REQUESTS = 8
SHORT_PROMPT_TTFT_TARGET_S = 0.150
BATCH1_VS_LLAMA_CPP_TARGET = 1.0
# llama.cpp (llama-cpp-python 0.3.36, Q4_1, 2 threads) one request at a time, 64 tokens, on an idle 2-core box:
# the reference when llama-cpp-python is not installed (it compiles llama.cpp for minutes; never in CI).
LLAMA_CPP_IDLE_REFERENCE_TOK_S = 55.4
PAGE_SIZE = 256  # generate_batch's default KV page


@dataclass(frozen=True)
class Plan:
    """How many requests each part runs; the quick plan only checks that everything works."""

    sequential: dict[int, int]  # max_new_tokens -> requests, for naive generate and llama.cpp
    engine: dict[int, dict[int, int]]  # max_new_tokens -> concurrency -> requests
    generate_batch: dict[int, tuple[int, ...]]  # max_new_tokens -> batch sizes (all requests at once)
    bfloat16_lengths: tuple[int, ...]
    background: int = 32
    interactive: int = 8
    serve_closed_loop: int = 16
    serve_rates: tuple[float, ...] = (0.5, 1.0, 2.0)
    serve_window_s: float = 40.0


FULL_PLAN = Plan(
    sequential={64: 8, 256: 4},
    engine={64: {1: 8, 4: 16, 16: 16, 32: 32}, 256: {1: 4, 4: 8, 16: 16, 32: 32}},
    generate_batch={64: (16, 32), 256: (32,)},
    bfloat16_lengths=(64, 256),
)
QUICK_PLAN = Plan(
    sequential={64: 2, 256: 1},
    engine={64: {1: 2, 4: 4, 32: 32}, 256: {4: 4}},
    generate_batch={64: (4,), 256: (2,)},
    bfloat16_lengths=(64,),
    serve_closed_loop=4,
    serve_rates=(1.0,),
    serve_window_s=8.0,
)


@dataclass(frozen=True)
class RequestSpec:
    """One benchmark request; the same index gives the same prompt and seed to every system."""

    kind: str
    prompt: str
    tone: str
    seed: int
    max_new_tokens: int


def requests_for(length: int, count: int) -> list[RequestSpec]:
    return [
        RequestSpec(*PROMPT_MIX[index % len(PROMPT_MIX)], seed=1000 + index, max_new_tokens=length)
        for index in range(count)
    ]


@dataclass
class Timing:
    """One request as its client saw it; times are perf_counter seconds."""

    kind: str
    max_new_tokens: int
    tokens: int
    finish_reason: str | None
    submitted: float
    finished: float
    first_token: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.submitted


def gaps(times: Sequence[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def summarise(timings: Sequence[Timing], **labels: Any) -> dict[str, Any]:
    """One table row: aggregate tokens/s over the wall window of all requests, pooled TTFT and ITL percentiles."""
    start = min(t.submitted for t in timings)
    end = max(t.finished for t in timings)
    tokens = [t.tokens for t in timings]
    ttft = [t.ttft_s for t in timings if t.ttft_s is not None]
    gaps = [gap for t in timings for gap in t.gaps_s]
    reasons: dict[str, int] = {}
    for t in timings:
        reasons[str(t.finish_reason)] = reasons.get(str(t.finish_reason), 0) + 1
    return {
        **labels,
        "requests": len(timings),
        "tokens_total": sum(tokens),
        "tokens_min": min(tokens),
        "tokens_max": max(tokens),
        "finish_reasons": reasons,
        "wall_s": end - start,
        "tokens_per_s": sum(tokens) / (end - start) if end > start else float("nan"),
        "ttft_p50_s": percentile(ttft, 50) if ttft else None,
        "ttft_p95_s": percentile(ttft, 95) if ttft else None,
        "itl_p50_s": percentile(gaps, 50) if gaps else None,
        "itl_p95_s": percentile(gaps, 95) if gaps else None,
        "peak_rss_mib": peak_rss_mb(),
    }


# -- children: each system runs in its own interpreter ------------------------------------------------------------


def load_hf(dtype: str) -> tuple[Any, Any]:
    from config import load_settings
    from generation.models import import_transformers, prepare_model

    transformers = import_transformers()
    import torch

    spec = prepare_model(load_settings(env={}))
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        spec.path, local_files_only=True, dtype=getattr(torch, dtype)
    )
    model.eval()
    return model, tokenizer


def prompt_ids(tokenizer: Any, spec: RequestSpec) -> list[int]:
    """The chat prompt exactly as the engine builds it (kind system prompt + rendered template)."""
    from config import load_settings
    from generation.prompts import build_messages, render_template

    kind = load_settings(env={}).kinds[spec.kind]
    messages = build_messages(kind, render_template(kind, spec.prompt, spec.tone))
    chat = [{"role": m.role, "content": m.content} for m in messages]
    encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(token) for token in source)
    return ids


def child_naive(params: dict[str, Any]) -> dict[str, Any]:
    """Plain `model.generate` with sampling, one request at a time; a streamer timestamps each new token."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    model, tokenizer = load_hf("float32")
    eos = eos_ids(model, tokenizer)
    top_p = params["top_p"]

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.ids: list[int] = []
            self._prompt_seen = False

        def put(self, value: Any) -> None:
            if not self._prompt_seen:  # generate() first hands over the prompt
                self._prompt_seen = True
                return
            self.times.append(time.perf_counter())
            self.ids.append(int(value.reshape(-1)[0]))

        def end(self) -> None:
            pass

    def run(spec: RequestSpec) -> Timing:
        ids = torch.tensor([prompt_ids(tokenizer, spec)])
        clock = TokenClock()
        torch.manual_seed(spec.seed)
        submitted = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=spec.max_new_tokens,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=top_p,
                top_k=0,
                pad_token_id=min(eos),
                streamer=clock,
            )
        finished = time.perf_counter()
        times, produced = clock.times, clock.ids
        ended_by_eos = bool(produced) and produced[-1] in eos
        if ended_by_eos:  # EOS is not a token the caller sees
            times, produced = times[:-1], produced[:-1]
        return Timing(
            kind=spec.kind,
            max_new_tokens=spec.max_new_tokens,
            tokens=len(produced),
            finish_reason="stop" if ended_by_eos else "length",
            submitted=submitted,
            finished=finished,
            first_token=times[0] if times else None,
            gaps_s=gaps(times),
        )

    run(RequestSpec(*PROMPT_MIX[0], seed=999, max_new_tokens=16))  # one-off costs, not measured
    rows = []
    for length, count in params["sequential"].items():
        timings = [run(spec) for spec in requests_for(int(length), count)]
        rows.append(summarise(timings, system="naive", max_new_tokens=int(length), concurrency=1, dtype="float32"))
    return {"rows": rows, "torch_threads": torch.get_num_threads()}


def child_generate_batch(params: dict[str, Any]) -> dict[str, Any]:
    """transformers' continuous batching: all requests of a run handed to one `generate_batch` call."""
    import torch
    from transformers import ContinuousBatchingConfig, GenerationConfig

    model, tokenizer = load_hf("float32")
    eos = eos_ids(model, tokenizer)

    def run(specs: Sequence[RequestSpec]) -> tuple[list[Timing], float]:
        config = GenerationConfig(
            max_new_tokens=specs[0].max_new_tokens,
            do_sample=True,
            temperature=TEMPERATURE,
            top_p=params["top_p"],
            top_k=0,
            eos_token_id=sorted(eos),
            pad_token_id=min(eos),
        )
        inputs = [prompt_ids(tokenizer, spec) for spec in specs]
        # On CPU the default cache takes 60% of free RAM (~8.8 GB RSS here, seconds to allocate, a little slower);
        # sized to the workload it is faster, so the peer gets that.
        blocks = sum(-(-(len(ids) + spec.max_new_tokens) // PAGE_SIZE) for ids, spec in zip(inputs, specs, strict=True))
        cb_config = ContinuousBatchingConfig(seed=specs[0].seed, page_size=PAGE_SIZE, num_blocks=blocks + 2)
        called = time.perf_counter()
        outputs = model.generate_batch(
            inputs=inputs,
            generation_config=config,
            continuous_batching_config=cb_config,
            record_timestamps=True,
            progress_bar=False,
        )
        call_s = time.perf_counter() - called
        if len(outputs) != len(specs):
            raise RuntimeError(f"generate_batch returned {len(outputs)} of {len(specs)} results")
        timings = []
        for spec, output in zip(specs, outputs.values(), strict=True):
            if output.error:
                raise RuntimeError(f"generate_batch failed a request: {output.error}")
            produced = list(output.generated_tokens)
            stamps = list(output.timestamps or [])
            ended_by_eos = bool(produced) and produced[-1] in eos
            if ended_by_eos:
                produced, stamps = produced[:-1], stamps[:-1]
            timings.append(
                Timing(
                    kind=spec.kind,
                    max_new_tokens=spec.max_new_tokens,
                    tokens=len(produced),
                    finish_reason="stop" if ended_by_eos else "length",
                    submitted=output.created_time,
                    finished=output.lifespan[1] if output.lifespan[1] > 0 else time.perf_counter(),
                    first_token=stamps[0] if stamps else None,
                    gaps_s=gaps(stamps),
                )
            )
        return timings, call_s

    run(requests_for(16, 4))  # one-off costs, not measured
    rows = []
    for length, sizes in params["generate_batch"].items():
        for size in sizes:
            timings, call_s = run(requests_for(int(length), size))
            row = summarise(timings, system="generate_batch", max_new_tokens=int(length), concurrency=size)
            row.update(dtype="float32", call_s=call_s)
            rows.append(row)
    return {"rows": rows, "torch_threads": torch.get_num_threads()}


def child_llama_cpp(params: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp on the embedded GGUF itself, one request at a time, timing each token as it is sampled."""
    from llama_cpp import Llama

    from generation.models import locate_embedded_gguf

    gguf = locate_embedded_gguf()
    if gguf is None:
        raise RuntimeError("the embedded GGUF is not installed")
    threads = os.cpu_count() or 1
    if params.get("no_extra_buffers"):
        _without_extra_buffer_types()
    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    eos = {llm.token_eos(), *params["eos"]}
    prompts: dict[str, list[int]] = params["prompt_ids"]

    def run(spec: RequestSpec) -> Timing:
        ids = prompts[f"{spec.kind}|{spec.prompt}"]
        llm.set_seed(spec.seed)
        submitted = time.perf_counter()
        times: list[float] = []
        reason = "length"
        if spec.max_new_tokens > 0:
            for token in llm.generate(
                ids, top_k=0, top_p=params["top_p"], min_p=0.0, temp=TEMPERATURE, repeat_penalty=1.0, reset=True
            ):
                if token in eos:
                    reason = "stop"
                    break
                times.append(time.perf_counter())
                if len(times) >= spec.max_new_tokens:
                    break
        return Timing(
            kind=spec.kind,
            max_new_tokens=spec.max_new_tokens,
            tokens=len(times),
            finish_reason=reason,
            submitted=submitted,
            finished=time.perf_counter(),
            first_token=times[0] if times else None,
            gaps_s=gaps(times),
        )

    run(RequestSpec(*PROMPT_MIX[0], seed=999, max_new_tokens=16))
    rows = []
    for length, count in params["sequential"].items():
        timings = [run(spec) for spec in requests_for(int(length), count)]
        rows.append(summarise(timings, system="llama.cpp", max_new_tokens=int(length), concurrency=1, dtype="Q4_1"))
    import llama_cpp

    return {"rows": rows, "llama_cpp_version": llama_cpp.__version__, "threads": threads}


def _without_extra_buffer_types() -> None:
    """Load llama.cpp models without its extra weight buffer types (AMX / repacked layouts): llama-cpp-python
    0.3.36 built on an AMX machine segfaults on any multi-token batch with them (seen on this VM)."""
    import llama_cpp
    import llama_cpp.llama

    default = llama_cpp.llama_model_default_params

    def params() -> Any:
        result = default()
        result.use_extra_bufts = False
        return result

    llama_cpp.llama.llama_cpp.llama_model_default_params = params  # type: ignore[attr-defined]


def _request(settings: Any, spec: RequestSpec, **overrides: Any) -> Any:
    from generation.prompts import build_messages, render_template
    from generation.types import GenerationRequest

    kind = settings.kinds[spec.kind]
    return GenerationRequest(
        messages=build_messages(kind, render_template(kind, spec.prompt, spec.tone)),
        max_new_tokens=spec.max_new_tokens,
        temperature=TEMPERATURE,
        top_p=settings.generation.top_p,
        stop=(),
        seed=spec.seed,
        time_budget_s=600.0,
        **overrides,
    )


async def stream_timed(generator: Any, request: Any, kind: str) -> Timing:
    """Consume one stream; TTFT is the first chunk with text, ITL the gaps between text chunks."""
    submitted = time.perf_counter()
    times: list[float] = []
    final = None
    async for chunk in generator.stream(request):
        if chunk.text:
            times.append(time.perf_counter())
        if chunk.finish_reason is not None:
            final = chunk
            break
    if final is None or final.finish_reason == "error":
        raise RuntimeError(f"the engine failed a request: {getattr(final, 'error', 'no final chunk')}")
    return Timing(
        kind=kind,
        max_new_tokens=request.max_new_tokens,
        tokens=final.tokens,
        finish_reason=final.finish_reason,
        submitted=submitted,
        finished=time.perf_counter(),
        first_token=times[0] if times else None,
        gaps_s=gaps(times),
        prompt_tokens=getattr(final, "prompt_tokens", None),
    )


async def closed_loop(
    specs: Sequence[RequestSpec], concurrency: int, one: Callable[[RequestSpec], Awaitable[Timing]]
) -> list[Timing]:
    """`concurrency` clients, each sending its next request as soon as the previous one finished."""
    pending = list(reversed(specs))
    timings: list[Timing] = []

    async def client() -> None:
        while pending:
            timings.append(await one(pending.pop()))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return timings


def child_engine(params: dict[str, Any]) -> dict[str, Any]:
    """The BatchingEngine in process, closed-loop clients at one concurrency level, each length in turn."""
    from config import load_settings
    from generation.engine import BatchingEngine
    from generation.models import prepare_model

    settings = load_settings(env={})
    dtype, concurrency = params["dtype"], params["concurrency"]

    async def main() -> list[dict[str, Any]]:
        engine = BatchingEngine(prepare_model(settings), device="cpu", dtype=dtype, max_batch=params["max_batch"])
        try:
            await engine.warmup()
            warm = requests_for(16, min(concurrency, 4))
            await closed_loop(warm, len(warm), lambda s: stream_timed(engine, _request(settings, s), s.kind))
            rows = []
            if concurrency == 1:
                rows.append(await short_prompt_ttft(engine, params.get("short_requests", SHORT_PROMPT_REQUESTS), dtype))
            for length, count in params["lengths"].items():
                specs = requests_for(int(length), count)
                timings = await closed_loop(
                    specs, concurrency, lambda s: stream_timed(engine, _request(settings, s), s.kind)
                )
                row = summarise(timings, system="engine", max_new_tokens=int(length), concurrency=concurrency)
                row.update(dtype=dtype, max_batch=params["max_batch"])
                rows.append(row)
            return rows
        finally:
            await engine.close()

    import torch

    return {"rows": asyncio.run(main()), "torch_threads": torch.get_num_threads()}


async def short_prompt_ttft(engine: Any, count: int, dtype: str) -> dict[str, Any]:
    """Batch-1 latency as a chat user feels it: one short message (about 30 tokens with the chat template), a few
    new tokens, one request at a time; the row's TTFT is what the target is about."""
    from generation.types import ChatMessage, GenerationRequest

    timings = []
    for index in range(count):
        request = GenerationRequest(
            messages=(ChatMessage("user", SHORT_PROMPT),), max_new_tokens=8, temperature=0.0, seed=index
        )
        timings.append(await stream_timed(engine, request, "short"))
    row = summarise(timings, system="engine (short prompt)", max_new_tokens=8, concurrency=1)
    prompt_tokens = [t.prompt_tokens for t in timings if t.prompt_tokens is not None]
    row.update(dtype=dtype, prompt_tokens=max(prompt_tokens, default=None))
    return row


def default_engine(settings: Any, spec: Any) -> Any:
    """A BatchingEngine with default.toml's [engine] settings (max_batch 16, dtype auto), on the CPU."""
    from generation.engine import BatchingEngine

    return BatchingEngine(spec, device="cpu", dtype=settings.engine.dtype, fallback_dtype=settings.model.dtype)


def child_interactive(params: dict[str, Any]) -> dict[str, Any]:
    """Scenario 2: background drops fill the default engine, then interactive requests arrive (burst, spread)."""
    from config import load_settings
    from generation.engine import BatchingEngine
    from generation.models import prepare_model
    from generation.types import Priority

    settings = load_settings(env={})

    async def variant(engine: BatchingEngine, spacing_s: float) -> dict[str, Any]:
        started: set[int] = set()
        background_tokens: dict[int, int] = {}

        async def drop(index: int, spec: RequestSpec) -> None:
            request = _request(settings, spec, priority=Priority.SCHEDULED, conversation_key=f"drop-{index % 4}")
            async for chunk in engine.stream(request):
                if chunk.text:
                    started.add(index)
                background_tokens[index] = max(chunk.tokens, background_tokens.get(index, 0))
                if chunk.finish_reason is not None:
                    break

        drops = [
            asyncio.create_task(drop(index, spec)) for index, spec in enumerate(requests_for(256, params["background"]))
        ]
        # Wait until every slot open to drops is decoding, then a little longer so the batch is in steady state.
        open_slots = engine.max_batch - engine.max_batch // 4  # the default interactive_reserve is a quarter
        deadline = time.perf_counter() + 120
        # The engine exposes no event for these, so poll.
        while len(started) < min(open_slots, params["background"]) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        running_before = engine.running
        queued_before = engine.queue_depth

        async def interactive(index: int, spec: RequestSpec) -> Timing:
            await asyncio.sleep(index * spacing_s)
            request = _request(settings, spec, priority=Priority.INTERACTIVE, conversation_key=f"channel-{index}")
            return await stream_timed(engine, request, spec.kind)

        specs = [
            RequestSpec(*PROMPT_MIX[index % len(PROMPT_MIX)], seed=2000 + index, max_new_tokens=64)
            for index in range(params["interactive"])
        ]
        tokens_before = sum(background_tokens.values())
        window = time.perf_counter()
        timings = await asyncio.gather(*(interactive(i, s) for i, s in enumerate(specs)))
        window = time.perf_counter() - window
        background_rate = (sum(background_tokens.values()) - tokens_before) / window
        for task in drops:
            task.cancel()
        await asyncio.gather(*drops, return_exceptions=True)
        while engine.running or engine.queue_depth:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        row = summarise(timings, system="engine", max_new_tokens=64, concurrency=params["interactive"])
        row.update(
            arrival="all at once" if spacing_s == 0 else f"one every {spacing_s:g} s",
            background_running=running_before,
            background_queued=queued_before,
            background_tokens_per_s=background_rate,
        )
        return row

    async def main() -> list[dict[str, Any]]:
        engine = default_engine(settings, prepare_model(settings))
        try:
            await engine.warmup()
            resolved["dtype"] = engine.dtype
            warm = requests_for(16, 4)
            await closed_loop(warm, 4, lambda s: stream_timed(engine, _request(settings, s), s.kind))
            return [await variant(engine, 0.0), await variant(engine, 1.0)]
        finally:
            await engine.close()

    resolved: dict[str, str] = {}
    rows = asyncio.run(main())
    return {
        "rows": rows,
        "config": {"max_batch": 16, "interactive_reserve": 4, "dtype": resolved.get("dtype")},
        "peak_rss_mib": peak_rss_mb(),
    }


def child_serve(params: dict[str, Any]) -> dict[str, Any]:
    """Scenario 3's server: `generation.serve.serve` over a default BatchingEngine until SIGTERM."""
    from config import load_settings
    from generation.models import prepare_model
    from generation.serve import serve

    settings = load_settings(env={})

    async def main() -> None:
        spec = prepare_model(settings)
        engine = default_engine(settings, spec)
        try:
            await engine.warmup()
            resolved["dtype"] = engine.dtype
            warm = requests_for(16, 4)
            await closed_loop(warm, 4, lambda s: stream_timed(engine, _request(settings, s), s.kind))
            await serve(
                engine,
                "127.0.0.1",
                0,
                model_name=spec.name,
                on_ready=lambda url: print(URL_PREFIX + url, flush=True),
            )
        finally:
            await engine.close()

    resolved: dict[str, str] = {}
    asyncio.run(main())
    return {"peak_rss_mib": peak_rss_mb(), "dtype": resolved.get("dtype")}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "naive": child_naive,
    "generate_batch": child_generate_batch,
    "llama_cpp": child_llama_cpp,
    "engine": child_engine,
    "interactive": child_interactive,
    "serve": child_serve,
}


def run_child(name: str, params: dict[str, Any], *, timeout_s: float = 900) -> dict[str, Any]:
    """Run one child in a fresh interpreter (params on stdin) and return its result plus the load others caused."""
    print(f"  {name} {json.dumps({k: v for k, v in params.items() if k != 'prompt_ids'})}", file=sys.stderr, flush=True)
    load = OtherLoad(children=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", name],
        input=json.dumps(params),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    result["process_wall_s"] = time.perf_counter() - started
    result["other_busy_cores"] = load.cores()
    for row in result.get("rows", []):
        row["other_busy_cores"] = result["other_busy_cores"]
    return result


# -- scenario 3: the HTTP load generator, in this (torch-free) process -------------------------------------------


async def http_one(client: Any, base_url: str, model: str, settings: Any, spec: RequestSpec, arrival: float) -> Timing:
    """One streamed chat completion; TTFT counts from the scheduled arrival, so client lag is not hidden."""
    from generation.prompts import build_messages, render_template

    kind = settings.kinds[spec.kind]
    messages = build_messages(kind, render_template(kind, spec.prompt, spec.tone))
    body = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "max_tokens": spec.max_new_tokens,
        "temperature": TEMPERATURE,
        "top_p": settings.generation.top_p,
        "seed": spec.seed,
        "stream": True,
    }
    times: list[float] = []
    tokens, reason = 0, None
    async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"stream error: {event['error']}")
            choices = event.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                times.append(time.perf_counter())
            extension = event.get("chorus") or {}
            if "tokens" in extension:
                tokens, reason = extension["tokens"], extension.get("finish_reason")
    return Timing(
        kind=spec.kind,
        max_new_tokens=spec.max_new_tokens,
        tokens=tokens,
        finish_reason=reason,
        submitted=arrival,
        finished=time.perf_counter(),
        first_token=times[0] if times else None,
        gaps_s=gaps(times),
    )


def meets_slo(timing: Timing) -> bool:
    ttft = timing.ttft_s
    mean_itl = sum(timing.gaps_s) / len(timing.gaps_s) if timing.gaps_s else 0.0
    return ttft is not None and ttft <= SLO_TTFT_S and mean_itl <= SLO_MEAN_ITL_S


async def http_load(base_url: str, model: str, plan: Plan) -> list[dict[str, Any]]:
    import httpx

    from config import load_settings

    settings = load_settings(env={})
    rows = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def one(spec: RequestSpec) -> Timing:
            return await http_one(client, base_url, model, settings, spec, time.perf_counter())

        specs = requests_for(64, plan.serve_closed_loop)
        timings = await closed_loop(specs, plan.serve_closed_loop, one)
        row = summarise(timings, system="chorus serve", max_new_tokens=64, concurrency=plan.serve_closed_loop)
        row.update(load="closed loop", goodput_rps=None, slo_met=sum(map(meets_slo, timings)))
        rows.append(row)
        for rate in plan.serve_rates:
            rng = random.Random(int(rate * 1000))
            arrivals, clock = [], rng.expovariate(rate)
            while clock < plan.serve_window_s:
                arrivals.append(clock)
                clock += rng.expovariate(rate)
            specs = requests_for(64, len(arrivals))
            start = time.perf_counter()

            async def scheduled(offset: float, spec: RequestSpec, start: float = start) -> Timing:
                await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
                return await http_one(client, base_url, model, settings, spec, start + offset)

            timings = list(await asyncio.gather(*(scheduled(a, s) for a, s in zip(arrivals, specs, strict=True))))
            met = sum(map(meets_slo, timings))
            row = summarise(timings, system="chorus serve", max_new_tokens=64, concurrency=None)
            row.update(
                load=f"Poisson {rate:g} req/s",
                offered_rps=rate,
                window_s=plan.serve_window_s,
                slo_met=met,
                goodput_rps=met / plan.serve_window_s,
            )
            rows.append(row)
    return rows


def run_serve_scenario(plan: Plan) -> dict[str, Any]:
    print("  serve (HTTP load generator in this process)", file=sys.stderr, flush=True)
    from config import load_settings
    from generation.models import prepare_model

    model_name = prepare_model(load_settings(env={})).name
    load = OtherLoad(children=True)
    with tempfile.TemporaryFile(mode="w+") as errors:
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd=REPO_ROOT,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = None
            for line in server.stdout:
                if line.startswith(URL_PREFIX):
                    url = line.removeprefix(URL_PREFIX).strip()
                    break
            if url is None:
                server.wait(timeout=60)
                errors.seek(0)
                raise RuntimeError(f"chorus serve did not start:\n{errors.read()[-3000:]}")
            rows = asyncio.run(http_load(url, model_name, plan))
            server.send_signal(signal.SIGTERM)
            out = server.stdout.read()
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
        if not lines:
            errors.seek(0)
            raise RuntimeError(f"chorus serve exited without a result:\n{errors.read()[-3000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    other = load.cores()
    for row in rows:
        # This load generator's own ru_maxrss means nothing here; the server's peak is what counts.
        row["peak_rss_mib"] = result["peak_rss_mib"]
        row["other_busy_cores"] = other
    return {"rows": rows, "server_peak_rss_mib": result["peak_rss_mib"], "dtype": result["dtype"]}


# -- the orchestrator -------------------------------------------------------------------------------------------


def gguf_prompts() -> tuple[dict[str, list[int]], list[int]]:
    """Prompt token ids from the HF tokenizer (the GGUF carries the same vocabulary), keyed by kind|prompt, and EOS."""
    from config import load_settings
    from generation.models import import_transformers, prepare_model

    transformers = import_transformers()
    spec = prepare_model(load_settings(env={}))
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
    ids = {
        f"{kind}|{prompt}": prompt_ids(tokenizer, RequestSpec(kind, prompt, tone, 0, 0))
        for kind, prompt, tone in PROMPT_MIX
    }
    return ids, [tokenizer.eos_token_id]


def llama_cpp_missing() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return f"llama-cpp-python not installed: {exc}"
    return None


def run_all(
    plan: Plan, only: set[str] | None, levels: Sequence[int] = CONCURRENCY, dtypes: Sequence[str] = ENGINE_DTYPES
) -> dict[str, Any]:
    from config import load_settings

    settings = load_settings(env={})
    top_p = settings.generation.top_p

    def wanted(name: str) -> bool:
        return only is None or name in only

    report: dict[str, Any] = {"rows": [], "notes": [], "children": {}}

    def child(name: str, key: str, params: dict[str, Any]) -> dict[str, Any] | None:
        try:
            result = run_child(name, params)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report["notes"].append(f"{key} failed: {str(exc).strip().splitlines()[-1][:300]}")
            print(f"  {key} FAILED: {exc}", file=sys.stderr, flush=True)
            return None
        report["children"][key] = {k: v for k, v in result.items() if k != "rows"}
        report["rows"].extend(result.get("rows", []))
        return result

    sequential = {str(k): v for k, v in plan.sequential.items()}
    if wanted("naive"):
        child("naive", "naive", {"sequential": sequential, "top_p": top_p})
    if wanted("generate_batch"):
        sizes = {str(k): list(v) for k, v in plan.generate_batch.items()}
        child("generate_batch", "generate_batch", {"generate_batch": sizes, "top_p": top_p})
    if wanted("llama_cpp"):
        missing = llama_cpp_missing()
        if missing:
            report["notes"].append(missing)
            report["llama_cpp_skipped"] = missing
        else:
            ids, eos = gguf_prompts()
            params = {
                "sequential": sequential,
                "top_p": top_p,
                "prompt_ids": ids,
                "eos": eos,
                "no_extra_buffers": LLAMA_CPP_NO_EXTRA_BUFFERS,
            }
            child("llama_cpp", "llama_cpp", params)
    if wanted("engine"):
        for dtype in dtypes:
            for concurrency in levels:
                lengths = {
                    str(length): by_level[concurrency]
                    for length, by_level in plan.engine.items()
                    if concurrency in by_level and (dtype == "float32" or length in plan.bfloat16_lengths)
                }
                if lengths:
                    params = {"dtype": dtype, "concurrency": concurrency, "lengths": lengths}
                    child("engine", f"engine-{dtype}-c{concurrency}", {**params, "max_batch": ENGINE_MAX_BATCH})
    if wanted("interactive"):
        result = child("interactive", "interactive", {"background": plan.background, "interactive": plan.interactive})
        if result is not None:
            for row in result["rows"]:
                row["system"] = "engine (interactive under drops)"
    if wanted("serve"):
        try:
            result = run_serve_scenario(plan)
            report["rows"].extend(result["rows"])
            report["children"]["serve"] = {k: v for k, v in result.items() if k != "rows"}
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report["notes"].append(f"serve failed: {str(exc).strip().splitlines()[-1][:300]}")
    return report


# -- verdicts and tables ----------------------------------------------------------------------------------------


def find_row(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def verdicts(report: dict[str, Any], default_dtype: str) -> list[dict[str, Any]]:
    """The issue's targets; the throughput ratios for the default dtype first, then for any other dtype run."""
    rows = report["rows"]
    found = []
    other_dtypes = sorted({row["dtype"] for row in rows if row["system"] == "engine"} - {default_dtype})
    for dtype, length in itertools.product([default_dtype, *other_dtypes], (64, 256)):
        engine = find_row(rows, system="engine", dtype=dtype, concurrency=32, max_new_tokens=length)
        if engine is None and dtype != default_dtype:
            continue
        peers = (
            ("llama.cpp sequential", find_row(rows, system="llama.cpp", max_new_tokens=length), 2.0),
            ("naive generate sequential", find_row(rows, system="naive", max_new_tokens=length), 5.0),
            ("generate_batch@32", find_row(rows, system="generate_batch", concurrency=32, max_new_tokens=length), 2.5),
        )
        for name, peer, target in peers:
            ratio = engine["tokens_per_s"] / peer["tokens_per_s"] if engine and peer else None
            note = report.get("llama_cpp_skipped") if peer is None and name.startswith("llama") else None
            found.append(
                {
                    "target": f"engine@32 ({dtype}{'' if dtype == default_dtype else ', not the default'}) vs "
                    f"{name}, {length} tokens",
                    "goal": f"≥ {target:g}×",
                    "value": None if ratio is None else f"{ratio:.2f}×",
                    "verdict": "n/a" if ratio is None else ("PASS" if ratio >= target else "FAIL"),
                    "note": note or ("" if ratio is not None else "a row is missing in this run"),
                }
            )
    single = find_row(rows, system="engine", dtype=default_dtype, concurrency=1, max_new_tokens=64)
    llama = find_row(rows, system="llama.cpp", max_new_tokens=64)
    peer_tok_s = llama["tokens_per_s"] if llama else LLAMA_CPP_IDLE_REFERENCE_TOK_S
    ratio = single["tokens_per_s"] / peer_tok_s if single else None
    found.append(
        {
            "target": f"batch-1 decode: engine@1 ({default_dtype}) vs llama.cpp sequential, 64 tokens",
            "goal": f"≥ {BATCH1_VS_LLAMA_CPP_TARGET:g}×",
            "value": None if ratio is None else f"{ratio:.2f}×",
            "verdict": "n/a" if ratio is None else ("PASS" if ratio >= BATCH1_VS_LLAMA_CPP_TARGET else "FAIL"),
            "note": ""
            if llama
            else f"llama.cpp not run here; against its {LLAMA_CPP_IDLE_REFERENCE_TOK_S} tok/s on an idle 2-core box",
        }
    )
    short = find_row(rows, system="engine (short prompt)", dtype=default_dtype)
    ttft = short["ttft_p50_s"] if short else None
    found.append(
        {
            "target": "TTFT p50 at batch 1 for a short chat message",
            "goal": f"≤ {SHORT_PROMPT_TTFT_TARGET_S * 1000:.0f} ms",
            "value": None if ttft is None else f"{ttft * 1000:.0f} ms",
            "verdict": "n/a" if ttft is None else ("PASS" if ttft <= SHORT_PROMPT_TTFT_TARGET_S else "FAIL"),
            "note": "" if short is None else f"{short.get('prompt_tokens')} prompt tokens",
        }
    )
    burst = find_row(rows, system="engine (interactive under drops)", arrival="all at once")
    p95 = burst["ttft_p95_s"] if burst else None
    found.append(
        {
            "target": "interactive TTFT p95, 8 arriving at once with 32 drops (default config)",
            "goal": "≤ 1.5 s",
            "value": None if p95 is None else f"{p95:.2f} s",
            "verdict": "n/a" if p95 is None else ("PASS" if p95 <= 1.5 else "FAIL"),
            "note": "",
        }
    )
    default_config = [row["peak_rss_mib"] for row in rows if row["system"] != "engine" and "engine" in row["system"]]
    default_config += [row["peak_rss_mib"] for row in rows if row["system"] == "chorus serve"]
    for dtype in [default_dtype, *other_dtypes]:
        in_process = [row["peak_rss_mib"] for row in rows if row["system"] == "engine" and row["dtype"] == dtype]
        scenarios = default_config if dtype == default_dtype else []
        peak = max(in_process + scenarios, default=None)
        if peak is None and dtype != default_dtype:
            continue
        parts = []
        if in_process:
            parts.append(f"max_batch=32 rows {max(in_process):.0f} MiB")
        if scenarios:
            parts.append(f"default config (scenarios 2 and 3) {max(scenarios):.0f} MiB")
        label = "the default" if dtype == default_dtype else "not the default"
        found.append(
            {
                "target": f"peak RSS of any Chorus engine process in {dtype} ({label}; in-process rows"
                + (", scenario 2, serve)" if dtype == default_dtype else ")"),
                "goal": "≤ 1.5 GB",
                "value": None if peak is None else f"{peak * MIB / 1e9:.2f} GB ({peak:.0f} MiB)",
                "verdict": "n/a" if peak is None else ("PASS" if peak * MIB <= RSS_LIMIT_BYTES else "FAIL"),
                "note": "; ".join(parts),
            }
        )
    return found


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f}"


def _ms1(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f}"


def _disturbed(row: dict[str, Any]) -> str:
    cores = row.get("other_busy_cores")
    return "" if cores is None or cores <= DISTURBED_CORES else " ⚠"


def render_markdown(report: dict[str, Any]) -> str:
    machine, versions = report["machine"], report["versions"]
    rows = report["rows"]
    lines = [
        f"### Generation benchmark ({report['mode']} mode)",
        "",
        f"{machine['cpu_model']}, {machine['os_cpu_count']} CPUs (torch threads {versions.get('torch_threads')}), "
        f"{machine['ram_gib']} GiB RAM; Python {machine['python']}, torch {versions['torch']}, "
        f"transformers {versions['transformers']}, llama-cpp-python {versions.get('llama_cpp_python') or 'absent'}; "
        f"commit {(machine['git_commit'] or 'unknown')[:12]}; {machine['date']}; load average (1 min) "
        f"{machine['loadavg_start'][0]:.2f} before, {report['loadavg_end'][0]:.2f} after (the machine is shared: "
        "other processes ran too, see ⚠); "
        f"whole run {report['total_wall_s'] / 60:.1f} min.",
        "",
        "| System | dtype | max_new_tokens | Concurrency | Requests | Tokens total (min–max) | Aggregate tok/s "
        "| TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) | Peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"naive": 0, "generate_batch": 1, "llama.cpp": 2, "engine": 3}
    main_rows = sorted(
        (row for row in rows if row["system"] in order),
        key=lambda r: (r["max_new_tokens"], order[r["system"]], r.get("dtype", ""), r["concurrency"]),
    )
    for row in main_rows:
        concurrency = f"{row['concurrency']}" + (" (sequential)" if row["system"] in ("naive", "llama.cpp") else "")
        if row["system"] == "generate_batch":
            concurrency = f"{row['concurrency']} (all at once)"
        lines.append(
            f"| {row['system']}{_disturbed(row)} | {row.get('dtype', '')} | {row['max_new_tokens']} | {concurrency} "
            f"| {row['requests']} | {row['tokens_total']} ({row['tokens_min']}–{row['tokens_max']}) "
            f"| {row['tokens_per_s']:.1f} | {_ms(row['ttft_p50_s'])} / {_ms(row['ttft_p95_s'])} "
            f"| {_ms1(row['itl_p50_s'])} / {_ms1(row['itl_p95_s'])} | {row['peak_rss_mib']:.0f} |"
        )
    short_rows = [row for row in rows if row["system"] == "engine (short prompt)"]
    if short_rows:
        lines += [
            "",
            f"Batch 1, a short chat message ({SHORT_PROMPT!r}, chat template included), 8 new tokens, greedy, one "
            "request at a time.",
            "",
            "| dtype | Prompt tokens | Requests | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in short_rows:
            lines.append(
                f"| {row['dtype']}{_disturbed(row)} | {row.get('prompt_tokens')} | {row['requests']} "
                f"| {_ms(row['ttft_p50_s'])} / {_ms(row['ttft_p95_s'])} | {_ms1(row['itl_p50_s'])} / "
                f"{_ms1(row['itl_p95_s'])} |"
            )
    interactive = [row for row in rows if row["system"] == "engine (interactive under drops)"]
    if interactive:
        config = report["children"].get("interactive", {}).get("config", {})
        lines += [
            "",
            f"Scenario 2 — {interactive[0]['requests']} interactive requests (64 tokens) "
            f"while 32 scheduled drops (256 tokens) run; default engine config (max_batch={config.get('max_batch')}, "
            f"interactive_reserve={config.get('interactive_reserve')}, {config.get('dtype')}).",
            "",
            "| Interactive arrivals | Drops running / queued when they arrive | Interactive TTFT p50 / p95 (ms) "
            "| Interactive ITL p50 / p95 (ms) | Drop tokens/s meanwhile |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in interactive:
            lines.append(
                f"| {row['arrival']}{_disturbed(row)} | {row['background_running']} / {row['background_queued']} "
                f"| {_ms(row['ttft_p50_s'])} / {_ms(row['ttft_p95_s'])} "
                f"| {_ms1(row['itl_p50_s'])} / {_ms1(row['itl_p95_s'])} | {row['background_tokens_per_s']:.1f} |"
            )
    served = [row for row in rows if row["system"] == "chorus serve"]
    if served:
        serve_info = report["children"].get("serve", {})
        lines += [
            "",
            f"Scenario 3 — `chorus serve` (default BatchingEngine, {serve_info.get('dtype')}, in its own process) "
            "under an httpx load generator, 64 tokens per request, streamed SSE. SLO: TTFT ≤ "
            f"{SLO_TTFT_S:g} s and mean ITL ≤ {SLO_MEAN_ITL_S:g} s; goodput = requests meeting the SLO ÷ arrival "
            "window. TTFT counts from the scheduled arrival.",
            "",
            "| Load | Requests | Aggregate tok/s | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) | Met SLO "
            "| Goodput (req/s) | Server peak RSS (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in served:
            load = row["load"] if row["load"] != "closed loop" else f"closed loop, {row['concurrency']} clients"
            goodput = "—" if row.get("goodput_rps") is None else f"{row['goodput_rps']:.2f}"
            lines.append(
                f"| {load}{_disturbed(row)} | {row['requests']} | {row['tokens_per_s']:.1f} "
                f"| {_ms(row['ttft_p50_s'])} / {_ms(row['ttft_p95_s'])} "
                f"| {_ms1(row['itl_p50_s'])} / {_ms1(row['itl_p95_s'])} | {row['slo_met']}/{row['requests']} "
                f"| {goodput} | {row['peak_rss_mib']:.0f} |"
            )
    lines += ["", "| Target | Goal | This run | Verdict |", "|---|---|---:|---|"]
    for verdict in report["verdicts"]:
        note = f" ({verdict['note']})" if verdict["note"] else ""
        lines.append(
            f"| {verdict['target']} | {verdict['goal']} | {verdict['value'] or 'n/a'} | {verdict['verdict']}{note} |"
        )
    lines += ["", *report["method_notes"]]
    if report["notes"]:
        lines += ["", "Notes: " + " ".join(report["notes"])]
    return "\n".join(lines) + "\n"


def method_notes(plan: Plan, report: dict[str, Any]) -> list[str]:
    seq = ", ".join(f"{n}×{length}" for length, n in plan.sequential.items())
    ran = set(report.get("levels") or CONCURRENCY)
    disturbed = [row for row in report["rows"] if (row.get("other_busy_cores") or 0) > DISTURBED_CORES]
    notes = [
        f"Requests: kinds slogan/tweet/story/poem (two prompts each, cycled), temperature {TEMPERATURE}, top_p "
        f"{report['top_p']}, fixed seeds, no stop strings; tokens are those actually produced (EOS ends some early). "
        f"Sequential systems ran {seq} requests (requests × max_new_tokens); the engine ran "
        + "; ".join(
            f"{length} tokens: " + ", ".join(f"{n} at c={c}" for c, n in levels.items() if c in ran)
            for length, levels in plan.engine.items()
        )
        + f" (closed loop: c clients, each sending its next request when the last finished); dtypes "
        f"{', '.join(report.get('dtypes') or ENGINE_DTYPES)}; bfloat16 "
        + (
            "at both lengths"
            if set(plan.bfloat16_lengths) >= set(plan.engine)
            else f"only at {', '.join(map(str, plan.bfloat16_lengths))} tokens"
        )
        + ". Each system (and each engine concurrency level) ran "
        "in a fresh subprocess after one unmeasured warm-up, so peak RSS (ru_maxrss) is that process's own. "
        "Naive generate and llama.cpp serve one request at a time, so they are measured at concurrency 1 only "
        "(requests back to back); the ratios compare the engine's aggregate tok/s at 32 with their sequential tok/s.",
        "Aggregate tok/s = tokens produced ÷ (last finish − first submit). TTFT = submit to first text chunk "
        "(first token for naive/generate_batch/llama.cpp); ITL = gaps between consecutive text chunks, pooled over "
        "requests. generate_batch cannot stream: its TTFT/ITL come from its per-token timestamps "
        "(record_timestamps=True) measured from each request's creation; its window excludes manager set-up, which "
        "the JSON reports as call_s; its KV cache is sized to each run (its CPU default takes 60% of free RAM and "
        "ran slower). llama.cpp runs the GGUF's Q4_1 weights, with llama-cpp-python's default reuse of a cached "
        "prompt prefix"
        + (
            " and without its extra weight buffer types (AMX/repacked layouts), because with them llama-cpp-python "
            "0.3.36 segfaults on any multi-token batch on this machine"
            if LLAMA_CPP_NO_EXTRA_BUFFERS
            else ""
        )
        + "; the other systems run its float32 (or bfloat16) dequantization. Every concurrency level "
        "of 32 requests is one wave, so its aggregate includes the tail where the longest requests decode almost "
        "alone (the kind mix ends some requests after a dozen tokens).",
    ]
    if not disturbed:
        notes.append(
            f"No measured process ran while other processes kept more than {DISTURBED_CORES} cores busy on average "
            "(from /proc/stat minus this run's own CPU time)."
        )
    else:
        notes.append(
            f"⚠ marks rows whose process ran while other processes kept more than {DISTURBED_CORES} cores busy on "
            f"average ({len(disturbed)} rows)."
        )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few requests per row, to check that everything runs")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--only", help="comma-separated parts: naive,generate_batch,llama_cpp,engine,interactive,serve")
    parser.add_argument("--concurrency", help="comma-separated engine concurrency levels (default 1,4,16,32)")
    parser.add_argument("--dtypes", help="comma-separated engine dtypes (default float32,bfloat16)")
    parser.add_argument("--render", type=Path, help="only rebuild the tables and verdicts from a saved JSON report")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        params = json.loads(sys.stdin.read() or "{}")
        print(RESULT_PREFIX + json.dumps(CHILDREN[args.child](params)), flush=True)
        return

    logging.basicConfig(level=logging.WARNING)
    if args.render:
        report = json.loads(args.render.read_text(encoding="utf-8"))
        plan = Plan(**{key: _plan_value(key, value) for key, value in report["plan"].items()})
        finish(report, plan, args.render.with_suffix(""))
        return
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    only = set(args.only.split(",")) if args.only else None
    started = time.perf_counter()
    machine = machine_info()
    print(f"load average before: {machine['loadavg_start']}", file=sys.stderr, flush=True)
    levels = [int(level) for level in args.concurrency.split(",")] if args.concurrency else CONCURRENCY
    dtypes = args.dtypes.split(",") if args.dtypes else ENGINE_DTYPES
    report = run_all(plan, only, levels, dtypes)

    import torch
    import transformers

    from config import load_settings

    settings = load_settings(env={})
    llama_version = None
    if llama_cpp_missing() is None:
        import llama_cpp

        llama_version = llama_cpp.__version__
    report.update(
        mode="quick" if args.quick else "full",
        plan=asdict(plan),
        machine=machine,
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "llama_cpp_python": llama_version,
            "torch_threads": torch.get_num_threads(),
        },
        top_p=settings.generation.top_p,
        loadavg_end=list(os.getloadavg()),
        total_wall_s=time.perf_counter() - started,
    )
    from generation.engine import native_bfloat16

    default_dtype = settings.engine.dtype
    if default_dtype == "auto":
        default_dtype = "bfloat16" if native_bfloat16(torch, "cpu") else settings.model.dtype
    report["default_dtype"] = default_dtype
    report["only"] = sorted(only) if only else None
    report["levels"], report["dtypes"] = list(levels), list(dtypes)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    finish(report, plan, args.out_dir / ("generation-quick" if args.quick else "generation-cpu-2core"))


def _plan_value(key: str, value: Any) -> Any:
    """Undo JSON's changes to a Plan field: int keys became strings and tuples became lists."""
    if key == "engine":
        return {int(length): {int(c): n for c, n in levels.items()} for length, levels in value.items()}
    if key == "sequential":
        return {int(length): n for length, n in value.items()}
    if key == "generate_batch":
        return {int(length): tuple(sizes) for length, sizes in value.items()}
    return tuple(value) if isinstance(value, list) else value


def finish(report: dict[str, Any], plan: Plan, stem: Path) -> None:
    """Verdicts, notes and tables from the measured rows; prints the Markdown and writes STEM.json and STEM.md."""
    report["verdicts"] = verdicts(report, report.get("default_dtype", "float32"))
    report["method_notes"] = method_notes(plan, report)
    markdown = render_markdown(report)
    print(markdown)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
