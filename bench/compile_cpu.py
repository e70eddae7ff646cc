"""The one-request decode step compiled by torch.compile (Inductor) on a CPU, against the engine's eager step.

The step compiled is the fixed-shape decode step of generation/decode_graphs.py for one request (one row, the cache's
whole capacity with a length mask), so there is one graph per cache capacity, not per length. For int8 the fbgemm
product stays opaque to Inductor as a custom op ("python": torch.library.custom_op; "cpp": the same op written in
C++ and built with torch.utils.cpp_extension at run time, so a C++ wrapper calls it without Python), and Inductor
fuses the work around it. bfloat16 compiles an unpacked copy of the model (the engine's pre-packed oneDNN weights are
opaque to Inductor).

Each variant runs in a child process with a fresh Inductor cache under the Chorus home (compile time cold), then
again on the same cache with --warm (compile time warm; its steps are pooled with the first run's). In each child
three steps run in alternating rounds on one thread (SmolLM2, a 40-token prompt, 20 greedy steps a round): the
engine's eager step, the torch.compile'd function ("compiled"), and the same compiled graph called without dynamo's
guard check ("direct": what the step would cost with the guards gone, for instance through AOTInductor; not a
supported way to call it). Greedy tokens are compared with eager's. Wall time and the thread's CPU time per step are
recorded; on a shared machine the minimum and the CPU time are the figures least touched by other work.

Run:  .venv/bin/python bench/compile_cpu.py [--quantize int8|none] [--variants inductor,cpp_wrapper]
      [--op cpp|python] [--rounds 6] [--warm] [--label cpu-2core]
Prints a table and writes bench/results/compile-cpu-<label>-{int8,bf16}.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
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

# Inductor options per variant (its config, patched for the compile); "max-autotune" is what the mode
# max-autotune-no-cudagraphs sets on a CPU.
VARIANTS: dict[str, dict[str, Any]] = {
    "inductor": {},
    "cpp_wrapper": {"cpp_wrapper": True},
    "freezing": {"freezing": True},
    "cpp_wrapper+freezing": {"cpp_wrapper": True, "freezing": True},
    "max-autotune": {"max_autotune": True},
    "max-autotune+cpp_wrapper": {"max_autotune": True, "cpp_wrapper": True},
}

_CPP_SOURCE = r"""
#include <torch/library.h>
#include <ATen/ATen.h>
// fbgemm's packed int8 x float32 product, then the per-row weight scales (generation/engine.py, _fbgemm_packed).
at::Tensor fbgemm_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& offsets, double scale,
                       int64_t zero_point, const at::Tensor& bias, const at::Tensor& rows) {
  static const at::Tensor zero = at::zeros({}, at::kChar);
  auto stand_in = zero.expand({bias.size(0), x.size(1)});
  return at::fbgemm_linear_int8_weight_fp32_activation(x, stand_in, packed, offsets, scale, zero_point, bias)
      .mul_(rows);
}
at::Tensor fbgemm_int8_meta(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& offsets, double scale,
                            int64_t zero_point, const at::Tensor& bias, const at::Tensor& rows) {
  return at::empty({x.size(0), bias.size(0)}, x.options());
}
TORCH_LIBRARY(chorus_bench, m) {
  m.def("fbgemm_int8(Tensor x, Tensor packed, Tensor offsets, float scale, int zero_point, Tensor bias, "
        "Tensor rows) -> Tensor");
}
TORCH_LIBRARY_IMPL(chorus_bench, CPU, m) { m.impl("fbgemm_int8", fbgemm_int8); }
TORCH_LIBRARY_IMPL(chorus_bench, Meta, m) { m.impl("fbgemm_int8", fbgemm_int8_meta); }
"""


def opaque_int8_op(torch: Any, kind: str) -> Any:
    """The fbgemm product with its row scales as one op Inductor does not look into."""
    if kind == "cpp":
        from torch.utils.cpp_extension import load_inline

        load_inline("chorus_bench_int8", cpp_sources=[_CPP_SOURCE], is_python_module=False, extra_cflags=["-O2"])
        return torch.ops.chorus_bench.fbgemm_int8.default
    from generation.engine import _fbgemm_product

    product, zero = _fbgemm_product(torch), torch.zeros((), dtype=torch.int8)

    @torch.library.custom_op(
        "chorus_bench::fbgemm_int8_py",
        mutates_args=(),
        schema="(Tensor x, Tensor packed, Tensor offsets, float scale, int zero_point, Tensor bias, Tensor rows) "
        "-> Tensor",
    )
    def fbgemm_int8(x: Any, packed: Any, offsets: Any, scale: float, zero_point: int, bias: Any, rows: Any) -> Any:
        stand_in = zero.expand(bias.shape[0], x.shape[1])
        return product(x, stand_in, packed, offsets, scale, zero_point, bias).mul_(rows)

    @fbgemm_int8.register_fake
    def _(x: Any, packed: Any, offsets: Any, scale: float, zero_point: int, bias: Any, rows: Any) -> Any:
        return x.new_empty(x.shape[0], bias.shape[0])

    return fbgemm_int8


def opaque_plan(torch: Any, runner: Any, op: Any) -> tuple[list[Any], Any]:
    """The runner's layer plan and head, rebuilt with every fbgemm int8 product called through `op`."""
    from generation import engine

    swapped = {}
    for module in runner.model.modules():
        if isinstance(module, engine._INT8_LINEAR) and module.fbgemm is not None:
            _, packed, offsets, scale, zero_point, bias, rows = module.fbgemm
            swapped[module] = module.int8_product
            arguments = (packed, offsets, float(scale), int(zero_point), bias, rows)
            module.int8_product = lambda x, arguments=arguments: op(x, *arguments)
    try:
        plan = [engine._LayerPlan.build(runner, layer) for layer in runner.layers]
        for index, layer in enumerate(runner.layers):
            down = layer.mlp.down_proj
            if down in swapped and down.outlier_index is not None:  # _direct hands its product method out
                product, inverse, outliers, weight = (
                    down.int8_product,
                    down.inverse_smooth,
                    down.outlier_index,
                    down.outlier_weight,
                )

                def mlp_out(
                    x: Any,
                    product: Any = product,
                    inverse: Any = inverse,
                    outliers: Any = outliers,
                    weight: Any = weight,
                ) -> Any:
                    return torch.addmm(product(x * inverse), x.index_select(1, outliers), weight.t())

                plan[index] = dataclasses.replace(plan[index], mlp_out=mlp_out)
        head = runner._normed(runner.model.model.norm, runner.model.lm_head)
    finally:
        for module, product in swapped.items():
            module.int8_product = product
    return plan, head


