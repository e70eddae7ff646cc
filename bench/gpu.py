"""Decode speed on one GPU: a Llama-3.1-8B-shaped model of random bfloat16 weights, built from a config (no download).

What it measures, in one run of a few minutes on one NVIDIA GPU:

1. batch-1 decode with a static KV cache and the decode step captured as a CUDA graph, as a fraction of the
   memory-bandwidth bound: every token must read all weights (the embedding only one row) and the KV cache so far,
   so the bound is those bytes ÷ the GPU's peak bandwidth (a table by device name; a measured device-to-device copy
   when the name is unknown, both reported);
2. saturation throughput: B requests (prompt P, N new tokens, greedy) through the same static-cache graph step,
   against transformers' own continuous batching (`generate_batch`) on the same model and GPU;
3. the Chorus BatchingEngine's current slot forward (eager, no graph) at batch 1 and at B, for reference.

`--tiny` runs a tiny config on the CPU (no CUDA graph there: the same step runs eagerly) so that the script is
tested without a GPU. Results go to bench/results/gpu-<device>.json and .md.

Run:  .venv/bin/python bench/gpu.py            (on a GPU machine)
      .venv/bin/python bench/gpu.py --tiny     (anywhere; seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
# `python bench/gpu.py` puts bench/ first on sys.path; the repository root must win for `generation`.
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR)]

# Peak DRAM/HBM bandwidth in GB/s by a substring of torch.cuda.get_device_name(), most specific first.
PEAK_BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),
    ("H800", 3350.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L4", 300.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("V100", 900.0),
    ("T4", 320.0),
)
TARGET_BANDWIDTH_FRACTION = 0.70
TARGET_SATURATION_VS_CB = 3.0
CB_PAGE_SIZE = 256


def llama_config(tiny: bool) -> Any:
    """Llama-3.1-8B's architecture (or a tiny one with the same shape rules)."""
    import transformers

    if tiny:
        return transformers.LlamaConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rope_theta=500000.0,
        )
    return transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        tie_word_embeddings=False,
        bos_token_id=128000,
        eos_token_id=128001,
    )


def build_model(config: Any, device: str) -> Any:
    """Random bfloat16 weights straight on the device (small normal values keep activations finite)."""
    import torch
    import transformers

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02)
    return model.eval()


