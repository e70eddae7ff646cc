"""The model's reading of brainstorm ideas (bots/brainstorm/reading.py) as a second view for finding themes: used when
the generator can read, read once per idea as it arrives, and never in the way when it cannot."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from test_brainstorm import Publisher, ThreadBot, WordEmbedder, script

from bots.brainstorm.reading import IdeaReader
from bots.brainstorm.themes import organize
from bots.store import Store
from chorus.compose import build_chorus
from generation.fake import FakeGenerator
from generation.models import ModelSpec
from generation.moderation import Blocklist
from generation.types import GenerationError
from support import settings_for, wait_until

TOPIC = "How can we get more people into our library?"
# Ideas whose words have nothing in common within a purpose (so sentence vectors of hashed words see no groups),
# but whose purpose a reader of the ideas would recognise.
PURPOSES = {
    "food": ["espresso bar", "vending snacks", "soup kitchen", "croissant brunch", "lemonade stand", "tea ceremony"],
    "hours": ["sunday opening", "midnight closing", "dawn access", "holiday schedule", "lunchtime shifts", "late keys"],
    "space": ["beanbag corner", "plant wall", "brighter lamps", "quiet pods", "wide tables", "cosy fireplace"],
}
TRUTH = {idea: purpose for purpose, ideas in PURPOSES.items() for idea in ideas}


class ReadingGenerator(FakeGenerator):
    """A FakeGenerator that can also read: each idea's vector points at its purpose (the rows a real model's hidden
    states would be grouped by), plus a little noise. Counts what it was asked to read."""

    def __init__(self, *, fail: bool = False, busy: bool = False) -> None:
        super().__init__(script)
        self.fail = fail
        self.busy = busy  # every slot stays taken: a read never starts
        self.cancelled = 0
        self.read_calls: list[list[str]] = []
        rng = np.random.default_rng(0)
        self._purpose = {name: rng.normal(size=32) for name in PURPOSES}
        self._rng = rng

    async def read(self, texts: Sequence[str], *, skip_last: int = 2) -> list[list[float]]:
        self.read_calls.append(list(texts))
        await asyncio.sleep(0)  # a real read happens on the engine's thread: other tasks run meanwhile
        if self.busy:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.fail:
            raise GenerationError("The model is not available.")
        rows = []
        for text in texts:
            idea = re.search(r"Suggestion: (.*)\n", text)
            assert idea is not None, text
            purpose = TRUTH.get(idea[1])
            base = self._purpose[purpose] if purpose else np.zeros(32)
            rows.append((base + self._rng.normal(scale=0.2, size=32)).tolist())
        return rows

    @property
    def ideas_read(self) -> list[str]:
        return [re.search(r"Suggestion: (.*)\n", text)[1] for call in self.read_calls for text in call]  # type: ignore[index]


async def _organize(generator: FakeGenerator, reader: IdeaReader | None) -> tuple[float, bool]:
    ideas = [(number, idea) for number, idea in enumerate(TRUTH)]
    organized = await organize(
        ideas,
        embedder=WordEmbedder(),
        generator=generator,
        topic=TOPIC,
        blocklist=Blocklist(()),
        merge_threshold=0.99,
        max_themes=8,
        embed_chars=1000,
        reader=reader,
    )
    found = {idea_id: number for number, theme in enumerate(organized.themes) for idea_id in theme.idea_ids}
    labels = [found[number] for number, _ in ideas]
    return adjusted_rand_score(list(TRUTH.values()), labels), organized.separated


async def test_themes_follow_the_models_reading_where_the_words_share_nothing() -> None:
    generator = ReadingGenerator()
    ari, separated = await _organize(generator, IdeaReader(generator))
    assert separated and ari == pytest.approx(1.0)
    # Without the reading, the same ideas fall into no clear groups.
    alone_ari, _ = await _organize(generator, None)
    assert alone_ari < 0.5


async def test_when_the_model_cannot_read_the_themes_come_from_sentence_vectors_alone() -> None:
    failing = ReadingGenerator(fail=True)
    assert await _organize(failing, IdeaReader(failing)) == await _organize(failing, None)
    plain = FakeGenerator(script)  # a remote generator cannot read either
    reader = IdeaReader(plain)
    assert not reader.available
    assert await reader.vectors(TOPIC, ["espresso bar"]) is None


async def test_a_round_end_does_not_wait_long_for_an_engine_with_no_free_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    import bots.brainstorm.themes as themes

    monkeypatch.setattr(themes, "READ_WAIT_S", 0.05)
    busy = ReadingGenerator(busy=True)
    assert await _organize(busy, IdeaReader(busy)) == await _organize(busy, None)
    assert busy.cancelled == 1  # the read was given up, not left waiting


async def test_each_idea_is_read_once_however_often_it_is_asked_for() -> None:
    generator = ReadingGenerator()
    reader = IdeaReader(generator)
    reader.prefetch(TOPIC, ["espresso bar"])
    reader.prefetch(TOPIC, ["plant wall"])
    # The round ends while the two early reads are still running: they are awaited, not read again.
    rows = await reader.vectors(TOPIC, ["espresso bar", "plant wall", "quiet pods", "espresso bar"])
    assert rows is not None and rows.shape == (4, 32)
    assert np.array_equal(rows[0], rows[3])
    assert sorted(generator.ideas_read) == ["espresso bar", "plant wall", "quiet pods"]
    again = await reader.vectors(TOPIC, ["quiet pods", "plant wall"])
    assert again is not None and np.array_equal(again[1], rows[1])
    assert len(generator.ideas_read) == 3
    # The same words under another topic are another reading.
    await reader.vectors("What should the team offsite be?", ["plant wall"])
    assert len(generator.ideas_read) == 4
    await reader.close()


async def _session(tmp_path: Path, generator: ReadingGenerator, **env: str) -> ThreadBot:
    """A brainstorm running in a bot whose generator can read, with six ideas posted by six people."""
    settings = settings_for(tmp_path, **env)
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, generator, embedder=WordEmbedder(), drops=False)
    await chorus.attach_publisher(Publisher())
    bot = ThreadBot(chorus)
    await bot.say(f"/brainstorm {TOPIC} --rounds 2")
    for number, idea in enumerate(list(TRUTH)[:6]):
        await bot.say(idea, as_user=f"user{number}")
    return bot


async def test_an_idea_posted_in_a_session_is_read_when_it_arrives(tmp_path: Path) -> None:
    generator = ReadingGenerator()
    bot = await _session(tmp_path, generator)
    try:
        await wait_until(lambda: len(generator.ideas_read) == 6)
        assert generator.ideas_read == list(TRUTH)[:6]
        await bot.say("n")  # the round ends: its themes need no new reading
        assert len(generator.ideas_read) == 6
    finally:
        await bot.chorus.close()


async def test_model_reads_ideas_off_reads_nothing(tmp_path: Path) -> None:
    generator = ReadingGenerator()
    bot = await _session(tmp_path, generator, CHORUS_BRAINSTORM__MODEL_READS_IDEAS="false")
    try:
        await bot.say("n")
        assert generator.read_calls == []
    finally:
        await bot.chorus.close()


@pytest.mark.slow
async def test_the_embedded_engine_reads_ideas_that_share_a_purpose_closer_than_ideas_that_do_not(
    embedded_spec: ModelSpec,
) -> None:
    """The real engine behind IdeaReader: one row of the model's width per idea, and the reading places two food
    ideas that share no word nearer each other than a food idea and an opening-hours idea."""
    from generation.engine import BatchingEngine

    engine = BatchingEngine(embedded_spec, max_batch=4, prefill_chunk=64)
    reader = IdeaReader(engine)
    try:
        ideas = ["a small café with good coffee and cake", "vending machine for snacks", "stay open until 9pm"]
        rows = await reader.vectors(TOPIC, ideas)
        assert rows is not None and rows.shape == (3, 576)  # SmolLM2-135M's hidden size
        centred = rows - rows.mean(axis=0)
        unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
        assert unit[0] @ unit[1] > unit[0] @ unit[2]
        assert np.array_equal(await reader.vectors(TOPIC, ideas[:1]), rows[:1])  # cached: read once
    finally:
        await reader.close()
        await engine.close()
