"""The fixed-shape decode step that CUDA graphs capture (generation/decode_graphs.py), run eagerly on the CPU: it
computes what the model computes, for any mix of decoding slots, across cache growth."""

from __future__ import annotations

from typing import Any

import pytest

from generation.decode_graphs import decoders_bucket
from generation.engine import _CACHE_BLOCK, _SlotModel
from tests.test_engine import _tiny_model


def _reference(model: Any, tokens: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0].float()


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_fixed_shape_decode_matches_hugging_face_for_scattered_slots(model_type: str) -> None:
    """Three sequences in slots 0, 2 and 5 decode together (padded to four), then one alone: every logit is the
    full forward's at that position."""
    import torch

    model = _tiny_model(model_type)
    runner = _SlotModel(model, max_batch=8, max_len=128, decode_graphs="eager")
    assert runner.graphs is not None and not runner.graphs.capture
    sequences = {0: [5, 17, 3, 99, 42, 7], 2: [11, 12, 13], 5: [21, 22, 23, 24, 25, 26, 27, 28, 29]}
    for slot, prompt in sequences.items():
        first = runner.forward([], [(slot, 0, prompt, True)])[0]
        sequences[slot] = [*prompt, int(first.argmax())]
    for _ in range(3):
        decoding = [(slot, ids[-1], len(ids) - 1) for slot, ids in sequences.items()]
        got = runner.forward(decoding, [])
        assert got.shape[0] == 3
        for row, ids in enumerate(sequences.values()):
            torch.testing.assert_close(got[row], _reference(model, ids)[-1], atol=1e-4, rtol=1e-4)
            ids.append(int(got[row].argmax()))
    assert list(runner.graphs.shapes) == [(4, 8, runner.capacity)]
    ids = sequences[2]  # alone now (the others finished): the cache shrinks to 4 rows
    got = runner.forward([(2, ids[-1], len(ids) - 1)], [])
    torch.testing.assert_close(got[0], _reference(model, ids)[-1], atol=1e-4, rtol=1e-4)
    assert list(runner.graphs.shapes) == [(1, 4, runner.capacity)]


def test_a_growing_cache_drops_every_step_shape_that_points_into_the_old_one() -> None:
    """Past a cache block the cache is reallocated; a captured graph would still write into the old tensors, so
    every shape is dropped, and decoding goes on correctly."""
    import torch

    model = _tiny_model("llama")
    runner = _SlotModel(model, max_batch=2, max_len=4 * _CACHE_BLOCK, decode_graphs="eager")
    assert runner.graphs is not None
    ids = [(7 * index) % 120 + 1 for index in range(_CACHE_BLOCK - 2)]
    ids.append(int(runner.forward([], [(0, 0, ids, True)])[0].argmax()))
    capacities = set()
    while len(ids) < _CACHE_BLOCK + 3:
        got = runner.forward([(0, ids[-1], len(ids) - 1)], [])
        torch.testing.assert_close(got[0], _reference(model, ids)[-1], atol=1e-4, rtol=1e-4)
        assert {capacity for _, _, capacity in runner.graphs.shapes} == {runner.capacity}
        capacities.add(runner.capacity)
        ids.append(int(got[0].argmax()))
    assert len(capacities) == 2  # it did grow while decoding
    runner.release()
    assert not runner.graphs.shapes


def test_decoders_are_padded_to_a_power_of_two_within_the_rows() -> None:
    assert [decoders_bucket(count, 8) for count in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    assert decoders_bucket(5, 6) == 6


def test_a_cpu_runner_captures_nothing_and_a_bad_setting_is_refused() -> None:
    model = _tiny_model("llama")
    assert _SlotModel(model, max_batch=2, max_len=64).graphs is None  # "auto" on a CPU: the engine's own step
    with pytest.raises(ValueError, match="decode_graphs must be one of"):
        _SlotModel(model, max_batch=2, max_len=64, decode_graphs="always")
