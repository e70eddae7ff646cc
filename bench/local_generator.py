"""Benchmark of the walking skeleton's embedded model path (SmolLM2-135M via LocalGenerator) on this machine.

Measures, in a throwaway CHORUS_HOME that is deleted afterwards:

1. first start: converting the embedded GGUF to safetensors (prepare_model), in a fresh process;
2. later start: a fresh process that imports Chorus, runs prepare_model on the converted home, imports torch and
   transformers, and loads the model (LocalGenerator.warmup); median of several runs;
3. generation: one request at a time through LocalGenerator.stream, the way the skeleton serves, over a fixed mix of
   content kinds at two lengths, reporting TTFT, inter-chunk latency, decode tokens/s and peak RSS.

A measurement during which other processes kept the CPUs busy (read from /proc/stat) is repeated after a pause and
the quietest run is kept (--retries), because a 2-core machine shared with a test run gives meaningless timings.

Run:  .venv/bin/python bench/local_generator.py [--quick] [--out bench/results/NAME.json] [--md bench/results/NAME.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# `python bench/local_generator.py` puts bench/ first on sys.path, where a sibling script such as bench/generation.py
# would shadow the Chorus package of the same name; the repository root goes in front of it.
sys.path.insert(0, str(REPO_ROOT))

# (kind, prompt, tone): two prompts for each of four kinds, so 8 requests per length cover the mix once.
PROMPT_MIX: tuple[tuple[str, str, str], ...] = (
    ("slogan", "a neighbourhood bakery that opens at 5 am", "playful"),
    ("tweet", "the first warm day of spring in the city", "witty"),
    ("story", "a lighthouse keeper who finds a message in a bottle", "dramatic"),
    ("poem", "rain on a tin roof", "warm"),
    ("slogan", "a solar-powered bike lamp", "bold"),
    ("tweet", "our open-source project reaching 1,000 stars", "neutral"),
    ("story", "a robot learning to bake bread", "playful"),
    ("poem", "the last train home", "minimal"),
)
LENGTHS = (64, 256)
TEMPERATURE = 0.8
CHILD_RESULT_PREFIX = "BENCH_RESULT "
DISTURBED_CORES = 0.25
DEFAULT_RETRIES = 3
# Pause before retry n is n times this, so a burst of other work (a test run) can pass.
RETRY_PAUSE_S = 5.0


@dataclass
class RequestResult:
    """What one streamed request measured; times in seconds."""

    kind: str
    max_new_tokens: int
    seed: int
    tokens: int
    finish_reason: str | None
    ttft_s: float
    total_s: float
    decode_tokens_per_s: float | None
    gaps_s: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    # Cores other processes kept busy meanwhile; above DISTURBED_CORES the timings are suspect.
    other_busy_cores: float | None = None
    # Runs of this request, counting the kept one; disturbed runs are repeated (see --retries).
    attempts: int = 1


def disturbed(other_busy_cores: float | None) -> bool:
    return (other_busy_cores or 0.0) > DISTURBED_CORES


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def peak_rss_mb() -> float:
    """This process's peak resident set so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(*, children: bool = False) -> float:
    times = os.times()
    if children:
        return times.children_user + times.children_system
    return times.user + times.system


class OtherLoad:
    """Measures how many cores processes other than this one (or its children) kept busy over an interval."""

    def __init__(self, *, children: bool = False) -> None:
        self._children = children
        self._busy = busy_cpu_seconds()
        self._own = own_cpu_seconds(children=children)
        self._wall = time.perf_counter()

    def cores(self) -> float | None:
        busy, wall = busy_cpu_seconds(), time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        own = own_cpu_seconds(children=self._children) - self._own
        return max(0.0, (busy - self._busy) - own) / wall


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_model": cpu_model,
        "os_cpu_count": os.cpu_count(),
        "ram_gib": ram_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "loadavg_start": list(os.getloadavg()),
    }