class StaticDecoder:
    """Greedy decoding over a Hugging Face Llama model's own modules with a static KV cache of `batch` rows and
    `max_len` positions per layer. The decode step has fixed shapes (the attention mask comes from the positions),
    so on CUDA it is captured once as a CUDA graph and replayed: one launch per token instead of hundreds.

    A graph removes the host's launch cost, not the GPU's own cost per kernel (a few microseconds each, ~40 kernels
    a layer in the plain form). `fused` cuts the kernels: q/k/v and gate/up as one product each, queries and keys
    rotated together, RMSNorm as torch's one op. `compile` also runs the step through torch.compile (Inductor
    fuses the elementwise work around the products) before the graph is captured."""

    def __init__(
        self,
        model: Any,
        batch: int,
        max_len: int,
        *,
        graph: bool,
        fused: bool = False,
        compile: bool = False,
        sum_attention: bool = False,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.fused = fused or compile or sum_attention
        # Decode attention written as two sums (scores over the head dimension, output over positions) for
        # Inductor to fuse into a few small kernels, instead of SDPA's one kernel with its fixed cost per layer.
        self.sum_attention = sum_attention
        config = model.config
        self.layers = list(model.model.layers)
        self.batch, self.max_len = batch, max_len
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = self.layers[0].self_attn.head_dim
        self.group = self.heads // self.kv_heads
        self.scale = self.layers[0].self_attn.scaling
        device, dtype = model.device, next(model.parameters()).dtype
        shape = (batch, self.kv_heads, max_len, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        positions = torch.arange(max_len, device=device)
        cos, sin = model.model.rotary_emb(torch.zeros(1, dtype=dtype, device=device), positions[None])
        self.cos, self.sin = cos[0], sin[0]
        self.span = positions
        self.rows = torch.arange(batch, device=device)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.logits: Any = None
        self.graph: Any = None
        if self.fused:  # concatenated copies (the model itself is left as it is)
            with torch.no_grad():
                self.qkv = [
                    torch.cat(
                        [layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]
                    )
                    for layer in self.layers
                ]
                self.gate_up = [
                    torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]) for layer in self.layers
                ]
        self.step: Callable[[], Any] = self._fused_step if self.fused else self._step
        if compile:
            self.step = torch.compile(self.step, dynamic=False)
        if graph:
            self._capture()

    def _rotate(self, x: Any, cos: Any, sin: Any) -> Any:
        half = x.shape[-1] // 2
        return x * cos + self.torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _step(self) -> Any:
        """One token for every row at its position; reads only the static buffers."""
        torch, batch = self.torch, self.batch
        hidden = self.model.model.embed_tokens(self.tokens)
        cos, sin = self.cos[self.positions][:, None, :], self.sin[self.positions][:, None, :]
        mask = (self.span[None, :] <= self.positions[:, None])[:, None, None, :]
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)
            query = self._rotate(attention.q_proj(normed).view(batch, self.heads, self.head_dim), cos, sin)
            key = self._rotate(attention.k_proj(normed).view(batch, self.kv_heads, self.head_dim), cos, sin)
            value = attention.v_proj(normed).view(batch, self.kv_heads, self.head_dim)
            self.keys[index][self.rows, :, self.positions] = key
            self.values[index][self.rows, :, self.positions] = value
            # Grouped-query attention without copies: each KV head's query group is its "query length".
            out = torch.nn.functional.scaled_dot_product_attention(
                query.view(batch, self.kv_heads, self.group, self.head_dim),
                self.keys[index],
                self.values[index],
                attn_mask=mask,
                scale=self.scale,
            )
            hidden = hidden + attention.o_proj(out.reshape(batch, self.heads * self.head_dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.model.lm_head(self.model.model.norm(hidden))

    def _norm(self, norm: Any, x: Any) -> Any:
        return self.torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)

    def _fused_step(self) -> Any:
        """The same step in fewer kernels (see the class docstring)."""
        torch, batch = self.torch, self.batch
        linear, silu = torch.nn.functional.linear, torch.nn.functional.silu
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        q_size, kv_size = heads * head_dim, kv_heads * head_dim
        hidden = self.model.model.embed_tokens(self.tokens)
        cos, sin = self.cos[self.positions][:, None, :], self.sin[self.positions][:, None, :]
        mask = (self.span[None, :] <= self.positions[:, None])[:, None, None, :]
        for index, layer in enumerate(self.layers):
            mixed = linear(self._norm(layer.input_layernorm, hidden), self.qkv[index])
            rotated = self._rotate(mixed[:, : q_size + kv_size].view(batch, heads + kv_heads, head_dim), cos, sin)
            self.keys[index][self.rows, :, self.positions] = rotated[:, heads:]
            self.values[index][self.rows, :, self.positions] = mixed[:, q_size + kv_size :].view(batch, kv_heads, -1)
            query = rotated[:, :heads].reshape(batch, kv_heads, self.group, head_dim)
            if self.sum_attention:
                scores = (query[:, :, :, None, :] * self.keys[index][:, :, None]).float().sum(-1) * self.scale
                weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(query.dtype)
                out = (weights[..., None] * self.values[index][:, :, None]).sum(-2)
            else:
                out = torch.nn.functional.scaled_dot_product_attention(
                    query, self.keys[index], self.values[index], attn_mask=mask, scale=self.scale
                )
            hidden = hidden + layer.self_attn.o_proj(out.reshape(batch, q_size))
            gate, up = linear(self._norm(layer.post_attention_layernorm, hidden), self.gate_up[index]).chunk(2, -1)
            hidden = hidden + layer.mlp.down_proj(silu(gate) * up)
        return self.model.lm_head(self._norm(self.model.model.norm, hidden))

    def _capture(self) -> None:
        torch = self.torch
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):  # warm up kernels, the allocator (and the compiler) outside the graph
                self.step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.logits = self.step()
        for cache in (*self.keys, *self.values):
            cache.zero_()

    def prefill(self, prompts: Any) -> Any:
        """Every row's prompt at once ([batch, length], eager, causal); returns each row's next token."""
        torch = self.torch
        batch, length = prompts.shape
        with torch.inference_mode():
            hidden = self.model.model.embed_tokens(prompts)
            cos, sin = self.cos[:length][None, :, None, :], self.sin[:length][None, :, None, :]
            for index, layer in enumerate(self.layers):
                attention = layer.self_attn
                normed = layer.input_layernorm(hidden)
                query = self._rotate(attention.q_proj(normed).view(batch, length, self.heads, -1), cos, sin)
                key = self._rotate(attention.k_proj(normed).view(batch, length, self.kv_heads, -1), cos, sin)
                value = attention.v_proj(normed).view(batch, length, self.kv_heads, -1)
                self.keys[index][:batch, :, :length] = key.transpose(1, 2)
                self.values[index][:batch, :, :length] = value.transpose(1, 2)
                out = torch.nn.functional.scaled_dot_product_attention(
                    query.transpose(1, 2),
                    self.keys[index][:batch, :, :length],
                    self.values[index][:batch, :, :length],
                    is_causal=True,
                    scale=self.scale,
                    enable_gqa=True,
                )
                hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
                hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            logits = self.model.lm_head(self.model.model.norm(hidden[:, -1]))
        return logits.argmax(-1)

    def decode(self, first: Any, start: int, steps: int) -> Any:
        """Greedy tokens for every row from position `start`; returns them as [batch, steps]."""
        torch = self.torch
        produced = []
        token = first
        with torch.inference_mode():
            for offset in range(steps):
                self.tokens.copy_(token)
                self.positions.fill_(start + offset)
                if self.graph is not None:
                    self.graph.replay()
                    logits = self.logits
                else:
                    logits = self.step()
                token = logits.argmax(-1)
                produced.append(token)
        return torch.stack(produced, dim=1)


