"""The batching engine at another git revision against this checkout's, in one process, measured interleaved.

Runs on a shared machine drift by more than most engine changes gain (docs/benchmarks.md), so both runners are
loaded side by side (generation/engine.py of REV is imported under another module name) and timed in alternating
rounds on the embedded SmolLM2: the wall time of a batch-1 decode step after a 60-token prompt, and of a 32-row
decode step, each on the thread count given. The minimum over rounds is the figure least touched by other work;
the median is printed too. With --agree, each runner's teacher-forced top-1 agreement with the float32 engine's
greedy text (bench/quantize.py's prompts, --tokens each) is measured first.

Run:  .venv/bin/python bench/engine_ab.py --base e7aac62 [--setting float32:int8] [--threads 1] [--rounds 8]
      [--agree --tokens 96] [--label cpu-2core]
Prints a table and writes bench/results/engine-ab-<label>.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR), str(BENCH_DIR)]

import quantize  # noqa: E402
from local_generator import machine_info, write_results  # noqa: E402


def engine_module(revision: str, directory: Path) -> Any:
    """generation/engine.py as it was at `revision`, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "show", f"{revision}:generation/engine.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = directory / "engine_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("engine_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine_base"] = module
    spec.loader.exec_module(module)
    return module


def batch1_step_ms(runner: Any, torch: Any, steps: int = 10) -> float:
    with torch.inference_mode():
        runner.release()
        logits = runner.forward([], [(0, 0, list(range(100, 160)), True)])
        token, position = int(logits[-1].argmax()), 60
        started = time.perf_counter()
        for _ in range(steps):
            logits = runner.forward([(0, token, position)], [])
            token, position = int(logits[0].argmax()), position + 1
        return (time.perf_counter() - started) / steps * 1000


def rows32_step_ms(runner: Any, torch: Any, steps: int = 3) -> float:
    with torch.inference_mode():
        runner.release()
        for slot in range(32):
            runner.forward([], [(slot, 0, list(range(100 + slot, 130 + slot)), True)])
        started = time.perf_counter()
        for step in range(steps):
            runner.forward([(slot, 200 + slot, 30 + step) for slot in range(32)], [])
        return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--setting", default="float32:int8", help="dtype:quantize, as in bench/quantize.py")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--agree", action="store_true", help="measure teacher-forced agreement with float32 first")
    parser.add_argument("--tokens", type=int, default=96, help="positions per prompt for --agree")
    parser.add_argument("--label", default="cpu-2core")
    args = parser.parse_args()

    import torch

    from config import load_settings
    from generation import engine as current
    from generation.models import prepare_model

    torch.set_num_threads(args.threads)
    model = prepare_model(load_settings(env={}))
    dtype, quantize_setting = args.setting.split(":")
    quantize.TOKENS = args.tokens
    with tempfile.TemporaryDirectory() as directory:
        modules = {f"base ({args.base})": engine_module(args.base, Path(directory)), "this checkout": current}
        reference: dict[str, list[int]] = {}
        if args.agree:
            float32 = current.BatchingEngine(model, dtype="float32", max_batch=1, max_queue=1)
            if (error := float32._ready()) is not None:
                raise SystemExit(str(error))
            reference = {prompt: quantize.greedy(float32, prompt) for prompt in quantize.PROMPTS}
            float32._runner = None
        engines: dict[str, Any] = {}
        rows: dict[str, dict[str, Any]] = {}
        for name, module in modules.items():
            engine = module.BatchingEngine(model, dtype=dtype, max_batch=32, max_queue=1, quantize=quantize_setting)
            if (error := engine._ready()) is not None:
                raise SystemExit(str(error))
            engines[name] = engine
            rows[name] = {"system": name, "batch1_ms": [], "rows32_ms": []}
            if reference:
                same = total = 0
                for prompt in quantize.PROMPTS:
                    picked = quantize.greedy(engine, prompt, forced=reference[prompt])
                    same += sum(a == b for a, b in zip(picked, reference[prompt], strict=True))
                    total += len(picked)
                rows[name]["agreement"], rows[name]["positions"] = same / total, total
                torch.set_num_threads(args.threads)
        for _ in range(args.rounds):
            for name, engine in engines.items():
                rows[name]["batch1_ms"].append(batch1_step_ms(engine._runner, torch))
                rows[name]["rows32_ms"].append(rows32_step_ms(engine._runner, torch))

    info = machine_info()
    lines = [
        f"### Engine A/B, {args.setting}, {args.threads} thread(s) (bench/engine_ab.py, {args.label})",
        "",
        f"{info.get('cpu_model', '?')}; torch {torch.__version__}; {args.rounds} alternating rounds; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| Engine | Batch-1 step min / median (ms) | 32-row step min / median (ms) | Agreement with float32 |",
        "|---|---:|---:|---:|",
    ]
    for row in rows.values():
        agreement = f"{row['agreement']:.1%} of {row['positions']}" if "agreement" in row else "—"
        lines.append(
            f"| {row['system']} | {min(row['batch1_ms']):.2f} / {statistics.median(row['batch1_ms']):.2f} | "
            f"{min(row['rows32_ms']):.1f} / {statistics.median(row['rows32_ms']):.1f} | {agreement} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(
        REPO_ROOT / "bench" / "results",
        f"engine-ab-{args.label}",
        text,
        {"machine": info, "setting": args.setting, "threads": args.threads, "rows": list(rows.values())},
    )


if __name__ == "__main__":
    main()
