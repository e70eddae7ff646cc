"""What engine.quantize = "int8" costs in wording and buys in speed, on the embedded SmolLM2 in this checkout.

For each setting it loads a BatchingEngine and measures, teacher-forced on the float32 engine's own greedy text (10
prompts x 32 tokens), how often its top-1 next token is float32's, and the CPU time of one batch-1 decode step on one
torch thread (best of 3 x 20 steps; CPU time rather than wall time, so other work on a shared machine inflates it
less). Settings: float32 (the reference), bfloat16 (the default where the CPU runs it natively), and int8 as it is
built now. Prints a table, writes JSON and Markdown to bench/results/quantize-<label>.{json,md}.

Run:  .venv/bin/python bench/quantize.py [--label cpu-2core] [--settings float32:none,bfloat16:none,float32:int8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR), str(BENCH_DIR)]

from local_generator import machine_info, write_results  # noqa: E402

PROMPTS = (
    "Write a slogan for a coffee shop.",
    "Write a short story about a dragon.",
    "List three colors.",
    "Write a haiku about rain.",
    "Describe the sea.",
    "Give me a tweet about our new bike lanes.",
    "Name five ideas for a library event for teens.",
    "Write ad copy for running shoes.",
    "Write a poem about autumn in the city.",
    "Explain why the sky is blue in two sentences.",
)
TOKENS = 32


def greedy(engine: Any, prompt: str, forced: list[int] | None = None) -> list[int]:
    """Top-1 token at each of TOKENS positions after the prompt; with `forced`, those tokens are fed back."""
    from generation.types import ChatMessage, GenerationRequest

    ids = engine._encode(GenerationRequest(messages=(ChatMessage("user", prompt),)))[0].tolist()
    return engine._runner.top1(ids, TOKENS, forced)


def step_cpu_ms(engine: Any) -> float:
    import torch

    runner = engine._runner
    best = []
    with torch.inference_mode():
        runner.release()
        prompt = list(range(100, 130))
        logits = runner.forward([], [(0, 0, prompt, True)])
        token, position = int(logits[-1].argmax()), len(prompt)
        for _ in range(3):
            started = time.process_time()
            for _ in range(20):
                logits = runner.forward([(0, token, position)], [])
                token, position = int(logits[0].argmax()), position + 1
            best.append((time.process_time() - started) / 20 * 1000)
    runner.release()
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="cpu-2core")
    parser.add_argument("--settings", default="float32:none,bfloat16:none,float32:int8")
    args = parser.parse_args()

    import torch

    from config import load_settings
    from generation.engine import BatchingEngine, native_bfloat16
    from generation.models import prepare_model

    torch.set_num_threads(1)
    spec = prepare_model(load_settings(env={}))
    reference: dict[str, list[int]] = {}
    rows = []
    for setting in ["float32:none", *(s for s in args.settings.split(",") if s != "float32:none")]:
        dtype, quantize = setting.split(":")
        engine = BatchingEngine(spec, dtype=dtype, max_batch=1, max_queue=1, quantize=quantize)
        started = time.perf_counter()
        error = engine._ready()
        if error is not None:
            raise SystemExit(str(error))
        load_s = time.perf_counter() - started
        same = total = 0
        for prompt in PROMPTS:
            if not reference.get(prompt):
                reference[prompt] = greedy(engine, prompt)
            picked = greedy(engine, prompt, forced=reference[prompt])
            same += sum(a == b for a, b in zip(picked, reference[prompt], strict=True))
            total += TOKENS
        runner = engine._runner
        rows.append(
            {
                "dtype": dtype,
                "quantize": quantize,
                "packed_bfloat16": bool(runner.packed),
                "int8": bool(runner.quantized),
                "top1_agreement": same / total,
                "positions": total,
                "step_cpu_ms": step_cpu_ms(engine),
                "load_s": load_s,
                "load_average": os.getloadavg()[0],
            }
        )
        engine._runner = None
        del engine
        print(rows[-1], flush=True)

    info = machine_info()
    native = native_bfloat16(torch, "cpu")
    table = [
        f"### engine.quantize: wording and speed (bench/quantize.py, {args.label})",
        "",
        f"{info.get('cpu_model', '?')}, native bfloat16: {'yes' if native else 'no'}; torch {torch.__version__}, one "
        f"torch thread; teacher-forced on float32's greedy text, {len(PROMPTS)} prompts × {TOKENS} tokens.",
        "",
        "| dtype | quantize | top-1 agrees with float32 | step CPU ms | × float32 | load (s) | load avg |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base = rows[0]["step_cpu_ms"]
    for row in rows:
        table.append(
            f"| {row['dtype']}{' (packed)' if row['packed_bfloat16'] else ''} | {row['quantize']} | "
            f"{row['top1_agreement']:.1%} | {row['step_cpu_ms']:.1f} | {base / row['step_cpu_ms']:.2f}× | "
            f"{row['load_s']:.1f} | {row['load_average']:.1f} |"
        )
    text = "\n".join(table) + "\n"
    print(text)
    write_results(REPO_ROOT / "bench" / "results", f"quantize-{args.label}", text, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