def synchronize(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(torch: Any, device: str, work: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(torch, device)
    started = time.perf_counter()
    result = work()
    synchronize(torch, device)
    return time.perf_counter() - started, result


def copy_bandwidth_gbs(torch: Any, device: str, megabytes: int) -> float:
    """Measured device memory bandwidth: a large copy reads and writes every byte once."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(5):
        seconds, _ = timed(torch, device, lambda: target.copy_(source))
        best = min(best, seconds)
    return 2 * source.numel() / best / 1e9


def peak_bandwidth_gbs(device_name: str) -> float | None:
    for key, value in PEAK_BANDWIDTH_GBS:
        if key.lower() in device_name.lower():
            return value
    return None


def weight_bytes_per_token(model: Any) -> int:
    """Bytes one decode step must read: every parameter except the embedding table (one row of it is read)."""
    embedding = model.model.embed_tokens.weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total - embedding.numel() * embedding.element_size() + embedding.shape[1] * embedding.element_size()


def kv_bytes_per_position(model: Any) -> int:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2  # keys and values, bfloat16


FORMS = ("plain", "fused", "compiled", "compiled-sum-attention")


def make_decoder(model: Any, batch: int, max_len: int, graph: bool, form: str) -> StaticDecoder:
    return StaticDecoder(
        model,
        batch,
        max_len,
        graph=graph,
        fused=form == "fused",
        compile=form.startswith("compiled"),
        sum_attention=form.endswith("sum-attention"),
    )


def batch1_decode(
    torch: Any, model: Any, device: str, prompt: int, steps: int, graph: bool, form: str = "plain", rounds: int = 3
) -> dict[str, Any]:
    """Seconds per token at batch 1: the median of `rounds` decodes of `steps` tokens after the same prompt."""
    decoder = make_decoder(model, 1, prompt + steps + 1, graph, form)
    prompts = torch.randint(0, model.config.vocab_size, (1, prompt), device=device)
    decoder.decode(decoder.prefill(prompts), prompt, 4)  # warm
    times = []
    for _ in range(rounds):
        first = decoder.prefill(prompts)
        seconds, _ = timed(torch, device, lambda first=first: decoder.decode(first, prompt, steps))
        times.append(seconds / steps)
    result: dict[str, Any] = {
        "seconds_per_token": sorted(times)[len(times) // 2],
        "rounds_seconds_per_token": times,
        "prompt": prompt,
        "steps": steps,
        "cuda_graph": graph,
        "form": form,
    }
    if device.startswith("cuda"):
        result["profile"] = profile_step(torch, decoder)
    return result


def profile_step(torch: Any, decoder: StaticDecoder, steps: int = 3, top: int = 12) -> dict[str, Any]:
    """The GPU kernels of one step run without the graph (torch.profiler): how many, their summed time, and the
    costliest. Summed kernel time near the graph's time per token means the kernels themselves are the cost."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        decoder.step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                decoder.step()
            torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        if "cuda" not in str(getattr(event, "device_type", "")).lower():
            continue
        micros = getattr(event, "self_device_time_total", None)
        if micros is None:
            micros = getattr(event, "self_cuda_time_total", 0)
        rows.append((event.key, micros / steps, event.count / steps))
    rows.sort(key=lambda row: -row[1])
    return {
        "kernels_per_step": sum(count for _, _, count in rows),
        "kernel_ms_per_step": sum(micros for _, micros, _ in rows) / 1000,
        "top": [{"kernel": name[:120], "us_per_step": micros, "per_step": count} for name, micros, count in rows[:top]],
    }


def static_saturation(
    torch: Any, model: Any, device: str, batch: int, prompt: int, steps: int, graph: bool, form: str = "plain"
) -> dict[str, Any]:
    decoder = make_decoder(model, batch, prompt + steps + 1, graph, form)
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt), device=device)

    def run() -> Any:
        return decoder.decode(decoder.prefill(prompts), prompt, steps)

    run()  # warm
    seconds, produced = timed(torch, device, run)
    tokens = int(produced.numel())
    return {"batch": batch, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "form": form}


