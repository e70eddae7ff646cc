"""Decode steps replayed from CUDA graphs.

On a GPU an eager decode step is mostly launch overhead: the batching engine's slot forward ran a Llama-3.1-8B-shaped
model at 48–54 tokens/s at batch 1 on an H200, where the same weights allow about 320 (bench/gpu.py,
bench/results/gpu-nvidia-h200.md). A decode-only step has shapes fixed by three numbers: decoders (padded to a power
of two), the cache's rows and its capacity. For each such shape the step is run once as usual, captured as a CUDA
graph, and replayed afterwards: one launch per token instead of hundreds.

The captured step reads its inputs from static buffers (tokens, slots, positions, each row's length) and attends
over the cache's whole capacity with a length mask, so every step of a shape replays the same graph. Padding
repeats the last decoder, which writes the same key and value to the same place again. A graph holds the cache's
tensors by address, so the runner drops every graph when it reallocates or releases the cache.

`capture=False` runs the same static step eagerly: the tests use it on a CPU to check the step against the engine's
own.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# Graphs kept at once (least recently used dropped first). A shape is (decoders bucket, rows, capacity); the cache
# grows in blocks, so a long answer meets a new shape every block and the old ones go unused.
MAX_GRAPHS = 24


def length_bias(torch: Any, lengths: Any, span: int) -> Any:
    """Added to decode attention's scores: 0 where a row may attend, -inf at and past its length
    ([rows, 1, 1, span], float32)."""
    positions = torch.arange(span, device=lengths.device)[None, None, None, :]
    bias = torch.zeros(lengths.shape[0], 1, 1, span, device=lengths.device)
    return bias.masked_fill_(positions >= lengths[:, None, None, None], float("-inf"))


def decoders_bucket(count: int, rows: int) -> int:
    """Decoders padded to a power of two, at most the cache's rows, so a few graphs serve every count."""
    size = 1
    while size < count:
        size *= 2
    return min(size, rows)


class _Shape:
    """One step shape's static buffers, its output and (once captured) its graph."""

    def __init__(self, torch: Any, device: Any, size: int, rows: int) -> None:
        self.size, self.rows = size, rows
        # One buffer, so a step's inputs reach the device in one copy: tokens, slots, positions, then lengths.
        self.inputs = torch.zeros(3 * size + rows, dtype=torch.long, device=device)
        self.tokens = self.inputs[:size]
        self.slots = self.inputs[size : 2 * size]
        self.positions = self.inputs[2 * size : 3 * size]
        self.lengths = self.inputs[3 * size :]
        self.logits: Any = None
        self.graph: Any = None


class DecodeGraphs:
    """Decode-only steps of one _SlotModel (generation/engine.py), captured per shape and replayed."""

    def __init__(self, runner: Any, *, capture: bool, limit: int = MAX_GRAPHS) -> None:
        self.runner = runner
        self.capture = capture
        self.limit = limit
        self.shapes: OrderedDict[tuple[int, int, int], _Shape] = OrderedDict()
        self.pool = runner.torch.cuda.graph_pool_handle() if capture else None
        self.captured = 0  # graphs captured so far
        self.steps = 0  # decode steps run through this class

    def clear(self) -> None:
        """Forget every graph: the cache they point into is about to be replaced or freed."""
        self.shapes.clear()

    def run(self, decoding: list[tuple[int, int, int]]) -> Any:
        """Float32 logits for each (slot, token, position) in `decoding`, as the runner's own step returns them."""
        runner, torch = self.runner, self.runner.torch
        self.steps += 1
        count = len(decoding)
        size = decoders_bucket(count, runner.rows)
        key = (size, runner.rows, runner.capacity)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = _Shape(torch, runner.device, size, runner.rows)
            while len(self.shapes) > self.limit:
                self.shapes.popitem(last=False)
        else:
            self.shapes.move_to_end(key)
        padded = decoding + [decoding[-1]] * (size - count)
        lengths = [1] * runner.rows  # rows not decoding attend to position 0 and are dropped
        for slot, _, position in decoding:
            lengths[slot] = position + 1
        values = [token for _, token, _ in padded] + [slot for slot, _, _ in padded]
        values += [position for _, _, position in padded] + lengths
        shape.inputs.copy_(torch.tensor(values, dtype=torch.long))
        if not self.capture:
            return self._step(shape)[:count]
        if shape.graph is None:
            self._capture(shape)
        shape.graph.replay()
        # A clone: the next replay of any graph in the shared pool may reuse this output's memory.
        return shape.logits[:count].clone()

    def _capture(self, shape: _Shape) -> None:
        torch = self.runner.torch
        if not any(other.graph is not None for other in self.shapes.values()):
            # The allocator deletes a pool once no graph uses it, and cannot capture into a deleted one.
            self.pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._step(shape)  # warm-up outside the graph; writes the same keys and values the replay will
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work another thread of the process does meanwhile does not break this capture.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            shape.logits = self._step(shape)
        shape.graph = graph
        self.captured += 1

    def _step(self, shape: _Shape) -> Any:
        """The decode step with every shape fixed: all inputs come from the shape's buffers."""
        runner, torch = self.runner, self.runner.torch
        hidden = runner.model.model.embed_tokens(shape.tokens)
        if runner.float32_residual:
            hidden = hidden.float()
        cos, sin = runner.rope[0][shape.positions], runner.rope[1][shape.positions]
        bias = length_bias(torch, shape.lengths, runner.capacity)
        for index, step in enumerate(runner.plan):
            query, key, value = runner.project(step, hidden, cos, sin)
            keys, values = runner.keys[index], runner.values[index]
            keys[shape.slots, :, shape.positions] = key.to(keys.dtype)
            values[shape.slots, :, shape.positions] = value.to(values.dtype)
            out = runner.decode_attention(query.to(keys.dtype), keys, values, shape.slots, bias)
            hidden = hidden + step.attend_out(out)
            gate, up = step.mlp_in(hidden).chunk(2, dim=-1)
            hidden = hidden + step.mlp_out(step.act(gate) * up)
        return runner.head(hidden).float()
