"""A stronger sentence embedder from a directory on this machine (`brainstorm.embedding_path`), as `chorus pull
--embedder` saves one: used in-process for brainstorm themes, served by `chorus serve`, checked by `chorus doctor`.

The models here are tiny random BERTs with MiniLM's tokenizer, saved the way sentence-transformers lays them out."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chorus.cli import _served_embedder, main
from config import ConfigError
from generation.embeddings import MiniLMEmbedder, build_embedder, local_embedder, locate_minilm
from generation.fake import FakeGenerator
from generation.serve import build_app
from generation.types import ModelUnavailable
from support import settings_for

pytestmark = pytest.mark.skipif(locate_minilm() is None, reason="needs the MiniLM package's tokenizer")


def tiny_sentence_model(directory: Path, *, pooling: str = "mean", hidden: int = 32) -> Path:
    """A random two-layer BERT with MiniLM's tokenizer; `pooling` written to 1_Pooling/config.json."""
    import transformers

    minilm = locate_minilm()
    assert minilm is not None
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    transformers.BertModel(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(minilm, local_files_only=True).save_pretrained(directory)
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_model(tmp_path_factory.mktemp("mean") / "tiny-mean", hidden=48)


async def test_a_model_directory_embeds_ideas_in_its_own_size_read_after_their_topic(
    tmp_path: Path, mean_model: Path
) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__EMBEDDING_PATH=str(mean_model))
    embedder = build_embedder(settings)
    assert isinstance(embedder, MiniLMEmbedder) and embedder.model_dir == mean_model
    ideas = ["a café corner", "longer opening hours at weekends"]
    alone = await embedder.embed(ideas)
    in_context = await embedder.embed_in_context("How can we get more people into our library?", ideas)
    assert [len(v) for v in alone] == [48, 48]  # the directory's model, not MiniLM's 384
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in alone + in_context)
    assert alone[0] != in_context[0]  # read after the topic, the idea lands elsewhere


async def test_cls_pooling_reads_each_idea_alone(tmp_path: Path) -> None:
    embedder = local_embedder(tiny_sentence_model(tmp_path / "tiny-cls", pooling="cls"))
    assert embedder.pooling == "cls"
    ideas = ["a café corner"]
    # The first token sums up everything it read, the topic included: ideas are embedded alone instead.
    in_context = await embedder.embed_in_context("How can we get more people into our library?", ideas)
    assert in_context == await embedder.embed(ideas)


def test_a_path_without_a_model_says_how_to_get_one(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__EMBEDDING_PATH=str(tmp_path / "nothing-here"))
    with pytest.raises(ModelUnavailable, match="chorus pull --embedder"):
        build_embedder(settings)


def test_a_service_and_a_path_together_are_refused_at_load(tmp_path: Path, mean_model: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        settings_for(
            tmp_path,
            CHORUS_BRAINSTORM__EMBEDDING_PATH=str(mean_model),
            CHORUS_BRAINSTORM__EMBEDDING_URL="http://127.0.0.1:9/v1",
        )


async def test_chorus_serve_shares_the_path_model_at_v1_embeddings(tmp_path: Path, mean_model: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__EMBEDDING_PATH=str(mean_model))
    app = build_app(FakeGenerator(), model_name="fake", embedder=_served_embedder(settings))
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/v1/embeddings", json={"model": "any", "input": ["a café corner"]})
        body = await response.json()
    assert response.status == 200, body
    assert body["model"] == "tiny-mean" and len(body["data"][0]["embedding"]) == 48


def test_doctor_checks_the_path_model(
    tmp_path: Path, mean_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHORUS_MODEL__SOURCE", "fake")
    broken = tmp_path / "broken"
    shutil.copytree(mean_model, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    monkeypatch.setenv("CHORUS_BRAINSTORM__EMBEDDING_PATH", str(broken))
    assert main(["doctor"]) == 2
    assert "embedding: FAILED — Could not load the embedding model" in capsys.readouterr().out
    monkeypatch.setenv("CHORUS_BRAINSTORM__EMBEDDING_PATH", str(mean_model))
    assert main(["doctor"]) == 0
    assert f"embedding: ok ({mean_model})" in capsys.readouterr().out
