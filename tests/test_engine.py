"""The batching engine: the admission queue and sampler alone (fast), the slot forward against Hugging Face on tiny
random models of each supported architecture, and the real SmolLM2 through BatchingEngine (slow)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from generation.engine import (
    AdmissionQueue,
    BatchingEngine,
    _int8_linear,
    _SlotModel,
    _StepThreads,
    native_bfloat16,
)
from generation.local import LocalGenerator, sample_rows
from generation.models import ModelSpec
from generation.types import (
    ChatMessage,
    Chunk,
    GenerationError,
    GenerationRequest,
    GeneratorBusy,
    ModelUnavailable,
    Priority,
)
from support import collect, wait_until

STORY = "Write a very long story about a dragon."
SLOGAN = "Write a slogan for a coffee shop."
COLORS = "Name three colors."


def ask(text: str, **options: Any) -> GenerationRequest:
    options.setdefault("temperature", 0.0)
    # Generous: a loaded CI machine must not turn a test about something else into a time-budget test.
    options.setdefault("time_budget_s", 600.0)
    return GenerationRequest(messages=(ChatMessage("user", text),), **options)


class Recorder:
    """Consumes streams in background tasks, noting every chunk and the order in which requests got text."""

    def __init__(self, engine: BatchingEngine) -> None:
        self.engine = engine
        self.chunks: dict[str, list[Chunk]] = {}
        self.first_text: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.requests: dict[str, GenerationRequest] = {}
        # Every chunk of every stream as (name, chunk), in the order they arrived.
        self.timeline: list[tuple[str, Chunk]] = []

    def start(self, name: str, request: GenerationRequest) -> None:
        self.requests[name] = request
        self.chunks[name] = []
        self.tasks[name] = asyncio.create_task(self._consume(name, request))

    async def _consume(self, name: str, request: GenerationRequest) -> None:
        async for chunk in self.engine.stream(request):
            if chunk.text and name not in self.first_text:
                self.first_text.append(name)
            self.chunks[name].append(chunk)
            self.timeline.append((name, chunk))

    def tokens(self, name: str) -> int:
        return max((chunk.tokens for chunk in self.chunks[name]), default=0)

    def finish(self, name: str) -> str | None:
        chunks = self.chunks[name]
        return chunks[-1].finish_reason if chunks else None

    def text(self, name: str) -> str:
        return "".join(chunk.text for chunk in self.chunks[name])

    async def wait(self, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*self.tasks.values())


# -- the admission queue, without a model ---------------------------------------------------------------------------


def test_higher_priority_is_admitted_first_whatever_the_arrival_order() -> None:
    waiting: AdmissionQueue[str] = AdmissionQueue()
    waiting.push("drop", Priority.SCHEDULED, "a")
    waiting.push("brainstorm", Priority.BRAINSTORM, "a")
    waiting.push("command", Priority.INTERACTIVE, "b")
    assert waiting.order() == ["command", "brainstorm", "drop"]
    assert [waiting.pop(), waiting.pop(), waiting.pop(), waiting.pop()] == ["command", "brainstorm", "drop", None]


def test_a_priority_cap_leaves_less_urgent_items_waiting() -> None:
    waiting: AdmissionQueue[str] = AdmissionQueue()
    waiting.push("drop", Priority.SCHEDULED, "a")
    assert waiting.pop(Priority.INTERACTIVE) is None
    waiting.push("command", Priority.INTERACTIVE, "b")
    assert waiting.pop(Priority.INTERACTIVE) == "command"
    assert waiting.pop() == "drop"


def test_conversations_take_turns_within_a_priority() -> None:
    waiting: AdmissionQueue[str] = AdmissionQueue()
    for name in ("a1", "a2", "a3"):
        waiting.push(name, Priority.SCHEDULED, "a")
    waiting.push("b1", Priority.SCHEDULED, "b")
    waiting.push("b2", Priority.SCHEDULED, "b")
    waiting.push("c1", Priority.SCHEDULED, "c")
    expected = ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert waiting.order() == expected
    assert [waiting.pop() for _ in expected] == expected
    assert len(waiting) == 0


def test_order_predicts_pops_as_items_come_and_go() -> None:
    waiting: AdmissionQueue[str] = AdmissionQueue()
    for index in range(5):
        waiting.push(f"a{index}", Priority.BRAINSTORM, "a")
    waiting.push("b0", Priority.BRAINSTORM, "b")
    assert waiting.pop() == "a0"
    waiting.push("c0", Priority.BRAINSTORM, "c")
    assert waiting.remove("a2") and not waiting.remove("a2")
    predicted = waiting.order()
    assert predicted == ["b0", "a1", "c0", "a3", "a4"]
    assert [waiting.pop() for _ in predicted] == predicted
    with pytest.raises(ValueError):
        waiting.push("x", Priority.INTERACTIVE, "a")
        waiting.push("x", Priority.INTERACTIVE, "a")


# -- requests refused before any model is involved ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"max_new_tokens": 0}, {"max_new_tokens": -5}, {"temperature": -1.0}, {"top_p": 0.0}, {"time_budget_s": 0.0}],
)
async def test_impossible_parameters_are_refused_at_once(tmp_path: Path, options: dict[str, Any]) -> None:
    engine = BatchingEngine(ModelSpec(path=tmp_path, name="none"))
    with pytest.raises(GenerationError):
        await anext(engine.stream(ask(SLOGAN, **options)))
    assert engine.queue_depth == 0
    await engine.close()


# -- the sampler and the slot forward on tiny random models --------------------------------------------------------


def test_sampler_is_greedy_at_temperature_zero_and_reproducible_with_a_seed() -> None:
    import torch

    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 4
    greedy = [ask("x"), ask("x"), ask("x"), ask("x")]
    assert sample_rows(torch, logits, greedy, [None] * 4) == logits.argmax(-1).tolist()

    def draw(top_p: float) -> list[int]:
        requests = [ask("x", temperature=1.0, top_p=top_p)] * 4
        generators = [torch.Generator().manual_seed(seed) for seed in (1, 2, 1, 2)]
        return sample_rows(torch, logits[:1].repeat(4, 1), requests, generators)

    assert draw(0.9) == draw(0.9)
    assert draw(1.0) == draw(1.0)  # top_p = 1 draws from the whole vocabulary
    first = draw(0.9)
    assert first[0] == first[2] and first[1] == first[3]
    assert draw(1e-6) == [int(logits[0].argmax())] * 4  # the most likely token always stays in the nucleus


def test_repetition_penalty_demotes_only_the_tokens_already_generated() -> None:
    import torch

    logits = torch.tensor([[0.0, 4.0, 3.0, -1.0, -1.5], [0.0, 4.0, 3.0, -1.0, -1.5]])
    plain, penalised = ask("x"), ask("x", repetition_penalty=2.0)
    # Row 0 generated token 1 before: 4.0 / 2 falls below token 2's 3.0. Row 1 has no penalty and keeps token 1.
    assert sample_rows(torch, logits, [penalised, plain], [None, None], [[1, 1], [1]]) == [2, 1]
    # A negative logit is multiplied, so a seen token never gains: token 3 (-1.0) drops below token 4 (-1.5).
    only_negative = torch.tensor([[-9.0, -9.0, -9.0, -1.0, -1.5]])
    assert sample_rows(torch, only_negative, [penalised], [None], [[3]]) == [4]
    assert sample_rows(torch, logits[:1], [penalised], [None], [[]]) == [1]  # nothing generated yet: no effect
    assert logits[0, 1] == 4.0  # the caller's logits are left as they were


def _tiny_model(model_type: str) -> Any:
    import torch
    import transformers

    common = {
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    }
    configs = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "mistral": lambda: transformers.MistralConfig(**common, sliding_window=None),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "qwen3": lambda: transformers.Qwen3Config(**common, head_dim=16),
        "gpt2": lambda: transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=1, n_head=4),
    }
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(configs[model_type]()).eval()


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_slot_forward_matches_hugging_face(model_type: str) -> None:
    """Chunked prefill into slot 2 while slot 0 decodes, then both decode: same logits as one full forward each."""
    import torch

    model = _tiny_model(model_type)
    runner = _SlotModel(model, max_batch=3, max_len=64)
    first = [5, 17, 3, 99, 42, 7]
    second = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    with torch.inference_mode():
        expected_first = model(torch.tensor([[*first, 1, 2]])).logits[0].float()
        expected_second = model(torch.tensor([[*second, 3]])).logits[0].float()
    got = runner.forward([], [(0, 0, first, True)])
    torch.testing.assert_close(got[0], expected_first[5], atol=1e-4, rtol=1e-4)
    got = runner.forward([(0, 1, 6)], [(2, 0, second[:4], False)])
    torch.testing.assert_close(got[0], expected_first[6], atol=1e-4, rtol=1e-4)
    got = runner.forward([(0, 2, 7)], [(2, 4, second[4:], True)])
    torch.testing.assert_close(got[0], expected_first[7], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], expected_second[9], atol=1e-4, rtol=1e-4)
    got = runner.forward([(2, 3, 10)], [])
    torch.testing.assert_close(got[0], expected_second[10], atol=1e-4, rtol=1e-4)


def test_a_one_token_prompt_slice_with_nothing_decoding_is_prefilled() -> None:
    """A prompt one token longer than a multiple of prefill_chunk ends with a one-token slice; alone in its step it
    used to crash the step (and fail the request) because a one-token step was taken for a decode."""
    import torch

    model = _tiny_model("llama")
    runner = _SlotModel(model, max_batch=2, max_len=64)
    prompt = [5, 17, 3, 99, 42]
    with torch.inference_mode():
        expected = model(torch.tensor([prompt])).logits[0].float()
    runner.forward([], [(1, 0, prompt[:4], False)])
    got = runner.forward([], [(1, 4, prompt[4:], True)])
    torch.testing.assert_close(got[0], expected[4], atol=1e-4, rtol=1e-4)


def test_a_slice_can_stop_after_some_layers_and_give_its_hidden_state() -> None:
    """What read() builds on: the last token's hidden state after `layers` layers, as Hugging Face computes it, for
    prompts in two slots at once (each attends only to its own tokens)."""
    import torch

    model = _tiny_model("llama")
    runner = _SlotModel(model, max_batch=2, max_len=64)
    first, second = [5, 17, 3, 99, 42], [11, 12, 13]
    with torch.inference_mode():
        expected = [
            model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, -1] for ids in (first, second)
        ]
    got = runner.forward([], [(0, 0, first, True), (1, 0, second, True)], layers=1)
    assert got.shape == (2, 64)
    torch.testing.assert_close(got[0], expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], expected[1], atol=1e-4, rtol=1e-4)


def _native_bfloat16() -> bool:
    import torch

    return native_bfloat16(torch, "cpu")


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_packed_bfloat16_slot_forward_matches_hugging_face_in_bfloat16(model_type: str) -> None:
    """The fast CPU path (oneDNN-packed bfloat16 weights, float32 residual) computes what the model computes."""
    import torch

    if not _native_bfloat16():
        pytest.skip("this CPU has no native bfloat16, so the engine never packs weights here")
    model = _tiny_model(model_type).to(torch.bfloat16)
    tokens = [5, 17, 3, 99, 42, 7, 1, 2]
    with torch.inference_mode():
        expected = model(torch.tensor([tokens])).logits[0].float()
    runner = _SlotModel(model, max_batch=3, max_len=64, pack=True)
    assert runner.packed and runner.float32_residual
    got = runner.forward([], [(1, 0, tokens[:6], True)])
    torch.testing.assert_close(got[0], expected[5], atol=2e-2, rtol=2e-2)
    got = runner.forward([(1, tokens[6], 6)], [])
    torch.testing.assert_close(got[0], expected[6], atol=2e-2, rtol=2e-2)
    assert got[0].argmax() == expected[6].argmax()


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_int8_slot_forward_tracks_hugging_face(model_type: str) -> None:
    """int8 weights (per output channel) with float32 activations stay close to the full-precision logits."""
    import torch

    model = _tiny_model(model_type)
    tokens = [5, 17, 3, 99, 42, 7, 1, 2]
    with torch.inference_mode():
        expected = model(torch.tensor([tokens])).logits[0].float()
    runner = _SlotModel(model, max_batch=3, max_len=64, quantize="int8")
    if not runner.quantized:
        pytest.skip("this torch has no quantized CPU engine")
    assert runner.float32_residual
    got = runner.forward([], [(1, 0, tokens[:6], True)])
    step = runner.forward([(1, tokens[6], 6)], [])
    for row, position in ((got[0], 5), (step[0], 6)):
        error = (row - expected[position]).norm() / expected[position].norm()
        assert error < 0.05, f"relative error {error:.3f} at position {position}"


def test_int8_keeps_a_few_outlier_input_channels_in_float32() -> None:
    """One input channel hundreds of times larger than the rest (what down_proj sees) sets the per-tensor int8
    scale for all channels and drowns them; taken out and multiplied in float32, the product stays close."""
    import torch

    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch has no x86 quantized CPU engine")
    torch.backends.quantized.engine = "x86"
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator) / 8
    x = torch.randn(6, 64, generator=generator)
    x[:, 5] *= 400
    expected = x @ weight.t()
    ranges = x.abs().amax(dim=0)

    def error(outliers: int) -> float:
        layer = _int8_linear(torch, weight, ranges, reduce_range=False, outliers=outliers)
        got = layer(x) - x[:, 5:6] @ weight[:, 5:6].t()  # judged on what the ordinary channels contribute
        want = expected - x[:, 5:6] @ weight[:, 5:6].t()
        return float((got - want).norm() / want.norm())

    assert error(1) < 0.02 < 0.1 < error(0)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_both_int8_kernels_keep_a_layer_close_to_float32_with_one_scale_per_row(reduce_range: bool) -> None:
    """With VNNI an int8 layer runs fbgemm's packed product (weights quantized per tensor after each row is scaled
    to its own range); without it, linear_dynamic on 7-bit inputs. Either way rows of very different sizes keep
    their precision: a per-tensor grid would round the small rows to nothing."""
    import torch

    from generation.engine import _fbgemm_product

    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch has no x86 quantized CPU engine")
    torch.backends.quantized.engine = "x86"
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(96, 64, generator=generator) / 8
    weight[:48] /= 200  # half the rows 200x smaller than the others
    layer = _int8_linear(torch, weight, reduce_range=reduce_range)
    assert (layer.fbgemm is not None) == (not reduce_range and _fbgemm_product(torch) is not None)
    for rows in (1, 5):
        x = torch.randn(rows, 64, generator=generator)
        got, want = layer(x), x @ weight.t()
        for half in (slice(0, 48), slice(48, 96)):
            error = float((got[:, half] - want[:, half]).norm() / want[:, half].norm())
            assert error < 0.03, f"{rows} rows, {half}: relative error {error:.3f}"


def test_top1_teacher_forced_picks_are_the_models_next_token_at_each_position() -> None:
    """What bench/quantize.py and the int8 test compare: fed a given continuation, each pick is the argmax of the
    model's own logits at that position; fed nothing, it continues greedily from its own picks."""
    import torch

    model = _tiny_model("llama")
    prompt, forced = [5, 17, 3, 99], [42, 7, 1, 2, 8]
    with torch.inference_mode():
        expected = model(torch.tensor([prompt + forced])).logits[0, len(prompt) - 1 :].argmax(-1).tolist()
    runner = _SlotModel(model, max_batch=2, max_len=64)
    assert runner.top1(prompt, len(forced), forced) == expected[: len(forced)]
    own = runner.top1(prompt, 4)
    assert runner.top1(prompt, 4, own) == own
    assert runner.cache_bytes == 0