def transformers_cb(torch: Any, model: Any, device: str, batch: int, prompt: int, steps: int) -> dict[str, Any]:
    """transformers' continuous batching on the same model: all B requests handed to one generate_batch call."""
    import transformers

    if not hasattr(model, "generate_batch"):
        return {"error": "this transformers has no generate_batch"}
    inputs = torch.randint(0, model.config.vocab_size, (batch, prompt)).tolist()
    config = transformers.GenerationConfig(max_new_tokens=steps, do_sample=False, eos_token_id=-1, pad_token_id=0)
    options: dict[str, Any] = {}
    if hasattr(transformers, "ContinuousBatchingConfig"):
        # Its paged cache sized to the workload: by default it takes a share of free memory, which on a CPU
        # means gigabytes and minutes of allocation, and is no faster.
        blocks = batch * -(-(prompt + steps) // CB_PAGE_SIZE) + 2
        # The page's size is `page_size` in newer transformers, `block_size` in older (5.17, say).
        fields = getattr(transformers.ContinuousBatchingConfig, "__dataclass_fields__", {})
        size_key = "page_size" if "page_size" in fields else "block_size"
        options["continuous_batching_config"] = transformers.ContinuousBatchingConfig(
            **{size_key: CB_PAGE_SIZE, "num_blocks": blocks}
        )

    def generate(requests: list[list[int]]) -> Any:
        return model.generate_batch(inputs=requests, generation_config=config, progress_bar=False, **options)

    try:
        generate(inputs[: min(batch, 4)])
        seconds, outputs = timed(torch, device, lambda: generate(inputs))
    except Exception as exc:  # a peer that fails is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    tokens = sum(len(output.generated_tokens) for output in outputs.values())
    return {"batch": batch, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


ENGINE_MODES = {"off": "eager step", "auto": "CUDA graphs", "eager": "fixed-shape step, eager"}


def chorus_slot_model(torch: Any, model: Any, device: str, batch: int, prompt: int, steps: int) -> dict[str, Any]:
    """The BatchingEngine's slot forward, with its decode steps run eagerly ("off") and replayed from CUDA graphs
    ("auto"; on a CPU the graphs' fixed-shape step runs eagerly instead): batch-1 per-token time, B-row
    throughput, and how far the two modes' logits differ on the same first decode step."""
    from generation.engine import _SlotModel

    modes = ("off", "auto") if device.startswith("cuda") else ("off", "eager")
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt)).tolist()
    results: dict[str, Any] = {}
    first_steps = []
    for mode in modes:
        runner = _SlotModel(model, batch, prompt + steps + 1, decode_graphs=mode)
        runner.forward([], [(0, 0, prompts[0], True)])
        first_steps.append(runner.forward([(0, 1, prompt)], [])[0].float().cpu())
        runner.release()
        rows_results: dict[str, Any] = {}
        for rows in (1, batch):

            def run(rows: int = rows, runner: Any = runner) -> int:
                logits = runner.forward([], [(row, 0, prompts[row], True) for row in range(rows)])
                tokens = logits.argmax(-1).tolist()
                for offset in range(steps):
                    logits = runner.forward([(row, tokens[row], prompt + offset) for row in range(rows)], [])
                    tokens = logits.argmax(-1).tolist()
                return rows * steps

            run()
            seconds, tokens = timed(torch, device, run)
            rows_results[f"batch_{rows}"] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
        rows_results["graphs_captured"] = runner.graphs.captured if runner.graphs is not None else 0
        runner.release()
        results[mode] = rows_results
    base, other = first_steps
    results["first_step_relative_difference"] = float((other - base).norm() / base.norm())
    return results


