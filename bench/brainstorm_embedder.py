"""A/B of the sentence embedder behind brainstorm themes: all-MiniLM-L6-v2 against another sentence-transformers
model directory (e.g. all-mpnet-base-v2), everything else as a session does it (bots.brainstorm.themes.organize,
k chosen automatically).

For each labelled set of bench/data/brainstorm_ideas.json and each embedder it reports the adjusted Rand index on
the whole set (with the number of themes found) and the mean over the random 60-idea rounds of bench/brainstorm.py,
with ideas read after their topic (`embed_in_context`, as sessions do) and embedded alone (as a remote embedder
does), and with --read also beside the chat model's reading of each idea (bots.brainstorm.reading; --read-only:
only that). Names do not
change the themes, so a stand-in generator names them. Also: seconds to embed 60 ideas (alternating A/B in one
process) and each embedder's peak RSS in a process of its own.

Run:  .venv/bin/python bench/brainstorm_embedder.py --embedder-dir DIR [--read] [--md bench/results/NAME.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from brainstorm import ARI_TARGETS, DATA, RESULTS, ROUND_IDEAS, ROUND_SEEDS, theme_numbers  # noqa: E402
from local_generator import machine_info  # noqa: E402

TIMING_REPEATS = 5


class Cached:
    """Each text's vector (alone, or read after a context) computed once: the random rounds re-sort the same ideas,
    and this VM's two cores are shared. Vectors are the embedder's own; only repeats are skipped."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._vectors: dict[tuple[str, str], list[float]] = {}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._lookup("", list(texts), lambda todo: self._inner.embed(todo))

    async def embed_in_context(self, context: str, texts: list[str]) -> list[list[float]]:
        return await self._lookup(context, list(texts), lambda todo: self._inner.embed_in_context(context, todo))

    async def _lookup(self, context: str, texts: list[str], compute: Any) -> list[list[float]]:
        todo = list(dict.fromkeys(t for t in texts if (context, t) not in self._vectors))
        if todo:
            for text, vector in zip(todo, await compute(todo), strict=True):
                self._vectors[(context, text)] = vector
        return [self._vectors[(context, t)] for t in texts]