def test_kv_cache_follows_the_slots_and_lengths_in_use_and_stays_correct_across_resizes() -> None:
    """Memory is what the running sequences need (rounded to blocks), never max_batch * max_len up front; growing
    and shrinking keep every cached token."""
    import torch

    model = _tiny_model("llama")
    runner = _SlotModel(model, max_batch=16, max_len=256)
    sequence = [(7 * i + 3) % 128 for i in range(80)]
    other = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    with torch.inference_mode():
        expected = model(torch.tensor([sequence])).logits[0].float()
    assert runner.cache_bytes == 0
    runner.forward([], [(0, 0, sequence[:40], True)])
    assert (runner.rows, runner.capacity) == (4, 64)
    small = runner.cache_bytes
    runner.forward([(0, sequence[40], 40)], [(9, 0, other, True)])
    assert (runner.rows, runner.capacity) == (12, 64)
    for position in range(41, 70):  # slot 0 grows past one block while slot 9 keeps decoding
        got = runner.forward([(0, sequence[position], position), (9, other[0], 10 + position - 41)], [])
    assert (runner.rows, runner.capacity) == (12, 128)
    torch.testing.assert_close(got[0], expected[69], atol=1e-4, rtol=1e-4)
    got = runner.forward([(0, sequence[70], 70)], [])  # slot 9 left: the cache shrinks to slot 0's rows
    assert (runner.rows, runner.capacity) == (4, 128)
    assert runner.cache_bytes == 2 * small
    torch.testing.assert_close(got[0], expected[70], atol=1e-4, rtol=1e-4)
    runner.release()
    assert runner.cache_bytes == 0