def run(args: argparse.Namespace, save: Callable[[dict[str, Any]], None] = lambda report: None) -> dict[str, Any]:
    """Every section in turn; `save` gets the report after each, so a section that crashes the process (a GPU
    fault, say) leaves the earlier ones on disk."""
    import torch
    import transformers

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    graph = device.startswith("cuda") and not args.no_graph
    name = torch.cuda.get_device_name() if device.startswith("cuda") else (platform.processor() or "cpu")
    started = time.perf_counter()
    build_s, model = timed(torch, device, lambda: build_model(llama_config(args.tiny), device))
    report: dict[str, Any] = {
        "device": device,
        "device_name": name,
        "config": "tiny" if args.tiny else "Llama-3.1-8B architecture, random bfloat16 weights",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": build_s,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "load_average_1min_before": os.getloadavg()[0]},
    }
    table = peak_bandwidth_gbs(name) if device.startswith("cuda") else None
    measured = copy_bandwidth_gbs(torch, device, 64 if args.tiny else 2048)
    peak = table or measured
    report["bandwidth"] = {"table_gbs": table, "measured_copy_gbs": measured, "bound_uses_gbs": peak}

    if args.engine_only:
        report["chorus_slot_model"] = chorus_slot_model(torch, model, device, args.batch, args.prompt, args.steps)
        report["total_s"] = time.perf_counter() - started
        return report
    context = args.prompt + args.steps / 2  # the KV read grows over the run; its mean
    bytes_per_token = weight_bytes_per_token(model) + kv_bytes_per_position(model) * context
    bound_s = bytes_per_token / (peak * 1e9)
    sections = report["elapsed_after_s"] = {}
    forms = report["batch1_forms"] = {}
    for form in args.forms:
        try:
            single = batch1_decode(torch, model, device, args.prompt, args.steps, graph, form)
        except Exception as exc:  # a form that fails (the compiler, say) is reported; the others still run
            forms[form] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            continue
        single.update(
            bytes_per_token=bytes_per_token,
            bound_seconds_per_token=bound_s,
            tokens_per_s=1 / single["seconds_per_token"],
            fraction_of_bound=bound_s / single["seconds_per_token"],
            # The same against the copy bandwidth measured above: the ceiling a kernel can actually reach.
            fraction_of_measured_bound=bytes_per_token / (measured * 1e9) / single["seconds_per_token"],
        )
        forms[form] = single
        sections[f"batch1_{form}"] = time.perf_counter() - started
        save(report)
    done = {form: row for form, row in forms.items() if "error" not in row}
    best = min(done, key=lambda form: done[form]["seconds_per_token"])
    report["batch1"] = done[best]
    report["saturation"] = static_saturation(torch, model, device, args.batch, args.prompt, args.steps, graph, best)
    sections["saturation"] = time.perf_counter() - started
    save(report)
    report["transformers_cb"] = transformers_cb(torch, model, device, args.batch, args.prompt, args.steps)
    sections["transformers_cb"] = time.perf_counter() - started
    save(report)
    if not args.skip_engine:  # last: the slot model fuses the model's projections in place
        try:
            report["chorus_slot_model"] = chorus_slot_model(torch, model, device, args.batch, args.prompt, args.steps)
        except Exception as exc:  # reported, not fatal: the rows above are the benchmark
            report["chorus_slot_model_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        sections["chorus_slot_model"] = time.perf_counter() - started
    cb = report["transformers_cb"].get("tokens_per_s")
    report["saturation_vs_transformers_cb"] = report["saturation"]["tokens_per_s"] / cb if cb else None
    report["total_s"] = time.perf_counter() - started
    return report


def form_rows(report: dict[str, Any]) -> list[str]:
    """One row per form of the decode step: its batch-1 speed and, on a GPU, its kernels per token."""
    rows = []
    for form, row in report.get("batch1_forms", {}).items():
        if "error" in row:
            rows.append(f"| batch-1, {form} step | failed: {row['error']} | |")
            continue
        profile = row.get("profile")
        kernels = (
            f"; {profile['kernels_per_step']:.0f} kernels, "
            f"{profile['kernel_ms_per_step']:.2f} ms of kernel time per token"
            if profile
            else ""
        )
        rows.append(
            f"| batch-1, {form} step | {row['tokens_per_s']:.1f} tok/s, {row['fraction_of_bound']:.0%} of the bound "
            f"({row['fraction_of_measured_bound']:.0%} of the measured copy's)"
            f"{kernels} | |"
        )
    return rows


def engine_rows(report: dict[str, Any]) -> list[str]:
    """The Chorus engine's slot forward, one row per mode and batch."""
    if report.get("chorus_slot_model_error"):
        return [f"| Chorus BatchingEngine slot forward | failed: {report['chorus_slot_model_error']} | |"]
    engine = report.get("chorus_slot_model") or {}
    lines = []
    for mode, label in ENGINE_MODES.items():
        for key, row in engine.get(mode, {}).items():
            if key.startswith("batch_"):
                lines.append(
                    f"| Chorus BatchingEngine slot forward ({label}), {key.replace('_', ' ')} "
                    f"| {row['tokens_per_s']:.1f} tok/s | |"
                )
    if "first_step_relative_difference" in engine:
        lines.append(
            "| the two modes' logits on the same first decode step, ‖a − b‖ / ‖a‖ "
            f"| {engine['first_step_relative_difference']:.1e} | |"
        )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    if "batch1" not in report:  # --engine-only
        bandwidth = report["bandwidth"]
        return (
            "\n".join(
                [
                    f"### Chorus engine on {report['device_name']} ({report['device']})",
                    "",
                    f"{report['config']}; torch {report['versions']['torch']}, transformers "
                    f"{report['versions']['transformers']}; {report['date']}; measured copy "
                    f"{bandwidth['measured_copy_gbs']:.0f} GB/s.",
                    "",
                    "| Measure | Value | |",
                    "|---|---:|---|",
                    *engine_rows(report),
                ]
            )
            + "\n"
        )
    single, saturation, cb = report["batch1"], report["saturation"], report["transformers_cb"]
    bandwidth = report["bandwidth"]
    peak_source = "table" if bandwidth["table_gbs"] else "measured copy"
    ratio = report["saturation_vs_transformers_cb"]
    lines = [
        f"### GPU decode benchmark: {report['device_name']} ({report['device']})",
        "",
        f"{report['config']}, {report['parameters'] / 1e9:.2f} B parameters; torch {report['versions']['torch']}, "
        f"transformers {report['versions']['transformers']}; {report['date']}; whole run {report['total_s']:.0f} s; "
        f"host: {report['host']['cpus']} CPUs, load average {report['host']['load_average_1min_before']:.1f} before. "
        f"Peak bandwidth {bandwidth['bound_uses_gbs']:.0f} GB/s ({peak_source}; measured copy "
        f"{bandwidth['measured_copy_gbs']:.0f} GB/s).",
        "",
        "| Measure | Value | Target |",
        "|---|---:|---|",
        f"| batch-1 decode, static KV cache{', CUDA graph' if single['cuda_graph'] else ', eager'} "
        f"| {single['tokens_per_s']:.1f} tok/s ({single['seconds_per_token'] * 1000:.2f} ms/token) | |",
        f"| bandwidth bound ({single['bytes_per_token'] / 1e9:.2f} GB read per token) "
        f"| {1 / single['bound_seconds_per_token']:.1f} tok/s | |",
        f"| batch-1 as a fraction of the bound ({single.get('form', 'plain')} step) "
        f"| {single['fraction_of_bound']:.0%} of the {peak_source} bound; "
        f"{single['fraction_of_measured_bound']:.0%} of the measured copy's | ≥ {TARGET_BANDWIDTH_FRACTION:.0%} |",
        *form_rows(report),
        f"| saturation, {saturation['batch']} requests, the same static-cache step "
        f"| {saturation['tokens_per_s']:.0f} tok/s | |",
        "| transformers continuous batching (generate_batch), same requests | "
        + (f"{cb['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in cb else f"failed: {cb.get('error')}")
        + " | |",
        "| saturation vs transformers CB | "
        + ("n/a" if ratio is None else f"{ratio:.2f}×")
        + f" | ≥ {TARGET_SATURATION_VS_CB:g}× |",
    ]
    lines += engine_rows(report)
    lines += [
        "",
        f"Every request: a {single['prompt']}-token random prompt, {single['steps']} new tokens, greedy. The bound "
        "counts every weight once per token (the embedding one row) plus the KV cache read at the mean context.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny config (runs on a CPU in seconds)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--batch", type=int, default=None, help="requests at saturation (default 128; tiny 8)")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 128; tiny 16)")
    parser.add_argument("--steps", type=int, default=None, help="new tokens per request (default 128; tiny 8)")
    parser.add_argument("--no-graph", action="store_true", help="run the decode step eagerly even on CUDA")
    parser.add_argument(
        "--forms",
        default=None,
        help=f"decode-step forms to time at batch 1, comma-separated, from {', '.join(FORMS)} "
        "(default: all on CUDA; plain,fused on a CPU, where compiling takes minutes)",
    )
    parser.add_argument("--engine-only", action="store_true", help="only the Chorus engine's rows")
    parser.add_argument("--skip-engine", action="store_true", help="leave out the BatchingEngine reference rows")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()
    args.batch = args.batch or (8 if args.tiny else 128)
    args.prompt = args.prompt or (16 if args.tiny else 128)
    args.steps = args.steps or (8 if args.tiny else 128)
    default_forms = ",".join(FORMS) if args.device in ("cuda", "auto") and not args.tiny else "plain,fused"
    args.forms = [form.strip() for form in (args.forms or default_forms).split(",") if form.strip()]
    unknown = sorted(set(args.forms) - set(FORMS))
    if unknown:
        parser.error(f"unknown form(s) {', '.join(unknown)}; choose from {', '.join(FORMS)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def stem_for(report: dict[str, Any]) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", report["device_name"].lower()).strip("-") or report["device"]
        return args.out_dir / f"gpu-{'engine-' if args.engine_only else ''}{'tiny-' if args.tiny else ''}{slug}"

    def save(report: dict[str, Any]) -> None:
        stem_for(report).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")

    report = run(args, save)
    markdown = render_markdown(report)
    stem = stem_for(report)
    save(report)
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