class IdeasAlone:
    """The embedder without `embed_in_context`: organize() then places each idea by its own vector."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._inner.embed(texts)  # type: ignore[no-any-return]


def sixty_ideas(data: dict[str, Any]) -> tuple[str, list[str]]:
    labelled = data["sets"][-1]
    return labelled["topic"], [text for _, text in random.Random(0).sample(labelled["ideas"], ROUND_IDEAS)]


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the process that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe(directory: str) -> None:
    """In a process of its own: load the embedder, embed 60 ideas alone and in context, print peak RSS (MiB)."""
    from generation.embeddings import MiniLMEmbedder

    topic, ideas = sixty_ideas(json.loads(DATA.read_text()))
    before = peak_rss_mib()
    embedder = MiniLMEmbedder(model_dir=Path(directory) if directory else None)
    asyncio.run(embedder.embed(ideas))
    asyncio.run(embedder.embed_in_context(topic, ideas))
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "before_load_mib": before}))


async def embed_times(embedders: dict[str, Any], data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Median seconds to embed 60 ideas alone and in context, the embedders alternating (this VM is shared)."""
    topic, ideas = sixty_ideas(data)
    samples: dict[str, dict[str, list[float]]] = {name: {"alone": [], "in_context": []} for name in embedders}
    for _ in range(TIMING_REPEATS):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            await embedder.embed(ideas)
            samples[name]["alone"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await embedder.embed_in_context(topic, ideas)
            samples[name]["in_context"].append(time.perf_counter() - started)
    return {name: {k: statistics.median(v) for k, v in kinds.items()} for name, kinds in samples.items()}


async def score(
    labelled: dict[str, Any], embedder: Any, reader: Any, organize: Any, ari: Any, rounds: int
) -> dict[str, Any]:
    from config import load_settings
    from generation.fake import FakeGenerator
    from generation.moderation import Blocklist

    section = load_settings().brainstorm
    options = {
        "embedder": embedder,
        "generator": FakeGenerator(),
        "blocklist": Blocklist(()),
        "merge_threshold": section.merge_threshold,
        "max_themes": section.max_themes,
        "embed_chars": section.embed_chars,
        "reader": reader,
    }
    ideas = [(i, text) for i, (_, text) in enumerate(labelled["ideas"])]
    organized = await organize(ideas, topic=labelled["topic"], **options)
    whole = ari([theme for theme, _ in labelled["ideas"]], theme_numbers(organized, len(ideas)))
    scores, found = [], []
    for seed in list(ROUND_SEEDS)[:rounds]:
        picked = random.Random(seed).sample(labelled["ideas"], ROUND_IDEAS)
        round_ideas = [(i, text) for i, (_, text) in enumerate(picked)]
        result = await organize(round_ideas, topic=labelled["topic"], **options)
        scores.append(ari([theme for theme, _ in picked], theme_numbers(result, len(round_ideas))))
        found.append(len(result.themes))
    return {
        "ari": whole,
        "found": len(organized.themes),
        "separated": organized.separated,
        "rounds_ari": sum(scores) / len(scores) if scores else float("nan"),
        "rounds_found": sum(found) / len(found) if found else float("nan"),
        "round_scores": scores,
    }


async def separation(labelled: dict[str, Any], embedder: Any, ari: Any) -> dict[str, float]:
    """How well the vectors alone separate the true themes, whatever picks k: the share of each idea's five nearest
    neighbours from its own theme, and spectral clustering told the true k (the topic taken out, as organize does)."""
    import numpy as np
    from sklearn.cluster import SpectralClustering

    from bots.brainstorm.clustering import topic_free
    from bots.brainstorm.themes import _embed_ideas
    from config import load_settings

    texts = [text for _, text in labelled["ideas"]]
    truth = np.array([theme for theme, _ in labelled["ideas"]])
    _, placed, topic_vectors = await _embed_ideas(
        embedder, texts, labelled["topic"], load_settings().brainstorm.embed_chars
    )
    matrix = topic_free(placed, topic_vectors)
    matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = matrix @ matrix.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
    spectral = [
        ari(
            truth,
            SpectralClustering(
                n_clusters=len(labelled["themes"]), affinity="nearest_neighbors", n_neighbors=n, random_state=0
            ).fit_predict(matrix),
        )
        for n in (8, 10, 12, 15)
    ]
    return {
        "neighbours_same_theme": float((truth[nearest] == truth[:, None]).mean()),
        "spectral_true_k_min": min(spectral),
        "spectral_true_k_max": max(spectral),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from bots.brainstorm.reading import IdeaReader
    from bots.brainstorm.themes import organize
    from generation.embeddings import MiniLMEmbedder

    data = json.loads(DATA.read_text())
    embedders = {"MiniLM": MiniLMEmbedder(), args.name: MiniLMEmbedder(model_dir=args.embedder_dir)}
    for embedder in embedders.values():
        await embedder.warmup()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "embedder_dir": str(args.embedder_dir),
        "embed_60_s": await embed_times(embedders, data),
        "cells": [],
    }
    cached = {name: Cached(embedder) for name, embedder in embedders.items()}
    generator = None
    readers: list[tuple[str, Any]] = [] if args.read_only else [("no", None)]
    if args.read or args.read_only:
        from config import load_settings
        from generation.engine import BatchingEngine
        from generation.models import prepare_model

        settings = load_settings()
        engine = settings.engine
        generator = BatchingEngine(
            prepare_model(settings),
            device="cpu",
            dtype=engine.dtype,
            fallback_dtype=settings.model.dtype,
            max_batch=engine.max_batch,
            max_queue=256,
            max_seq_len=engine.max_seq_len,
            prefill_chunk=engine.prefill_chunk,
            interactive_reserve=engine.interactive_reserve,
        )
        await generator.warmup()
        # One reader for all cells: each (topic, idea) is read once and its state reused, as in a session.
        readers.append(("yes", IdeaReader(generator)))
    try:
        for labelled in data["sets"]:
            if args.sets and labelled["name"] not in args.sets:
                continue
            for read, reader in readers:
                for name, cache in cached.items():
                    for placement in ("in context", "alone"):
                        view = cache if placement == "in context" else IdeasAlone(cache)
                        cell = await score(labelled, view, reader, organize, adjusted_rand_score, args.rounds)
                        if reader is None:
                            cell.update(await separation(labelled, view, adjusted_rand_score))
                        cell.update(set=labelled["name"], embedder=name, placement=placement, model_reads=read)
                        report["cells"].append(cell)
                        print(
                            f"{labelled['name']:8} {name:7} {placement:10} read={read}: ARI {cell['ari']:.3f} "
                            f"k {cell['found']}, rounds {cell['rounds_ari']:.3f} (k {cell['rounds_found']:.1f}) "
                            f"load {os.getloadavg()[0]:.2f}",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        if generator is not None:
            await generator.close()
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    return report


def peak_rss(directories: dict[str, Path | None]) -> dict[str, Any]:
    """Each embedder's peak RSS, loaded and used in a fresh process (the bench process holds both, and more)."""
    peaks = {}
    for name, directory in directories.items():
        result = subprocess.run(
            [sys.executable, __file__, "--probe", str(directory or "")], capture_output=True, text=True, check=True
        )
        peaks[name] = json.loads(result.stdout.strip().splitlines()[-1])
    return peaks


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "### Brainstorm themes: MiniLM against a stronger sentence embedder",
        "",
        f"{m['cpu_model'] or 'CPU'}, {m['os_cpu_count']} CPUs; {m['date']}; load average start/end "
        f"{m['loadavg_start'][0]:.2f} / {m['loadavg_end'][0]:.2f}. Other embedder: `{report['embedder_dir']}`. "
        f"k chosen automatically; the rest of the pipeline as in sessions (bots.brainstorm.themes.organize). "
        f"Random rounds: mean over {ROUND_IDEAS}-idea rounds (seeds from {min(ROUND_SEEDS)}).",
        "",
        "| Set (target) | Embedder | Idea placed | Model reads ideas | ARI, whole set | Themes found "
        "| Mean ARI, random rounds | Mean themes, rounds |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for c in report["cells"]:
        target = ARI_TARGETS.get(c["set"])
        lines.append(
            f"| {c['set']} (≥ {target:.2f}) | {c['embedder']} | {c['placement']} | {c['model_reads']} "
            f"| {c['ari']:.3f} | {c['found']} | {c['rounds_ari']:.3f} | {c['rounds_found']:.1f} |"
        )
    separations = [c for c in report["cells"] if "neighbours_same_theme" in c]
    if separations:
        lines += [
            "",
            "How well the vectors alone separate the true themes (topic taken out, no model reading; k not chosen):",
            "",
            "| Set | Embedder | Idea placed | Five nearest neighbours from its own theme "
            "| Spectral clustering told the true k (8–15 neighbours) |",
            "|---|---|---|---:|---|",
        ]
        for c in separations:
            lines.append(
                f"| {c['set']} | {c['embedder']} | {c['placement']} | {c['neighbours_same_theme']:.0%} "
                f"| {c['spectral_true_k_min']:.2f}–{c['spectral_true_k_max']:.2f} |"
            )
    lines += ["", "| Embedder | Embed 60 ideas alone (s) | In context (s) | Peak RSS, own process (MiB) |"]
    lines.append("|---|---:|---:|---:|")
    for name, times in report["embed_60_s"].items():
        rss = report.get("peak_rss_mib", {}).get(name, {})
        lines.append(
            f"| {name} | {times['alone']:.2f} | {times['in_context']:.2f} | {rss.get('peak_rss_mib', 0.0):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder-dir", type=Path, help="the sentence-transformers model directory to compare")
    parser.add_argument("--name", default="mpnet", help="how the tables call that embedder")
    parser.add_argument("--read", action="store_true", help="also with the chat model's reading of each idea")
    parser.add_argument("--read-only", action="store_true", help="only with the chat model's reading")
    parser.add_argument("--rounds", type=int, default=len(ROUND_SEEDS), help="random 60-idea rounds per set")
    parser.add_argument("--sets", nargs="*", help="only these labelled sets")
    parser.add_argument("--out", type=Path, default=RESULTS / "brainstorm-embedder.json")
    parser.add_argument("--md", type=Path, default=RESULTS / "brainstorm-embedder.md")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return
    if args.embedder_dir is None:
        parser.error("--embedder-dir is required")
    report = asyncio.run(run(args))
    report["peak_rss_mib"] = peak_rss({"MiniLM": None, args.name: args.embedder_dir})
    markdown = render(report)
    print(markdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    args.md.write_text(markdown + "\n")


if __name__ == "__main__":
    main()