def test_other_architectures_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ModelUnavailable, match="Llama-family"):
        _SlotModel(_tiny_model("gpt2"), max_batch=2, max_len=64)


# -- the real model (slow) ------------------------------------------------------------------------------------------


def _close(generator: LocalGenerator) -> None:
    asyncio.run(generator.close())


@pytest.fixture(scope="module")
def engine(embedded_spec: ModelSpec) -> Iterator[BatchingEngine]:
    generator = BatchingEngine(embedded_spec, max_batch=8, max_queue=8, prefill_chunk=16)
    yield generator
    _close(generator)


@pytest.fixture(scope="module")
def narrow(embedded_spec: ModelSpec) -> Iterator[BatchingEngine]:
    """One slot: everything else waits in the queue, so admission order is visible."""
    generator = BatchingEngine(embedded_spec, max_batch=1, max_queue=8, prefill_chunk=8)
    yield generator
    _close(generator)


@pytest.fixture(scope="module")
def greedy_reference(embedded_spec: ModelSpec) -> dict[str, str]:
    """LocalGenerator's greedy output, 24 tokens, for the prompts the parity tests use."""
    local = LocalGenerator(embedded_spec)

    async def run() -> dict[str, str]:
        return {prompt: (await collect(local.stream(ask(prompt, max_new_tokens=24))))[0] for prompt in (STORY, SLOGAN)}

    try:
        return asyncio.run(run())
    finally:
        _close(local)


