"""`chorus pull` against a fake Hugging Face Hub on 127.0.0.1 serving a tiny random Llama the test builds.

The real huggingface_hub client talks to the fake (HF_ENDPOINT), so the test covers the real download protocol:
revision lookup, tree listing, HEAD for metadata, then the files. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from generation.models import MARKER_NAME, ModelSpec

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "chorus-test/tiny-llama"


class FakeHub:
    """Serves one model repository the way the Hub's API and resolve endpoints do; records every request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                hub.requests.append((self.command, path))
                if path.startswith(f"/api/models/{REPO}/revision/"):
                    siblings = [{"rfilename": name} for name in hub.files]
                    self._send(json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode(), body)
                elif path.startswith(f"/api/models/{REPO}/tree/"):
                    tree = [
                        {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in hub.files.items()
                    ]
                    self._send(json.dumps(tree).encode(), body)
                elif path.startswith(f"/{REPO}/resolve/"):
                    name = path.split("/resolve/", 1)[1].split("/", 1)[1]
                    data = hub.files.get(name)
                    if data is None:
                        self._send(b'{"error": "Entry not found"}', body, status=404)
                        return
                    etag = hashlib.sha256(data).hexdigest()
                    self._send(data, body, headers={"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'})
                else:
                    self._send(
                        b'{"error": "Repository not found"}', body, status=404, headers={"X-Error-Code": "RepoNotFound"}
                    )

            def _send(self, data: bytes, body: bool, status: int = 200, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tiny_llama(tmp: Path, tokenizer_dir: Path) -> dict[str, bytes]:
    """A random two-layer Llama with the embedded model's tokenizer (so it has a chat template), saved as a repo."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config)
    out = tmp / "repo"
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out / name)
    return {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}


@pytest.fixture
def hub(tmp_path: Path, embedded_spec: ModelSpec) -> Iterator[FakeHub]:
    with FakeHub(_tiny_llama(tmp_path, embedded_spec.path)) as fake:
        yield fake


def _pull(args: list[str], home: Path, endpoint: str) -> subprocess.CompletedProcess[str]:
    # The suite turns the hub off in its own process (import_transformers); the pull runs as a user would.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "HF_", "TRANSFORMERS_"))}
    env |= {"CHORUS_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HOME": str(home / "hf"), "HF_HUB_DISABLE_XET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "chorus", "pull", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_pull_downloads_verifies_converts_once_and_prints_the_model_path(tmp_path: Path, hub: FakeHub) -> None:
    home = tmp_path / "home"
    result = _pull([REPO], home, hub.url)
    assert result.returncode == 0, result.stderr
    target = home / "models" / f"tiny-llama-{COMMIT[:12]}"
    assert f'path = "{target}"' in result.stdout and 'source = "hf"' in result.stdout
    assert (target / "config.json").is_file() and any(target.glob("*.safetensors"))
    assert json.loads((target / MARKER_NAME).read_text())["sha256"] == COMMIT
    assert ("GET", f"/{REPO}/resolve/{COMMIT}/config.json") in hub.requests

    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
    assert model.config.hidden_size == 16

    # A second pull finds the prepared copy and does not convert again.
    again = _pull([REPO], home, hub.url)
    assert again.returncode == 0 and "Already prepared" in again.stderr


@pytest.mark.slow
def test_pull_of_an_unknown_model_says_so_without_a_traceback(tmp_path: Path, hub: FakeHub) -> None:
    result = _pull(["chorus-test/no-such-model"], tmp_path / "home", hub.url)
    assert result.returncode == 2
    assert "chorus-test/no-such-model was not found" in result.stderr and "Traceback" not in result.stderr
    bad = _pull(["not a hub id"], tmp_path / "home", hub.url)
    assert bad.returncode == 2 and "owner/name" in bad.stderr


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_pull_in_offline_mode_says_which_setting_stops_it(tmp_path: Path, variable: str) -> None:
    with FakeHub({}) as fake:
        home = tmp_path / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "HF_", "TRANSFORMERS_"))}
        env |= {"CHORUS_HOME": str(home), "HF_ENDPOINT": fake.url, "HF_HOME": str(home / "hf"), variable: "1"}
        result = subprocess.run(
            [sys.executable, "-m", "chorus", "pull", REPO], capture_output=True, text=True, env=env, timeout=120
        )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("chorus:")]
    assert len(lines) == 1 and f"{variable}=1" in lines[0] and "unset" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "local_files_only" not in result.stderr
    assert fake.requests == []


@pytest.mark.slow
def test_pull_embedder_saves_a_sentence_model_with_its_pooling_and_prints_the_setting(tmp_path: Path) -> None:
    from test_local_embedder import tiny_sentence_model

    repo = tiny_sentence_model(tmp_path / "repo", pooling="cls")
    files = {str(path.relative_to(repo)): path.read_bytes() for path in repo.rglob("*") if path.is_file()}
    with FakeHub(files) as fake:
        home = tmp_path / "home"
        result = _pull([REPO, "--embedder"], home, fake.url)
    assert result.returncode == 0, result.stderr
    target = home / "models" / f"tiny-llama-{COMMIT[:12]}"
    assert f'embedding_path = "{target}"' in result.stdout and "[brainstorm]" in result.stdout
    assert json.loads((target / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True

    from generation.embeddings import local_embedder

    assert local_embedder(target).pooling == "cls"  # what brainstorm.embedding_path then loads


@pytest.mark.slow
def test_pull_embedder_refuses_a_text_generation_model(tmp_path: Path, hub: FakeHub) -> None:
    result = _pull([REPO, "--embedder"], tmp_path / "home", hub.url)
    assert result.returncode == 2
    assert "--embedder takes a sentence-embedding model" in result.stderr and "Traceback" not in result.stderr


def test_pull_embedder_of_a_gguf_file_is_refused_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chorus.cli import main

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    with FakeHub({}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        assert main(["pull", REPO, "--embedder", "--gguf-file", "model.gguf"]) == 2
        assert fake.requests == []
    assert "--embedder takes a transformers model, not a GGUF file" in capsys.readouterr().err