def write_results(out_dir: Path, name: str, table: str, result: dict[str, Any]) -> None:
    """Write a bench's JSON and the Markdown table it printed to out_dir/<name>.json and .md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(table)


# -- child processes: each start is measured in a fresh interpreter so imports count ---------------------------------


def child_first_start(home: str) -> dict[str, Any]:
    """Time the imports, then prepare_model converting the embedded GGUF into an empty home."""
    started = time.perf_counter()
    from config import load_settings
    from generation.models import import_transformers, prepare_model

    chorus_import_s = time.perf_counter() - started
    settings = load_settings(env={"CHORUS_HOME": home})
    mark = time.perf_counter()
    import_transformers()
    torch_import_s = time.perf_counter() - mark
    mark = time.perf_counter()
    prepare_model(settings)
    prepare_s = time.perf_counter() - mark
    return {
        "chorus_import_s": chorus_import_s,
        "torch_transformers_import_s": torch_import_s,
        "prepare_model_s": prepare_s,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_later_start(home: str) -> dict[str, Any]:
    """Time prepare_model on a converted home, the torch+transformers import, and the model load (warmup)."""
    started = time.perf_counter()
    from config import load_settings
    from generation.local import LocalGenerator
    from generation.models import import_transformers, prepare_model

    chorus_import_s = time.perf_counter() - started
    settings = load_settings(env={"CHORUS_HOME": home})
    mark = time.perf_counter()
    spec = prepare_model(settings)
    prepare_s = time.perf_counter() - mark
    mark = time.perf_counter()
    import_transformers()
    torch_import_s = time.perf_counter() - mark

    async def load() -> float:
        generator = LocalGenerator(spec, device=settings.model.device, dtype=settings.model.dtype)
        begin = time.perf_counter()
        await generator.warmup()
        elapsed = time.perf_counter() - begin
        await generator.close()
        return elapsed

    load_s = asyncio.run(load())
    return {
        "chorus_import_s": chorus_import_s,
        "prepare_model_s": prepare_s,
        "torch_transformers_import_s": torch_import_s,
        "model_load_s": load_s,
        "in_process_s": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child_undisturbed(mode: str, home: Path, retries: int) -> dict[str, Any]:
    """run_child, repeated while other processes disturb it (at most `retries` more times); keeps the quietest run.

    Only later starts are repeated in place: a first start needs an unconverted home, which the caller provides.
    """
    runs = [run_child(mode, home)]
    while disturbed(runs[-1]["other_busy_cores"]) and len(runs) <= retries:
        time.sleep(RETRY_PAUSE_S * len(runs))
        runs.append(run_child(mode, home))
    best = min(runs, key=lambda run: run["other_busy_cores"] or 0.0)
    best["attempts"] = len(runs)
    return best


def run_child(mode: str, home: Path) -> dict[str, Any]:
    """Run this script as `--child MODE` and return its result plus the wall time of the whole process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--home", str(home)]
    load = OtherLoad(children=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    other_cores = load.cores()
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(CHILD_RESULT_PREFIX)]
    if not lines:
        raise RuntimeError(f"child {mode} printed no result:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(lines[-1].removeprefix(CHILD_RESULT_PREFIX))
    result["process_wall_s"] = wall_s
    result["other_busy_cores"] = other_cores
    return result


# -- generation, in this process ------------------------------------------------------------------------------------


async def stream_one(generator: Any, request: Any, kind: str) -> RequestResult:
    """Stream one request and time its chunks; the final chunk (finish_reason set) carries the token count."""
    load = OtherLoad()
    started = time.perf_counter()
    first: float | None = None
    first_tokens = 0
    last_arrival: float | None = None
    gaps: list[float] = []
    final: Any = None
    final_at = started
    async for chunk in generator.stream(request):
        now = time.perf_counter()
        if chunk.finish_reason is not None:
            final, final_at = chunk, now
            if first is None and chunk.text:
                first, first_tokens = now, chunk.tokens
            break
        if not chunk.text:
            continue
        if first is None:
            first, first_tokens = now, chunk.tokens
        elif last_arrival is not None:
            gaps.append(now - last_arrival)
        last_arrival = now
    total_s = time.perf_counter() - started
    if final is None:
        raise RuntimeError(f"stream for {kind} ended without a final chunk")
    if final.finish_reason == "error":
        raise RuntimeError(f"generation failed: {final.error}")
    tokens = final.tokens
    decode_rate = None
    if first is not None and tokens > first_tokens and final_at > first:
        # Tokens after the first chunk over the time after it: decode speed without the prefill.
        decode_rate = (tokens - first_tokens) / (final_at - first)
    return RequestResult(
        kind=kind,
        max_new_tokens=request.max_new_tokens,
        seed=request.seed,
        tokens=tokens,
        finish_reason=final.finish_reason,
        ttft_s=(first - started) if first is not None else float("nan"),
        total_s=total_s,
        decode_tokens_per_s=decode_rate,
        gaps_s=gaps,
        peak_rss_mb=peak_rss_mb(),
        other_busy_cores=load.cores(),
    )


def build_request(settings: Any, kind: str, prompt: str, tone: str, max_new_tokens: int, seed: int) -> Any:
    from generation.prompts import build_messages, render_template
    from generation.types import GenerationRequest

    spec = settings.kinds[kind]
    messages = build_messages(spec, render_template(spec, prompt, tone))
    # The kind's own length and stop strings are ignored so that every request aims at the same length.
    return GenerationRequest(
        messages=messages,
        max_new_tokens=max_new_tokens,
        temperature=TEMPERATURE,
        top_p=settings.generation.top_p,
        stop=(),
        seed=seed,
        time_budget_s=600.0,
    )


async def stream_undisturbed(generator: Any, request: Any, kind: str, retries: int) -> RequestResult:
    """stream_one, repeated with the same request and seed while other processes disturb it; keeps the quietest."""
    runs = [await stream_one(generator, request, kind)]
    while disturbed(runs[-1].other_busy_cores) and len(runs) <= retries:
        await asyncio.sleep(RETRY_PAUSE_S * len(runs))
        runs.append(await stream_one(generator, request, kind))
    best = min(runs, key=lambda run: run.other_busy_cores or 0.0)
    best.attempts = len(runs)
    return best


async def run_generation(home: Path, per_length: int, retries: int) -> dict[str, Any]:
    from config import load_settings
    from generation.local import LocalGenerator
    from generation.models import prepare_model

    settings = load_settings(env={"CHORUS_HOME": str(home)})
    spec = prepare_model(settings)
    generator = LocalGenerator(spec, device=settings.model.device, dtype=settings.model.dtype)
    try:
        rss_before_load = peak_rss_mb()
        await generator.warmup()
        rss_after_load = peak_rss_mb()
        # The first request after a load pays one-off torch costs; it is measured but kept out of the statistics.
        kind, prompt, tone = PROMPT_MIX[0]
        warm = await stream_one(generator, build_request(settings, kind, prompt, tone, 16, 999), kind)
        groups: dict[str, Any] = {}
        load, wall_start = OtherLoad(), time.perf_counter()
        for length in LENGTHS:
            results = []
            for index in range(per_length):
                kind, prompt, tone = PROMPT_MIX[index % len(PROMPT_MIX)]
                request = build_request(settings, kind, prompt, tone, length, seed=1000 + index)
                results.append(await stream_undisturbed(generator, request, kind, retries))
            groups[str(length)] = {"summary": summarise(results), "requests": [asdict(r) for r in results]}
        other_cores, wall_s = load.cores(), time.perf_counter() - wall_start
    finally:
        await generator.close()
    import torch

    return {
        "dtype": settings.model.dtype,
        "device": settings.model.device,
        "temperature": TEMPERATURE,
        "top_p": settings.generation.top_p,
        "torch_num_threads": torch.get_num_threads(),
        "peak_rss_before_load_mb": rss_before_load,
        "peak_rss_after_load_mb": rss_after_load,
        "first_request_after_load": asdict(warm),
        "measured_wall_s": wall_s,
        "other_processes_busy_cores": other_cores,
        "by_max_new_tokens": groups,
    }


def summarise(results: Sequence[RequestResult]) -> dict[str, Any]:
    ttft = [r.ttft_s for r in results]
    rates = [r.decode_tokens_per_s for r in results if r.decode_tokens_per_s is not None]
    gaps = [gap for r in results for gap in r.gaps_s]
    tokens = [r.tokens for r in results]
    reasons: dict[str, int] = {}
    for r in results:
        reasons[str(r.finish_reason)] = reasons.get(str(r.finish_reason), 0) + 1
    return {
        "requests": len(results),
        "tokens_p50": percentile(tokens, 50),
        "tokens_min": min(tokens),
        "tokens_max": max(tokens),
        "tokens_total": sum(tokens),
        "finish_reasons": reasons,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p95_s": percentile(ttft, 95),
        "itl_p50_s": percentile(gaps, 50),
        "itl_p95_s": percentile(gaps, 95),
        "decode_tokens_per_s_p50": percentile(rates, 50),
        "decode_tokens_per_s_p5": percentile(rates, 5),
        "decode_tokens_per_s_p95": percentile(rates, 95),
        "request_total_p50_s": percentile([r.total_s for r in results], 50),
        "peak_rss_mb": max(r.peak_rss_mb for r in results),
        "disturbed_requests": sum(1 for r in results if disturbed(r.other_busy_cores)),
        "repeated_requests": sum(1 for r in results if r.attempts > 1),
    }


# -- report ---------------------------------------------------------------------------------------------------------


def render_markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    first = report["first_start"]
    later = report["later_start"]["median"]
    gen = report["generation"]
    lines = [
        f"### LocalGenerator benchmark ({report['mode']} mode)",
        "",
        f"{machine['cpu_model']}, {machine['os_cpu_count']} CPUs (torch threads {gen['torch_num_threads']}), "
        f"{machine['ram_gib']} GiB RAM; Python {machine['python']}, torch {report['versions']['torch']}, "
        f"transformers {report['versions']['transformers']}; {gen['dtype']} on {gen['device']}; "
        f"commit {(machine['git_commit'] or 'unknown')[:12]}; {machine['date']}",
        "",
        "| Start-up | Seconds |",
        "|---|---:|",
        f"| First start: convert embedded GGUF (prepare_model, 1 run) | {first['prepare_model_s']:.1f} |",
        f"| First start: whole process (imports + conversion) | {first['process_wall_s']:.1f} |",
        f"| Later start: torch + transformers import (median of {report['later_start']['runs']}) "
        f"| {later['torch_transformers_import_s']:.2f} |",
        f"| Later start: prepare_model on converted home | {later['prepare_model_s']:.3f} |",
        f"| Later start: model load (LocalGenerator.warmup) | {later['model_load_s']:.2f} |",
        f"| Later start: whole process (spawn to exit, incl. load) | {later['process_wall_s']:.2f} |",
        "",
        "| max_new_tokens | Requests | Tokens p50 (min–max) | Ended by | TTFT p50 / p95 (ms) "
        "| Inter-chunk p50 / p95 (ms) | Decode tok/s p50 (p5–p95) | Peak RSS (MB) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for length, group in gen["by_max_new_tokens"].items():
        s = group["summary"]
        lines.append(
            f"| {length} | {s['requests']} | {s['tokens_p50']:.0f} ({s['tokens_min']}–{s['tokens_max']}) "
            f"| {', '.join(f'{reason} {count}' for reason, count in sorted(s['finish_reasons'].items()))} "
            f"| {s['ttft_p50_s'] * 1000:.0f} / {s['ttft_p95_s'] * 1000:.0f} "
            f"| {s['itl_p50_s'] * 1000:.1f} / {s['itl_p95_s'] * 1000:.1f} "
            f"| {s['decode_tokens_per_s_p50']:.1f} ({s['decode_tokens_per_s_p5']:.1f}–"
            f"{s['decode_tokens_per_s_p95']:.1f}) | {s['peak_rss_mb']:.0f} |"
        )
    warm = gen["first_request_after_load"]
    lines += [
        "",
        f"Kinds slogan/tweet/story/poem, temperature {gen['temperature']}, top_p {gen['top_p']}, fixed seeds, no stop "
        "strings (EOS still ends a request early). Inter-chunk latency is pooled over all requests; chunks ≈ tokens. "
        f"First request after load (excluded): TTFT {warm['ttft_s'] * 1000:.0f} ms. "
        f"Peak RSS after load {gen['peak_rss_after_load_mb']:.0f} MB; conversion process peak "
        f"{first['peak_rss_mb']:.0f} MB. Load average start/end: "
        f"{machine['loadavg_start'][0]:.2f} / {report['loadavg_end'][0]:.2f}.",
    ]
    if gen["other_processes_busy_cores"] is not None:
        groups = gen["by_max_new_tokens"].values()
        bad_requests = sum(group["summary"]["disturbed_requests"] for group in groups)
        repeated = sum(group["summary"]["repeated_requests"] for group in groups)
        total = sum(group["summary"]["requests"] for group in groups)
        starts = [first, *report["later_start"]["each"]]
        bad_starts = sum(1 for run in starts if disturbed(run["other_busy_cores"]))
        repeated_starts = sum(1 for run in starts if run["attempts"] > 1)
        lines[-1] += (
            f" Other processes kept {gen['other_processes_busy_cores']:.2f} cores busy on average during the "
            f"{gen['measured_wall_s']:.0f} s of generation. A measurement during which they used more than "
            f"{DISTURBED_CORES} cores is repeated after a pause (up to {report['retries']} times, the quietest run "
            "kept): "
            f"{repeated} of {total} requests and {repeated_starts} of {len(starts)} start-ups were repeated; "
            f"{bad_requests} requests and {bad_starts} start-ups stayed disturbed."
        )
    return "\n".join(lines) + "\n"


def median_of(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The median of each numeric measure separately, over several runs."""
    numeric = [key for key in runs[0] if all(isinstance(run[key], int | float) for run in runs)]
    return {key: statistics.median(run[key] for run in runs) for key in numeric}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 requests per length (one per kind), 1 later start")
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"repeat a measurement disturbed by other processes up to this many times (default {DEFAULT_RETRIES})",
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--md", type=Path, help="write the Markdown table here")
    parser.add_argument("--child", choices=["first-start", "later-start"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child = child_first_start if args.child == "first-start" else child_later_start
        print(CHILD_RESULT_PREFIX + json.dumps(child(args.home)), flush=True)
        return

    logging.basicConfig(level=logging.WARNING)
    # A plain SIGTERM would skip the finally below and leave the throwaway home behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    per_length = 4 if args.quick else 8
    later_runs = 1 if args.quick else 3
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "default",
        "retries": args.retries,
        "disturbed_cores_threshold": DISTURBED_CORES,
        "machine": machine_info(),
    }
    scratch = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
    try:
        # Each first-start attempt converts into its own empty home; the kept one serves everything after it.
        conversions: list[tuple[dict[str, Any], Path]] = []
        while not conversions or (
            disturbed(conversions[-1][0]["other_busy_cores"]) and len(conversions) <= args.retries
        ):
            if conversions:
                time.sleep(RETRY_PAUSE_S * len(conversions))
            print("first start: converting the embedded GGUF...", file=sys.stderr, flush=True)
            attempt_home = scratch / f"home-{len(conversions)}"
            conversions.append((run_child("first-start", attempt_home), attempt_home))
        first, home = min(conversions, key=lambda pair: pair[0]["other_busy_cores"] or 0.0)
        first["attempts"] = len(conversions)
        report["first_start"] = first
        runs = []
        for number in range(later_runs):
            print(f"later start {number + 1}/{later_runs}...", file=sys.stderr, flush=True)
            runs.append(run_child_undisturbed("later-start", home, args.retries))
        report["later_start"] = {"runs": later_runs, "median": median_of(runs), "each": runs}
        print(f"generation: {per_length} requests x {LENGTHS} tokens...", file=sys.stderr, flush=True)
        report["generation"] = asyncio.run(run_generation(home, per_length, args.retries))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    import torch
    import transformers

    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    report["loadavg_end"] = list(os.getloadavg())
    markdown = render_markdown(report)
    print(markdown)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown, encoding="utf-8")


if __name__ == "__main__":
    main()