@contextlib.asynccontextmanager
async def occupied(engine: BatchingEngine, recorder: Recorder) -> AsyncIterator[None]:
    """Hold the narrow engine's only slot with a long request until the block ends."""
    recorder.start("holder", ask(STORY, max_new_tokens=200, priority=Priority.SCHEDULED))
    await wait_until(lambda: recorder.tokens("holder") > 0)
    try:
        yield
    finally:
        await engine.abort(recorder.requests["holder"].request_id)


@pytest.mark.slow
async def test_greedy_output_equals_local_generator_alone_and_in_a_batch(
    engine: BatchingEngine, greedy_reference: dict[str, str]
) -> None:
    alone, chunks = await collect(engine.stream(ask(STORY, max_new_tokens=24)))
    assert alone == greedy_reference[STORY]
    assert chunks[-1].finish_reason == "length" and chunks[-1].tokens == 24
    # Different prompt lengths, chunked prefill (16 tokens a step) and rows joining and leaving at different times.
    batch = [
        ask(STORY, max_new_tokens=24),
        ask(SLOGAN, max_new_tokens=24),
        ask("Tell me a joke about " + "very " * 30 + "tall giraffes.", max_new_tokens=5),
        ask(COLORS, max_new_tokens=40, temperature=0.8, seed=3),
    ]
    results = await asyncio.gather(*(collect(engine.stream(request)) for request in batch))
    assert results[0][0] == greedy_reference[STORY]
    assert results[1][0] == greedy_reference[SLOGAN]


@pytest.mark.slow
async def test_the_cuda_graph_step_run_eagerly_serves_the_same_greedy_text(
    embedded_spec: ModelSpec, greedy_reference: dict[str, str]
) -> None:
    """The fixed-shape decode step a GPU captures, run eagerly here, through the whole engine: one request, then
    rows joining and leaving a batch (padded decoder counts, cache growth and shrinking): LocalGenerator's text."""
    fixed = BatchingEngine(embedded_spec, max_batch=8, max_queue=8, prefill_chunk=16, decode_graphs="eager")
    try:
        alone, _ = await collect(fixed.stream(ask(STORY, max_new_tokens=24)))
        assert alone == greedy_reference[STORY]
        batch = [
            ask(SLOGAN, max_new_tokens=24),
            ask("Tell me a joke about " + "very " * 30 + "tall giraffes.", max_new_tokens=5),
            ask(STORY, max_new_tokens=24),
        ]
        results = await asyncio.gather(*(collect(fixed.stream(request)) for request in batch))
        assert results[0][0] == greedy_reference[SLOGAN] and results[2][0] == greedy_reference[STORY]
        assert fixed._runner is not None and fixed._runner.graphs is not None
        # Alone, 23 decode-only steps after the prompt's token; in the batch, those not shared with a prompt slice.
        assert fixed._runner.graphs.steps > 23 + 10
    finally:
        await fixed.close()


def _greedy_tokens(engine: BatchingEngine, prompt: str, count: int, forced: list[int] | None = None) -> list[int]:
    """The engine's top-1 token at each of `count` positions after the prompt (teacher-forced with `forced`)."""
    assert engine._ready() is None and engine._runner is not None
    return engine._runner.top1(engine._encode(ask(prompt))[0].tolist(), count, forced)


@pytest.mark.slow
def test_int8_weights_pick_the_same_next_token_as_float32_nearly_always(
    engine: BatchingEngine, embedded_spec: ModelSpec
) -> None:
    """engine.quantize = "int8" is a speed option, not a different model: teacher-forced on float32's own greedy
    text, it picks float32's next token at most positions (on an x86 CPU without VNNI, 8-bit activations used to
    saturate and it agreed on about 6%; per-tensor activations without smoothing, about 74%)."""
    quantized = BatchingEngine(embedded_spec, max_batch=1, max_queue=1, quantize="int8")
    try:
        assert quantized._ready() is None and quantized._runner is not None
        if not quantized._runner.quantized:
            pytest.skip("this torch has no quantized CPU engine")
        same = total = 0
        for prompt in (STORY, SLOGAN, COLORS, "Write a haiku about rain."):
            reference = _greedy_tokens(engine, prompt, 24)
            picked = _greedy_tokens(quantized, prompt, 24, forced=reference)
            same += sum(a == b for a, b in zip(picked, reference, strict=True))
            total += len(reference)
        assert same / total >= 0.75, f"int8 agrees with float32 on {same} of {total} next tokens"
    finally:
        _close(quantized)


