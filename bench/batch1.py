"""Batch-1 latency and batched throughput of the BatchingEngine in this checkout, in a few minutes: a quick A/B probe.

Measures, on the embedded SmolLM2 with engine.dtype "auto": TTFT p50 of a short chat message (8 new tokens,
greedy), batch-1 decode tokens/s (one long request, greedy), the aggregate tokens/s of 32 requests at once, and peak
RSS. Run it in two checkouts back to back (before/after a change) on the same machine and compare; the load
average before and after is in the output, because on a shared machine it decides most of the figure.

Run:  .venv/bin/python bench/batch1.py [--quantize none|int8] [--threads N] [--decode-tokens 64] [--batch-tokens 32]
      [--out x.json]
bench/generation.py is the full benchmark with its peers (naive generate, generate_batch, llama.cpp).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR)]

SHORT_PROMPT = "Write a slogan for a coffee shop."
LONG_PROMPT = "Write a very long story about a dragon."


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from config import load_settings
    from generation.engine import BatchingEngine
    from generation.models import prepare_model
    from generation.types import ChatMessage, GenerationRequest

    spec = prepare_model(load_settings(env={}))
    engine = BatchingEngine(
        spec, dtype="auto", max_batch=32, max_queue=64, quantize=args.quantize, threads=args.threads
    )

    def ask(text: str, tokens: int, seed: int) -> GenerationRequest:
        message = (ChatMessage("user", text),)
        return GenerationRequest(messages=message, max_new_tokens=tokens, temperature=0.0, seed=seed, time_budget_s=1e4)

    async def one(request: GenerationRequest) -> tuple[float, list[float], int, float, int | None]:
        submitted, stamps, tokens, prompt = time.perf_counter(), [], 0, None
        async for chunk in engine.stream(request):
            if chunk.text:
                stamps.append(time.perf_counter())
            tokens, prompt = chunk.tokens, chunk.prompt_tokens if chunk.prompt_tokens is not None else prompt
        return submitted, stamps, tokens, time.perf_counter(), prompt

    load_before = os.getloadavg()[0]
    try:
        await engine.warmup()
        await one(ask("Hello", 4, 0))
        ttfts, prompt_tokens = [], None
        for seed in range(args.ttft_requests):
            submitted, stamps, _, _, prompt_tokens = await one(ask(SHORT_PROMPT, 8, seed))
            ttfts.append(stamps[0] - submitted)
        _, stamps, _, _, _ = await one(ask(LONG_PROMPT, args.decode_tokens, 0))
        decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        started = time.perf_counter()
        batch = [one(ask(f"Write a poem about the number {i}.", args.batch_tokens, i)) for i in range(32)]
        results = await asyncio.gather(*batch)
        aggregate = sum(r[2] for r in results) / (max(r[3] for r in results) - started)
    finally:
        await engine.close()
    return {
        "checkout": str(REPO_ROOT),
        "quantize": args.quantize,
        "threads": engine._cpu_threads,
        "short_prompt_tokens": prompt_tokens,
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "decode_c1_tok_s": decode,
        "aggregate_c32_tok_s": aggregate,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantize", choices=("none", "int8"), default="none", help="the engine's Linear weights")
    parser.add_argument("--threads", type=int, default=0, help="the engine's CPU threads (0: one per core)")
    parser.add_argument("--ttft-requests", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
