"""bench/gpu.py on a tiny config on the CPU: the GPU benchmark's code runs and writes its results (no GPU needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

GPU_BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def load_gpu_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", GPU_BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path  # the script reorders sys.path for itself
    return module


def test_tiny_gpu_bench_runs_on_cpu_and_writes_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_gpu_bench()
    argv = ["gpu.py", "--tiny", "--device", "cpu", "--batch", "2", "--prompt", "6", "--steps", "3"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out-dir", str(tmp_path)])
    bench.main()
    [report_path] = tmp_path.glob("gpu-tiny-*.json")
    report = json.loads(report_path.read_text())
    assert report["device"] == "cpu"
    assert report_path.with_suffix(".md").read_text().startswith("### GPU decode benchmark")
    single = report["batch1"]
    assert single["cuda_graph"] is False
    assert single["fraction_of_bound"] > 0
    assert single["bytes_per_token"] > 0
    assert report["saturation"]["tokens"] == 2 * 3
    cb = report["transformers_cb"]
    assert cb.get("tokens", 0) > 0 or cb.get("error")
    engine = report["chorus_slot_model"]
    assert engine["off"]["batch_2"]["tokens"] == engine["eager"]["batch_2"]["tokens"] == 2 * 3
    assert engine["first_step_relative_difference"] < 0.05  # the graphs' step computes the engine's step


def test_static_decoder_matches_hugging_face_greedy() -> None:
    """The benchmark's static-cache step computes what the model computes: same greedy tokens as generate()."""
    import torch

    bench = load_gpu_bench()
    model = bench.build_model(bench.llama_config(tiny=True), "cpu").float()
    prompt = torch.tensor([[5, 17, 3, 99, 42, 7]])
    with torch.inference_mode():
        expected = model.generate(prompt, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
    decoder = bench.StaticDecoder(model, 1, 16, graph=False)
    first = decoder.prefill(prompt)
    produced = decoder.decode(first, prompt.shape[1], 4)
    assert [int(first[0]), *produced[0].tolist()] == expected[0, prompt.shape[1] :].tolist()