@pytest.mark.slow
async def test_auto_dtype_is_bfloat16_on_a_native_cpu_and_its_greedy_text_tracks_float32(
    embedded_spec: ModelSpec, greedy_reference: dict[str, str]
) -> None:
    engine = BatchingEngine(embedded_spec, dtype="auto", max_batch=8, max_queue=8, prefill_chunk=16)
    try:
        await engine.warmup()
        expected = "bfloat16" if _native_bfloat16() else "float32"
        assert engine.dtype == expected
        assert f"({expected})" in (await engine.health()).detail
        story, _ = await collect(engine.stream(ask(STORY, max_new_tokens=24)))
        colors, _ = await collect(engine.stream(ask(COLORS, max_new_tokens=24)))
        # The first dozen words agree with float32 greedy decoding, and a short factual answer is the same.
        assert story.split()[:12] == greedy_reference[STORY].split()[:12]
        assert colors.startswith("1. Red")
        # Rows do not change each other's result: the same greedy text alone and in a mixed batch.
        batch = [ask(STORY, max_new_tokens=24), ask(COLORS, max_new_tokens=24), ask(SLOGAN, max_new_tokens=8)]
        results = await asyncio.gather(*(collect(engine.stream(request)) for request in batch))
        assert [results[0][0], results[1][0]] == [story, colors]
        # A longer greedy story does not fall into a loop: most of its word 4-grams are distinct.
        long, _ = await collect(engine.stream(ask(STORY, max_new_tokens=96)))
        words = long.split()
        grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
        assert len(words) > 40 and len(set(grams)) >= 0.8 * len(grams)
    finally:
        await engine.close()


@pytest.mark.slow
async def test_eight_concurrent_requests_finish_with_their_own_limits_and_stops(engine: BatchingEngine) -> None:
    prompts = [STORY, SLOGAN, COLORS, "Describe the sea.", "Write a haiku about rain.", STORY, COLORS, SLOGAN]
    requests = [ask(prompt, max_new_tokens=3 + 2 * index) for index, prompt in enumerate(prompts)]
    requests[6] = ask(COLORS, max_new_tokens=30, stop=("Blue",))
    results = await asyncio.gather(*(collect(engine.stream(request)) for request in requests))
    for request, (_, chunks) in zip(requests, results, strict=True):
        final = chunks[-1]
        assert [chunk.finish_reason for chunk in chunks].count(None) == len(chunks) - 1
        assert final.tokens <= request.max_new_tokens
        assert final.finish_reason in ("length", "stop")
        if final.finish_reason == "length":
            assert final.tokens == request.max_new_tokens
        assert all(chunk.request_id == request.request_id for chunk in chunks)
    text, chunks = results[6]
    assert chunks[-1].finish_reason == "stop" and "Blue" not in text and text.startswith("1. Red")
    assert engine.running == 0 and engine.queue_depth == 0


@pytest.mark.slow
async def test_a_request_joins_a_running_batch_without_stopping_it(engine: BatchingEngine) -> None:
    recorder = Recorder(engine)
    recorder.start("long", ask(STORY, max_new_tokens=60))
    await wait_until(lambda: recorder.tokens("long") >= 5)
    recorder.start("joiner", ask(SLOGAN, max_new_tokens=8))
    await wait_until(lambda: recorder.tokens("joiner") >= 1)
    at_first_token = recorder.tokens("long")
    assert recorder.finish("long") is None  # the joiner did not wait for the running request
    await wait_until(lambda: recorder.finish("joiner") is not None)
    assert recorder.tokens("long") > at_first_token  # and the running request kept decoding beside it
    await recorder.wait()
    assert recorder.finish("long") == "length" and recorder.tokens("long") == 60


