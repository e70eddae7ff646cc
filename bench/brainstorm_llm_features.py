"""Exploratory: would the embedded SmolLM2's hidden states, appended to MiniLM's, find themes people recognise?

For each labelled set in bench/data/brainstorm_ideas.json, every idea is read by SmolLM2-135M-Instruct (Hugging Face
transformers, float32) inside a short prompt that asks for the suggestion's category; the last token's hidden state
(after the last layer, or after layer L-2) is taken as the idea's vector. That vector, topic-free as in
bots.brainstorm.clustering, is appended to MiniLM's (ideas read after their topic, as a session does) and clustered
by `cluster()` with k chosen automatically. ARI against the true themes on the whole set and as the mean of 12
random 60-idea rounds (seeded). Sessions use the layer L-2 view (BatchingEngine.read, bots/brainstorm/reading.py).

Run:  .venv/bin/python bench/brainstorm_llm_features.py [--out bench/results/brainstorm-llm-features.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from local_generator import machine_info  # noqa: E402

DATA = REPO_ROOT / "bench" / "data" / "brainstorm_ideas.json"
TEMPLATE = 'Question: {topic}\nSuggestion: {idea}\nThe category of this suggestion in one word is: "'
LAYERS = {"last layer": -1, "layer L-2": -3}
ROUNDS, ROUND_IDEAS = 12, 60


class HiddenStates:
    """The embedded SmolLM2 through plain transformers: each text's last-token hidden state at chosen layers."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from config import load_settings
        from generation.models import prepare_model

        path = prepare_model(load_settings(env={})).path
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()

    def __call__(self, texts: list[str], layers: list[int]) -> list[Any]:
        with self.torch.inference_mode():
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True)
            states = self.model(**encoded, output_hidden_states=True).hidden_states
            return [states[layer][:, -1].numpy() for layer in layers]


def combined(placed: Any, topic_vectors: Any, extra: Any, index: Any) -> Any:
    """MiniLM's topic-free vectors of the ideas at `index`, with SmolLM2's (topic-free too) in front, if given."""
    import numpy as np

    from bots.brainstorm.clustering import as_matrix, topic_free

    minilm_part = topic_free(placed[index], topic_vectors)
    if extra is None:
        return minilm_part
    return as_matrix(np.hstack([topic_free(extra[index]), minilm_part]))


def main() -> None:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from bots.brainstorm.clustering import cluster
    from bots.brainstorm.themes import content_words, without_topic_words
    from generation.embeddings import MiniLMEmbedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "brainstorm-llm-features.json")
    args = parser.parse_args()
    sets = json.loads(DATA.read_text())["sets"]
    minilm = MiniLMEmbedder()
    smollm = HiddenStates()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for data in sets:
        labels = np.array([theme for theme, _ in data["ideas"]])
        ideas = [text for _, text in data["ideas"]]
        topic = data["topic"]
        placed = np.array(
            asyncio.run(minilm.embed_in_context(topic, [without_topic_words(idea, topic) for idea in ideas]))
        )
        topic_vectors = np.array(asyncio.run(minilm.embed([topic, *dict.fromkeys(content_words(topic))])))
        prompts = [TEMPLATE.format(topic=topic, idea=idea) for idea in ideas]
        views: dict[str, Any] = {"MiniLM (today)": None}
        states = smollm(prompts, list(LAYERS.values()))
        for name, state in zip(LAYERS, states, strict=True):
            views[f"MiniLM + SmolLM2 {name}"] = state
        rng = np.random.default_rng(0)
        rounds = [rng.choice(len(ideas), ROUND_IDEAS, replace=False) for _ in range(ROUNDS)]
        for view, extra in views.items():
            whole = np.arange(len(ideas))
            found = cluster(combined(placed, topic_vectors, extra, whole), max_themes=8)
            per_round = [
                adjusted_rand_score(labels[i], cluster(combined(placed, topic_vectors, extra, i), max_themes=8).labels)
                for i in rounds
            ]
            rows.append(
                {
                    "set": data["name"],
                    "view": view,
                    "themes": len(set(found.labels)),
                    "ari_whole": float(adjusted_rand_score(labels, found.labels)),
                    "ari_rounds_mean": float(np.mean(per_round)),
                }
            )
            print(rows[-1], flush=True)
    machine = machine_info()
    lines = [
        "### SmolLM2 hidden states beside MiniLM for theme finding (bench/brainstorm_llm_features.py)\n",
        f"{machine['cpu_model']}, {machine['os_cpu_count']} cores; commit {(machine['git_commit'] or '?')[:7]}; "
        f"{machine['date']}; {time.perf_counter() - started:.0f} s.\n",
        "| Set | Vectors | Themes found (whole set) | ARI, whole set | ARI, mean of 12 random 60-idea rounds |",
        "|---|---|---:|---:|---:|",
        *(
            f"| {r['set']} | {r['view']} | {r['themes']} | {r['ari_whole']:.3f} | {r['ari_rounds_mean']:.3f} |"
            for r in rows
        ),
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "template": TEMPLATE, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