def fixed_step(torch: Any, runner: Any, plan: list[Any], head: Any) -> Any:
    """DecodeGraphs._step for one request in slot 0, over its own plan: inputs [token, slot, position, length]."""
    from generation.decode_graphs import length_bias

    def step(inputs: Any, keys_list: list[Any], values_list: list[Any]) -> Any:
        tokens, slots, positions, lengths = inputs[0:1], inputs[1:2], inputs[2:3], inputs[3:4]
        hidden = runner.model.model.embed_tokens(tokens)
        if runner.float32_residual:
            hidden = hidden.float()
        cos, sin = runner.rope[0][positions], runner.rope[1][positions]
        bias = length_bias(torch, lengths, keys_list[0].shape[2])
        for index, layer in enumerate(plan):
            query, key, value = runner.project(layer, hidden, cos, sin)
            keys, values = keys_list[index], values_list[index]
            keys[slots, :, positions] = key.to(keys.dtype)
            values[slots, :, positions] = value.to(values.dtype)
            out = runner.decode_attention(query.to(keys.dtype), keys, values, None, bias)
            hidden = hidden + layer.attend_out(out)
            gate, up = layer.mlp_in(hidden).chunk(2, dim=-1)
            hidden = hidden + layer.mlp_out(layer.act(gate) * up)
        return head(hidden).float()

    return step


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant: compile, then eager and compiled steps in alternating rounds; a JSON-able result."""
    import torch

    from config import load_settings
    from generation.engine import BatchingEngine, _SlotModel
    from generation.models import prepare_model

    torch.set_num_threads(1)
    spec = prepare_model(load_settings(env={}))
    engine = BatchingEngine(spec, dtype="auto", max_batch=1, max_queue=1, quantize=args.quantize, threads=1)
    if (error := engine._ready()) is not None:
        raise SystemExit(str(error))
    eager: Any = engine._runner
    compiled_runner: Any
    if args.quantize == "int8":
        compiled_runner = eager
        plan, head = opaque_plan(torch, eager, opaque_int8_op(torch, args.op))
    else:  # an unpacked copy of the model: Inductor packs it with freezing
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(spec.path, local_files_only=True, dtype=eager.dtype)
        compiled_runner = _SlotModel(model.eval(), 1, eager.max_len)
        plan, head = compiled_runner.plan, compiled_runner.head
    options = VARIANTS[args.child]
    captured: dict[str, Any] = {}

    def backend(graph: Any, example_inputs: list[Any]) -> Any:
        """Inductor, keeping the compiled graph and its real inputs so it can also be called without dynamo."""
        from torch._inductor.compile_fx import compile_fx

        captured["graph"] = compile_fx(graph, example_inputs, config_patches=options)
        captured["inputs"] = list(example_inputs)
        return captured["graph"]

    compiled = torch.compile(fixed_step(torch, compiled_runner, plan, head), dynamic=False, backend=backend)
    inputs = torch.zeros(4, dtype=torch.long)
    prompt = list(range(100, 100 + args.prompt))

    def direct() -> Any:
        """The compiled graph called as dynamo would, minus its guard check: the cache tensors swapped in by place."""
        if "cache_places" not in captured:
            places = {id(t): ("keys", i) for i, t in enumerate(captured["keys"])}
            places.update({id(t): ("values", i) for i, t in enumerate(captured["values"])})
            captured["cache_places"] = [(j, places[id(t)]) for j, t in enumerate(captured["inputs"]) if id(t) in places]
        arguments = list(captured["inputs"])
        for j, (name, index) in captured["cache_places"]:
            arguments[j] = getattr(compiled_runner, name)[index]
        return captured["graph"](*arguments)[0]

    def decode(kind: str) -> tuple[list[float], list[float], list[int]]:
        runner = eager if kind == "eager" else compiled_runner
        times, cpu, tokens = [], [], []
        with torch.inference_mode():
            runner.release()
            token = int(runner.forward([], [(0, 0, prompt, True)])[-1].argmax())
            for index in range(args.steps):
                position = args.prompt + index
                started, started_cpu = time.perf_counter(), time.thread_time()
                if kind == "eager":
                    logits = runner.forward([(0, token, position)], [])
                else:
                    runner._fit(1, position + 1)
                    inputs.copy_(torch.tensor([token, 0, position, position + 1]))
                    if kind == "direct" and "graph" in captured:
                        logits = direct()
                    else:
                        logits = compiled(inputs, runner.keys, runner.values)
                        captured["keys"], captured["values"] = list(runner.keys), list(runner.values)
                token = int(logits[0].argmax())
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.thread_time() - started_cpu) * 1000)
                tokens.append(token)
        return times, cpu, tokens

    load_before = os.getloadavg()
    started = time.perf_counter()
    decode("compiled")  # compiles on the first step; the steps stay within one cache capacity
    compile_s = time.perf_counter() - started
    kinds = ("eager", "compiled", "direct")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            wall, used, picked = decode(kind)
            times[kind] += wall[1:]  # the first step of a round also fits the cache
            cpu[kind] += used[1:]
            tokens.setdefault(kind, picked)
    return {
        "variant": args.child,
        "quantize": args.quantize,
        "op": args.op if args.quantize == "int8" else None,
        "options": options,
        "compile_s": compile_s,
        "graph_inputs": len(captured["inputs"]),
        **{f"{kind}_ms": times[kind] for kind in kinds},
        **{f"{kind}_cpu_ms": cpu[kind] for kind in kinds},
        "same_tokens": {
            kind: sum(a == b for a, b in zip(tokens["eager"], tokens[kind], strict=True)) for kind in kinds[1:]
        },
        "steps": args.steps,
        "capacity": compiled_runner.capacity,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "torch": torch.__version__,
    }


def run_child(args: argparse.Namespace, variant: str, cache: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", variant, "--quantize", args.quantize, "--op", args.op]
    command += ["--rounds", str(args.rounds), "--steps", str(args.steps), "--prompt", str(args.prompt)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TORCH_EXTENSIONS_DIR": str(cache / "ext")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"variant": variant, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantize", choices=("int8", "none"), default="int8")
    parser.add_argument("--variants", default="inductor,cpp_wrapper", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--op", choices=("cpp", "python"), default="cpp", help="how the int8 product stays opaque")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompt", type=int, default=40)
    parser.add_argument("--warm", action="store_true", help="run each variant again on its warm Inductor cache")
    parser.add_argument("--label", default="cpu-2core")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    from config import load_settings

    rows = []
    for variant in args.variants.split(","):
        cache = load_settings(env={}).home_dir / "inductor-bench" / f"{args.label}-{args.quantize}-{variant}"
        shutil.rmtree(cache, ignore_errors=True)
        row = run_child(args, variant, cache)
        if args.warm and "error" not in row:
            warm = run_child(args, variant, cache)
            row["warm_compile_s"] = warm.get("compile_s")
            if "error" not in warm:  # the warm run's steps are a second sample of the same comparison
                for key in row:
                    if key.endswith("_ms"):
                        row[key] += warm[key]
        shutil.rmtree(cache, ignore_errors=True)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_ms")}), flush=True)

    info = machine_info()
    setting = "int8 (float32 cache)" if args.quantize == "int8" else "bfloat16"
    lines = [
        f"### Compiled one-request decode step, {setting}, one thread (bench/compile_cpu.py, {args.label})",
        "",
        f"{info.get('cpu_model', '?')}; torch {rows[0].get('torch', '?')}; "
        + (f"int8 product: {args.op} op; " if args.quantize == "int8" else "")
        + f"{args.rounds} "
        f"alternating rounds of {args.steps} steps after a {args.prompt}-token prompt; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Wall time per step, min / median (ms); CPU time of the step's thread in brackets (median). *compiled*: "
        "the torch.compile'd function; *direct*: its compiled graph called without dynamo's guard check.",
        "",
        "| Variant | Compile cold / warm (s) | Eager | Compiled | Direct | Median speed-up compiled / direct | "
        "Same greedy tokens | Load before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def cell(row: dict[str, Any], kind: str) -> str:
        wall, used = row[f"{kind}_ms"], row[f"{kind}_cpu_ms"]
        return f"{min(wall):.2f} / {statistics.median(wall):.2f} ({statistics.median(used):.2f})"

    for row in rows:
        if "error" in row:
            lines.append(f"| {row['variant']} | failed: {' '.join(row['error'])[:120]} | | | | | | |")
            continue
        warm_s = f"{row['warm_compile_s']:.0f}" if row.get("warm_compile_s") is not None else "—"
        eager = statistics.median(row["eager_ms"])
        speedups = " / ".join(f"{eager / statistics.median(row[f'{kind}_ms']):.2f}x" for kind in ("compiled", "direct"))
        same = " / ".join(f"{row['same_tokens'][kind]}/{row['steps']}" for kind in ("compiled", "direct"))
        lines.append(
            f"| {row['variant']} | {row['compile_s']:.0f} / {warm_s} | {cell(row, 'eager')} | "
            f"{cell(row, 'compiled')} | {cell(row, 'direct')} | {speedups} | {same} | "
            f"{row['load_before'][0]:.1f} → {row['load_after'][0]:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(
        REPO_ROOT / "bench" / "results",
        f"compile-cpu-{args.label}-{args.quantize if args.quantize == 'int8' else 'bf16'}",
        text,
        {"machine": info, "quantize": args.quantize, "op": args.op, "rows": rows},
    )


if __name__ == "__main__":
    main()