@pytest.mark.slow
async def test_read_gives_the_models_hidden_state_and_running_requests_are_unchanged(
    engine: BatchingEngine, embedded_spec: ModelSpec, greedy_reference: dict[str, str]
) -> None:
    """Brainstorm themes use read(): it must equal the model's own hidden state (two layers from the top), whether
    texts are read together or alone, and a request decoding meanwhile must produce exactly its usual text."""
    import torch
    import transformers

    texts = ["Suggestion: a café corner with good coffee", "Suggestion: stay open till 9pm", "ok"]
    recorder = Recorder(engine)
    recorder.start("story", ask(STORY, max_new_tokens=24))
    await wait_until(lambda: recorder.tokens("story") >= 2)
    together = await engine.read(texts)
    alone = [(await engine.read([text]))[0] for text in texts]
    await recorder.wait()
    assert recorder.text("story") == greedy_reference[STORY]

    tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_spec.path)
    model = transformers.AutoModelForCausalLM.from_pretrained(embedded_spec.path, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = [
            model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[-3][0, -1]
            for text in texts
        ]
    for row, single, reference in zip(together, alone, expected, strict=True):
        assert len(row) == model.config.hidden_size
        torch.testing.assert_close(torch.tensor(row), reference, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(torch.tensor(single), torch.tensor(row), atol=2e-3, rtol=2e-3)
    with pytest.raises(GenerationError, match="layers"):
        await engine.read(texts, skip_last=99)
    assert await engine.read([]) == []


def _repeated_trigrams(text: str) -> int:
    words = text.lower().split()
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(trigrams) - len(set(trigrams))


@pytest.mark.slow
async def test_repetition_penalty_breaks_a_greedy_loop(engine: BatchingEngine) -> None:
    """Greedy decoding of a list loops on the small model; the penalty makes it say something new instead."""
    prompt = "List fifty words that rhyme with cat."
    plain, _ = await collect(engine.stream(ask(prompt, max_new_tokens=64)))
    penalised, _ = await collect(engine.stream(ask(prompt, max_new_tokens=64, repetition_penalty=1.3)))
    assert _repeated_trigrams(plain) >= 5, plain  # the degenerate case this is about
    assert _repeated_trigrams(penalised) < _repeated_trigrams(plain) / 2, penalised


@pytest.mark.slow
async def test_same_seed_same_text(engine: BatchingEngine) -> None:
    def sampled() -> GenerationRequest:
        return ask(STORY, max_new_tokens=16, temperature=0.9, seed=42)

    results = await asyncio.gather(collect(engine.stream(sampled())), collect(engine.stream(sampled())))
    again, _ = await collect(engine.stream(sampled()))
    assert results[0][0] == results[1][0] == again


@pytest.mark.slow
async def test_a_request_that_can_never_fit_fails_at_once(embedded_spec: ModelSpec) -> None:
    small = BatchingEngine(embedded_spec, max_batch=2, max_seq_len=64)
    try:
        with pytest.raises(GenerationError, match=r"prompt of \d+ tokens \+ 40 new tokens exceeds .* 64 tokens"):
            await anext(small.stream(ask(SLOGAN, max_new_tokens=40)))
        text, chunks = await collect(small.stream(ask(SLOGAN, max_new_tokens=8)))
        assert chunks[-1].finish_reason in ("length", "stop") and text
        assert small.running == 0 and small.queue_depth == 0
    finally:
        await small.close()


def test_step_threads_follow_whichever_count_is_faster_now() -> None:
    """A lone user's decode step runs on the thread count that has been faster lately: two threads on an idle
    host, one when the other core is busy (its partner thread spins while descheduled), and back again."""
    chooser = _StepThreads((1, 2), probe_every=10, probe_steps=2)
    step_ms = {1: 16.0, 2: 12.0}  # idle: two threads win
    picked = []
    for step in range(300):
        if step == 100:
            step_ms = {1: 17.0, 2: 90.0}  # another process takes the second core
        elif step == 200:
            step_ms = {1: 16.0, 2: 12.0}  # and leaves
        count = chooser.next()
        picked.append(count)
        chooser.record(count, step_ms[count] / 1000)
    assert set(picked[:4]) == {1, 2}  # each count measured first
    assert picked[50:100].count(2) >= 45  # idle: two threads, with short and rarer probes of one
    assert picked[105:200].count(1) >= 88  # busy: one thread within a few steps
    assert picked[290:300].count(2) == 10  # idle again: found by a probe


@pytest.mark.slow
async def test_every_kind_of_step_runs_on_the_thread_count_its_timings_favour(embedded_spec: ModelSpec) -> None:
    """One user's decode, a few rows and a prompt slice each run on the thread count that has been faster for that
    kind of step, and every step is timed for the next choice; health still shows the configured count."""
    import torch

    from generation.engine import _thread_bucket

    two = BatchingEngine(embedded_spec, max_batch=2, prefill_chunk=256, threads=2)
    steps: list[tuple[int, int]] = []
    original = two._forward

    def record(decoding: list[Any], prefills: list[Any]) -> Any:
        steps.append((len(decoding) + sum(len(piece) for _, _, piece, _ in prefills), torch.get_num_threads()))
        return original(decoding, prefills)

    two._forward = record  # type: ignore[method-assign]
    try:
        for fast in (1, 2, {1: 2, 2: 1, 3: 1}):
            choosers = {}
            for bucket in (1, 2, 3):
                wanted = fast if isinstance(fast, int) else fast[bucket]
                choosers[bucket] = chooser = _StepThreads((1, 2))
                for count in (1, 2):  # as if both had been measured: `wanted` far quicker
                    for _ in range(chooser.probe_steps):
                        chooser.record(count, 0.001 if count == wanted else 10.0)
            two._step_threads = choosers
            timed = sum(sum(chooser.samples.values()) for chooser in choosers.values())
            steps.clear()
            await asyncio.gather(
                collect(two.stream(ask(SLOGAN, max_new_tokens=6))),
                collect(two.stream(ask(STORY, max_new_tokens=12))),
            )
            text, _ = await collect(two.stream(ask(SLOGAN, max_new_tokens=6)))
            assert text
            for bucket in (1, 2, 3):
                wanted = fast if isinstance(fast, int) else fast[bucket]
                used = {threads for tokens, threads in steps if _thread_bucket(tokens) == bucket}
                assert used == {wanted}, f"steps of kind {bucket} ran on {used}, not {wanted}"
            assert sum(sum(chooser.samples.values()) for chooser in choosers.values()) - timed == len(steps)
        assert "2 threads" in (await two.health()).detail  # what was configured, not the step's own setting
    finally:
        await two.close()


@pytest.mark.slow
async def test_a_failed_step_errors_the_batch_and_the_engine_keeps_serving(
    engine: BatchingEngine, greedy_reference: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = engine._forward
    calls = 0

    def fail_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected fault")
        return original(*args)

    monkeypatch.setattr(engine, "_forward", fail_once)
    results = await asyncio.gather(
        collect(engine.stream(ask(STORY, max_new_tokens=30))), collect(engine.stream(ask(SLOGAN, max_new_tokens=30)))
    )
    for _, chunks in results:
        assert chunks[-1].finish_reason == "error" and "injected fault" in (chunks[-1].error or "")
    assert engine.running == 0
    text, _ = await collect(engine.stream(ask(STORY, max_new_tokens=24)))
    assert text == greedy_reference[STORY]


@pytest.mark.slow
async def test_abort_during_prefill_frees_the_slot_for_the_next_request(narrow: BatchingEngine) -> None:
    recorder = Recorder(narrow)
    long_prompt = "Summarize this: " + "the quick brown fox jumps over the lazy dog. " * 30
    recorder.start("prefilling", ask(long_prompt, max_new_tokens=8))
    await wait_until(lambda: narrow.running == 1)
    recorder.start("next", ask(SLOGAN, max_new_tokens=4))
    await wait_until(lambda: narrow.queue_depth == 1)
    assert recorder.tokens("prefilling") == 0  # ~300 prompt tokens at 8 a step: still prefilling
    await narrow.abort(recorder.requests["prefilling"].request_id)
    await recorder.wait()
    assert recorder.finish("prefilling") == "abort" and recorder.tokens("prefilling") == 0
    assert recorder.finish("next") in ("length", "stop") and recorder.text("next")


@pytest.mark.slow
async def test_abort_during_decode_frees_the_slot_within_a_step(narrow: BatchingEngine) -> None:
    recorder = Recorder(narrow)
    recorder.start("decoding", ask(STORY, max_new_tokens=200))
    await wait_until(lambda: recorder.tokens("decoding") >= 2)
    recorder.start("next", ask(SLOGAN, max_new_tokens=4))
    await wait_until(lambda: narrow.queue_depth == 1)
    await narrow.abort(recorder.requests["decoding"].request_id)
    await recorder.wait()
    assert recorder.finish("decoding") == "abort" and recorder.tokens("decoding") < 200
    assert recorder.finish("next") in ("length", "stop")


@pytest.mark.slow
async def test_an_interactive_request_overtakes_queued_scheduled_ones(narrow: BatchingEngine) -> None:
    recorder = Recorder(narrow)
    async with occupied(narrow, recorder):
        for index in range(3):
            recorder.start(f"drop{index}", ask(COLORS, max_new_tokens=2, priority=Priority.SCHEDULED))
            await wait_until(lambda index=index: narrow.queue_depth == index + 1)
        recorder.start("command", ask(SLOGAN, max_new_tokens=2, priority=Priority.INTERACTIVE))
        await wait_until(lambda: narrow.queue_depth == 4)
    await recorder.wait()
    assert recorder.first_text == ["holder", "command", "drop0", "drop1", "drop2"]


@pytest.mark.slow
async def test_conversations_alternate_and_queue_positions_count_down(narrow: BatchingEngine) -> None:
    recorder = Recorder(narrow)
    names = ["a1", "a2", "a3", "b1", "b2"]
    async with occupied(narrow, recorder):
        for count, name in enumerate(names, start=1):
            # Same class as the holder, so nobody preempts it: this is about turns within a class.
            recorder.start(name, ask(COLORS, max_new_tokens=2, conversation_key=name[0], priority=Priority.SCHEDULED))
            await wait_until(lambda count=count: narrow.queue_depth == count)
        await wait_until(lambda: all(recorder.chunks[name] for name in names))
        assert [recorder.chunks[name][-1].queue_position for name in names] == [1, 3, 5, 2, 4]
    await recorder.wait()
    assert recorder.first_text == ["holder", "a1", "b1", "a2", "b2", "a3"]
    for name in names:
        positions = [chunk.queue_position for chunk in recorder.chunks[name] if chunk.queue_position is not None]
        assert positions == sorted(positions, reverse=True) and positions[-1] == 1
        assert all(not chunk.text for chunk in recorder.chunks[name] if chunk.queue_position is not None)
    # Once requests have finished, the wait comes with an estimate.
    late = [chunk for chunk in recorder.chunks["a3"] if chunk.queue_position is not None]
    assert late[-1].eta_s is not None and late[-1].eta_s >= 0


@pytest.mark.slow
async def test_a_full_queue_refuses_exactly_the_overflow(embedded_spec: ModelSpec) -> None:
    small = BatchingEngine(embedded_spec, max_batch=1, max_queue=2)
    try:
        requests = [ask(COLORS, max_new_tokens=3) for _ in range(5)]
        outcomes = await asyncio.gather(
            *(collect(small.stream(request)) for request in requests), return_exceptions=True
        )
        busy = [outcome for outcome in outcomes if isinstance(outcome, GeneratorBusy)]
        served = [outcome for outcome in outcomes if isinstance(outcome, tuple)]
        assert len(busy) == 2 and len(served) == 3
        for _, chunks in served:
            assert [chunk.finish_reason is not None for chunk in chunks].count(True) == 1
            assert chunks[-1].finish_reason in ("length", "stop")
        assert small.running == 0 and small.queue_depth == 0
        health = await small.health()
        assert health.ok and "0 running, 0 waiting" in health.detail
    finally:
        await small.close()


@pytest.mark.slow
async def test_reserved_slots_let_a_command_start_while_drops_fill_the_rest(embedded_spec: ModelSpec) -> None:
    engine = BatchingEngine(embedded_spec, max_batch=4, max_queue=8, prefill_chunk=32)  # reserves 1 slot
    recorder = Recorder(engine)
    try:
        for index in range(4):
            recorder.start(f"drop{index}", ask(STORY, max_new_tokens=120, priority=Priority.SCHEDULED))
        await wait_until(lambda: engine.running == 3 and engine.queue_depth == 1)
        recorder.start("command", ask(SLOGAN, max_new_tokens=4, priority=Priority.INTERACTIVE))
        await wait_until(lambda: "command" in recorder.first_text)
        assert recorder.finish("drop0") is None and "drop3" not in recorder.first_text
    finally:
        for request in recorder.requests.values():
            await engine.abort(request.request_id)
        await recorder.wait()
        await engine.close()


@pytest.mark.slow
async def test_500_at_once_against_a_queue_of_64_refuses_exactly_the_overflow(embedded_spec: ModelSpec) -> None:
    engine = BatchingEngine(embedded_spec, max_batch=16, max_queue=64, prefill_chunk=256)
    try:
        await engine.warmup()
        # 6 tokens each: the first answer is several decode steps away, long after all 500 were submitted.
        requests = [ask(COLORS, max_new_tokens=6, conversation_key=f"c{i % 7}") for i in range(500)]
        async with asyncio.timeout(300):
            outcomes = await asyncio.gather(
                *(collect(engine.stream(request)) for request in requests), return_exceptions=True
            )
        busy = [o for o in outcomes if isinstance(o, GeneratorBusy)]
        served = [o for o in outcomes if isinstance(o, tuple)]
        assert len(busy) == 500 - 80 and len(served) == 80, [type(o).__name__ for o in outcomes if o not in served]
        answered = [chunks[-1].request_id for _, chunks in served]
        assert len(set(answered)) == 80, "no request is answered twice"
        for _, chunks in served:
            assert [chunk.finish_reason is not None for chunk in chunks].count(True) == 1
            assert chunks[-1].finish_reason in ("length", "stop")
        assert engine.running == 0 and engine.queue_depth == 0
    finally:
        await engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "auto"])
async def test_a_command_preempts_a_drop_which_then_continues_exactly(embedded_spec: ModelSpec, dtype: str) -> None:
    engine = BatchingEngine(
        embedded_spec, dtype=dtype, max_batch=1, max_queue=4, prefill_chunk=16, interactive_reserve=0
    )
    recorder = Recorder(engine)
    try:
        alone, _ = await collect(engine.stream(ask(STORY, max_new_tokens=24)))
        recorder.start("drop", ask(STORY, max_new_tokens=24, priority=Priority.SCHEDULED))
        await wait_until(lambda: recorder.tokens("drop") >= 8)
        recorder.start("command", ask(SLOGAN, max_new_tokens=4, priority=Priority.INTERACTIVE))
        await recorder.wait()
        assert recorder.first_text == ["drop", "command"]
        drop_chunks = recorder.chunks["drop"]
        assert recorder.finish("command") in ("length", "stop")
        # The command ran to its end while the drop waited: the drop produced text before the command's first chunk
        # and after its last one, and nothing in between.
        names = [name for name, chunk in recorder.timeline if chunk.text or chunk.finish_reason]
        command_first, command_last = names.index("command"), len(names) - 1 - names[::-1].index("command")
        assert "drop" in names[:command_first] and "drop" in names[command_last + 1 :]
        assert set(names[command_first : command_last + 1]) == {"command"}
        # The drop was paused, recomputed its cache, and went on from where it stopped: nothing lost or repeated. In
        # float32 that is the same greedy text as alone. In bfloat16 a cache recomputed by a prompt slice is not
        # bit-identical to one built a token at a time where the CPU runs the two shapes on different kernels (AMX
        # tiles for a slice, AVX-512 for one row on a Sapphire Rapids VM), so the greedy text may part from the
        # uninterrupted one after the pause; everything it wrote before the pause is kept as it was.
        before_pause = "".join(
            chunk.text
            for name, chunk in recorder.timeline[: [n for n, _ in recorder.timeline].index("command")]
            if name == "drop"
        )
        assert before_pause and alone.startswith(before_pause)
        if dtype == "float32":
            assert recorder.text("drop") == alone
        assert recorder.finish("drop") == "length" and drop_chunks[-1].tokens == 24
        assert not any(c.queue_position for c in drop_chunks), "a paused request shows no queue position"
    finally:
        await engine.close()


@pytest.mark.slow
async def test_aborting_a_paused_drop_ends_it_without_waiting_for_a_slot(embedded_spec: ModelSpec) -> None:
    engine = BatchingEngine(embedded_spec, max_batch=1, max_queue=4, prefill_chunk=16, interactive_reserve=0)
    recorder = Recorder(engine)
    try:
        recorder.start("drop", ask(STORY, max_new_tokens=200, priority=Priority.SCHEDULED))
        await wait_until(lambda: recorder.tokens("drop") >= 2)
        recorder.start("command", ask(STORY, max_new_tokens=200, priority=Priority.INTERACTIVE))
        await wait_until(lambda: recorder.tokens("command") >= 1)
        await engine.abort(recorder.requests["drop"].request_id)
        await wait_until(lambda: recorder.finish("drop") == "abort")
        assert recorder.finish("command") is None, "the command is still running"
        await engine.abort(recorder.requests["command"].request_id)
        await recorder.wait()
        assert engine.running == 0 and engine.queue_depth == 0
    finally:
        await engine.close()


@pytest.mark.slow
async def test_a_queued_request_whose_budget_runs_out_ends_with_time_while_waiting(narrow: BatchingEngine) -> None:
    """The time budget covers queueing: a request waiting behind a long one ends with "time" without a slot."""
    await narrow.warmup()
    recorder = Recorder(narrow)
    try:
        recorder.start("long", ask(STORY, max_new_tokens=2000))
        await wait_until(lambda: recorder.tokens("long") >= 1, timeout_s=60)
        recorder.start("waiting", ask(SLOGAN, max_new_tokens=8, time_budget_s=0.5))
        await wait_until(lambda: recorder.finish("waiting") is not None, timeout_s=60)
        assert recorder.finish("waiting") == "time"
        assert recorder.tokens("waiting") == 0 and recorder.text("waiting") == ""
        assert recorder.finish("long") is None, "the running request kept its slot"
    finally:
        for request in recorder.requests.values():
            await narrow.abort(request.request_id)
        await recorder.wait()
